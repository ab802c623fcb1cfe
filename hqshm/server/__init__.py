"""The server process: the job book and its events, client requests, `hq task explain`, and the
assembly of the cluster core, its loop and the client socket.

It may import ``hqshm.link`` (it answers clients), ``hqshm.model``, ``hqshm.cluster`` and
``hqshm.errors``; nothing of the node or the CLI.
"""
