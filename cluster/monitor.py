"""ZeroMQ socket-monitor events, decoded without ``zmq.utils.monitor``.

That module imports asyncio (20 ms), which every `hq` command would pay for two integers.
A monitor message is two frames: 6 bytes (event id u16, value u32, native order) and the
endpoint. The event ids are libzmq's (zmq.h), here so that a client on cluster/libzmq.py needs
no pyzmq to name them.
"""

from __future__ import annotations

import struct
from typing import Final

EVENT_CONNECT_RETRIED: Final = 0x0004
EVENT_DISCONNECTED: Final = 0x0200
EVENT_HANDSHAKE_FAILED_NO_DETAIL: Final = 0x0800
EVENT_HANDSHAKE_SUCCEEDED: Final = 0x1000
EVENT_HANDSHAKE_FAILED_PROTOCOL: Final = 0x2000
EVENT_HANDSHAKE_FAILED_AUTH: Final = 0x4000

_HEADER = struct.Struct("=HI")


def monitor_event(frames: list[bytes]) -> tuple[int, int]:
    """(event id, value) of one monitor message."""
    event, value = _HEADER.unpack_from(frames[0])
    return event, value
