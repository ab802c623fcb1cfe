"""The largest frame any link accepts and the most values a node's frame holds, apart from the codec so that `hq server start` can bound
its sockets before it imports msgpack (hqshm/server/endpoints.py).

ZeroMQ enforces it on the sockets (ZMQ_MAXMSGSIZE); the codec checks it again for frames from
other sources.
"""

MAX_FRAME = 256 * 1024 * 1024
# Values (in arrays and maps) one node frame may hold (codec.Registry.decode): a node's
# registration names every task it holds after a lost server, and its reports are split
# below this; about 0.7 s and 256 MB to decode at worst.
MAX_NODE_VALUES = 4_000_000
