"""The node runtime (`hq-node`): resources and their detection, the allocator, shared-memory rings,
executors and the launcher, the node's pure core and the loop that drives it.

It may import ``hqshm.model``, ``hqshm.cluster``, ``hqshm.errors``, the compiled
``hqshm._hqaffinity`` and the package's version; nothing of the client link, the server or the
CLI.
"""
