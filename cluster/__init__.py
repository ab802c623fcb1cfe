"""The cluster layer: wire protocol and codec, security, the server's task core and scheduler.

Knows tasks, resources and workers; knows nothing of jobs, the CLI or output files. Installed as
``hqshm.cluster`` but it never imports the rest of ``hqshm``, and its modules import each other
relatively, so the product could swap or rename it (the split of HQ's ``tako`` and
``hyperqueue``). It may import the standard library, pyzmq, msgpack and numpy.
"""
