"""A client's monitored DEALER socket: on libzmq directly (cluster/libzmq.py), else on pyzmq.

Both give the same socket on the same wire: LINGER 0, a bound on received frames, CURVE client
keys, and a monitor socket for connection events. pyzmq is the fallback where no libzmq can be
loaded through ctypes (or ``HQSHM_PYZMQ=1`` asks for it); it costs 45-60 ms more to import.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol

from . import libzmq

if TYPE_CHECKING:
    import zmq

    from .curvekeys import EndpointKeys


class MonitoredDealer(Protocol):
    def connect(self, endpoint: str) -> None: ...
    def send(self, frame: bytes) -> None: ...
    def poll(self, timeout_ms: int | None, *, messages: bool = True) -> tuple[bool, bool]: ...
    def recv(self) -> bytes: ...
    def recv_event(self) -> list[bytes]: ...
    def close(self) -> None: ...


def open_dealer(max_size: int, keys: EndpointKeys | None, events: int) -> MonitoredDealer:
    """A DEALER socket that drops frames over ``max_size``, a CURVE client of the endpoint
    with ``keys`` unless None, monitored for ``events``."""
    lib = libzmq.load()
    if lib is not None:
        return libzmq.Dealer(lib, max_size, keys, events)
    return PyzmqDealer(max_size, keys, events)


class PyzmqDealer:
    """``libzmq.Dealer`` on pyzmq's sockets."""

    def __init__(self, max_size: int, keys: EndpointKeys | None, events: int) -> None:
        import zmq

        from .security import secure_client_socket

        self._zmq = zmq
        self._socket: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
        self._socket.linger = 0
        self._socket.maxmsgsize = max_size
        secure_client_socket(self._socket, keys)
        self._monitor: zmq.Socket = self._socket.get_monitor_socket(events)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def connect(self, endpoint: str) -> None:
        self._socket.connect(endpoint)

    def send(self, frame: bytes) -> None:
        self._socket.send(frame)

    def poll(self, timeout_ms: int | None, *, messages: bool = True) -> tuple[bool, bool]:
        if not messages:
            return False, bool(self._monitor.poll(timeout_ms))
        ready = dict(self._poller.poll(timeout_ms))
        return self._socket in ready, self._monitor in ready

    def recv(self) -> bytes:
        return self._socket.recv()

    def recv_event(self) -> list[bytes]:
        return self._monitor.recv_multipart()

    def close(self) -> None:
        with contextlib.suppress(self._zmq.ZMQError):
            self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)
