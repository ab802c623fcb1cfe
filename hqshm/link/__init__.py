"""The client <-> server link: its requests and responses, the client's connection, access files
and the server directory.

Used by the CLI (and the Python API) to reach a server and by the server to answer; never by a
node, which its caller hands the endpoint to. It may import ``hqshm.model``, ``hqshm.cluster``,
``hqshm.errors`` and the package's version.
"""
