"""ZeroMQ socket-monitor events, decoded without ``zmq.utils.monitor``.

That module imports asyncio (20 ms), which every `hq` command would pay for two integers.
A monitor message is two frames: 6 bytes (event id u16, value u32, native order) and the
endpoint.
"""

from __future__ import annotations

import struct

_HEADER = struct.Struct("=HI")


def monitor_event(frames: list[bytes]) -> tuple[int, int]:
    """(event id, value) of one monitor message."""
    event, value = _HEADER.unpack_from(frames[0])
    return event, value
