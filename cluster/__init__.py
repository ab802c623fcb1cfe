"""The cluster layer: wire protocol, security, transport and the task-level core.

Knows tasks, resources and workers; knows nothing of jobs, the CLI or output files.
It never imports ``hqshm``.
"""
