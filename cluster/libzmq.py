"""A monitored CURVE DEALER socket and the CURVE key helpers, on libzmq's C API via ctypes.

Why: every `hq` command is one request, and importing pyzmq costs 45-60 ms on a slow machine
(its Cython backend, its constants, pickle, platform, random), three times the interpreter's own
start and more than the 40 ms a command may take in all (issue 9, item 2). ``ctypes`` costs
about 4 ms and needs no build step. The server and the node keep pyzmq.

The library is the one pyzmq's wheel ships (``pyzmq.libs/libzmq-*.so*`` next to the ``zmq``
package, found without importing it), else a system ``libzmq.so.5``. ``load()`` returns None
when there is none, or when ``HQSHM_PYZMQ=1`` asks for pyzmq, and callers fall back to pyzmq.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .curvekeys import EndpointKeys

FORCE_PYZMQ: Final = "HQSHM_PYZMQ"
"""Set to 1 to use pyzmq even where libzmq can be loaded (tests, and a way out)."""

# libzmq's ABI (zmq.h); stable across 4.x.
_PAIR: Final = 0
_DEALER: Final = 5
_LINGER: Final = 17
_MAXMSGSIZE: Final = 22
_RCVMORE: Final = 13
_CURVE_PUBLICKEY: Final = 48
_CURVE_SECRETKEY: Final = 49
_CURVE_SERVERKEY: Final = 50
_POLLIN: Final = 1
_DONTWAIT: Final = 1
_EINTR: Final = 4
_MSG_SIZE: Final = 64  # zmq_msg_t: 64 opaque bytes, aligned
_Z85_KEY: Final = 40

_MONITOR_IDS = itertools.count()


class LibzmqError(OSError):
    """A libzmq call failed: errno and zmq_strerror's text, as pyzmq's ZMQError has them."""


class _PollItem(ctypes.Structure):
    _fields_ = [("socket", ctypes.c_void_p), ("fd", ctypes.c_int),
                ("events", ctypes.c_short), ("revents", ctypes.c_short)]


class _Msg(ctypes.Structure):
    _fields_ = [("_", ctypes.c_uint64 * (_MSG_SIZE // 8))]  # 64 bytes, 8-aligned


class Libzmq:
    """The loaded library with the signatures this module calls, and one context."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, c_int, size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        msg = ctypes.POINTER(_Msg)
        for name, restype, argtypes in (
            ("zmq_ctx_new", vp, ()),
            ("zmq_socket", vp, (vp, c_int)),
            ("zmq_close", c_int, (vp,)),
            ("zmq_setsockopt", c_int, (vp, c_int, vp, size_t)),
            ("zmq_getsockopt", c_int, (vp, c_int, vp, ctypes.POINTER(size_t))),
            ("zmq_connect", c_int, (vp, ctypes.c_char_p)),
            ("zmq_socket_monitor", c_int, (vp, ctypes.c_char_p, c_int)),
            ("zmq_send", c_int, (vp, ctypes.c_char_p, size_t, c_int)),
            ("zmq_msg_init", c_int, (msg,)),
            ("zmq_msg_recv", c_int, (msg, vp, c_int)),
            ("zmq_msg_data", vp, (msg,)),
            ("zmq_msg_size", size_t, (msg,)),
            ("zmq_msg_close", c_int, (msg,)),
            ("zmq_poll", c_int, (ctypes.POINTER(_PollItem), c_int, ctypes.c_long)),
            ("zmq_errno", c_int, ()),
            ("zmq_strerror", ctypes.c_char_p, (c_int,)),
            ("zmq_has", c_int, (ctypes.c_char_p,)),
            ("zmq_version", None, (ctypes.POINTER(c_int),) * 3),
            ("zmq_curve_public", c_int, (ctypes.c_char_p, ctypes.c_char_p)),
            ("zmq_z85_encode", ctypes.c_char_p, (ctypes.c_char_p, ctypes.c_char_p, size_t)),
            ("zmq_z85_decode", vp, (ctypes.c_char_p, ctypes.c_char_p)),
        ):
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
        self.lib = lib
        self._context: int | None = None

    def version(self) -> tuple[int, int, int]:
        parts = [ctypes.c_int() for _ in range(3)]
        self.lib.zmq_version(*(ctypes.byref(part) for part in parts))
        major, minor, patch = (part.value for part in parts)
        return major, minor, patch

    def context(self) -> int:
        """One context for the process, never terminated (as pyzmq's ``Context.instance``):
        sockets are closed with linger 0, and the I/O thread ends with the process."""
        if self._context is None:
            self._context = self.check(self.lib.zmq_ctx_new())
        return self._context

    def check(self, result: int | None) -> int:
        """``result``, unless it says that the call failed (-1 or NULL)."""
        if result is None or result == -1:
            raise self.error()
        return result

    def error(self) -> LibzmqError:
        number = self.lib.zmq_errno()
        return LibzmqError(number, self.lib.zmq_strerror(number).decode(errors="replace"))

    def curve_public(self, secret: bytes) -> bytes:
        """The z85 public key of a z85 secret key (X25519 of the base point)."""
        public = ctypes.create_string_buffer(_Z85_KEY + 1)
        self.check(self.lib.zmq_curve_public(public, secret))
        return public.value

    def z85_encode(self, data: bytes) -> bytes:
        """Z85 text of ``data`` (its length a multiple of 4)."""
        if len(data) % 4:
            raise ValueError("z85 encodes multiples of 4 bytes")
        text = ctypes.create_string_buffer(len(data) * 5 // 4 + 1)
        if self.lib.zmq_z85_encode(text, data, len(data)) is None:
            raise ValueError("z85 encoding failed")
        return text.value

    def z85_decode(self, text: bytes) -> bytes:
        """The bytes of Z85 ``text`` (its length a multiple of 5)."""
        if len(text) % 5:
            raise ValueError("z85 decodes multiples of 5 characters")
        data = ctypes.create_string_buffer(len(text) * 4 // 5)
        if self.lib.zmq_z85_decode(data, text) is None:
            raise ValueError("invalid z85 text")
        return data.raw


def _candidates() -> Iterator[str]:
    """Where libzmq may be: pyzmq's bundled copy first (the one its server side uses), then
    the system's. Finding ``zmq`` imports nothing: importlib only locates its directory."""
    from importlib.machinery import PathFinder

    spec = PathFinder.find_spec("zmq", sys.path)
    if spec is not None and spec.submodule_search_locations:
        package = next(iter(spec.submodule_search_locations))
        site = os.path.dirname(package)
        for folder in (os.path.join(site, "pyzmq.libs"), os.path.join(package, ".libs"), package):
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            yield from (os.path.join(folder, name) for name in names
                        if name.startswith("libzmq") and ".so" in name)
    yield "libzmq.so.5"


_loaded: list[Libzmq | None] = []


def load() -> Libzmq | None:
    """The process's libzmq (loaded once), or None: none found, too old for the handshake
    events (4.3), without CURVE, or ``HQSHM_PYZMQ`` set."""
    if os.environ.get(FORCE_PYZMQ, "") not in ("", "0"):
        return None
    if not _loaded:
        _loaded.append(_first_usable())
    return _loaded[0]


def _first_usable() -> Libzmq | None:
    for path in _candidates():
        try:
            lib = Libzmq(ctypes.CDLL(path))
        except (OSError, AttributeError):  # not loadable, or without a function we call
            continue
        if lib.version() >= (4, 3, 0) and lib.lib.zmq_has(b"curve"):
            return lib
    return None


class Dealer:
    """A DEALER socket of one connection, with a monitor socket for its connection events.

    Frames are whole (any size up to ``max_size``); a received frame over ``max_size`` makes
    libzmq drop the connection, which the monitor reports as a disconnection.
    """

    def __init__(self, lib: Libzmq, max_size: int, keys: EndpointKeys | None,
                 events: int) -> None:
        """``keys``: the endpoint's, of which a client holds the peer pair; None for the NULL
        mechanism. ``events``: the monitor's event mask."""
        self._lib = lib
        self._monitor: int | None = None
        self._socket: int | None = None
        zmq = lib.lib
        context = lib.context()
        self._socket = lib.check(zmq.zmq_socket(context, _DEALER))
        try:
            self._set_int(_LINGER, ctypes.c_int(0))
            self._set_int(_MAXMSGSIZE, ctypes.c_int64(max_size))
            if keys is not None:
                for option, key in ((_CURVE_SERVERKEY, keys.server_public),
                                    (_CURVE_PUBLICKEY, keys.peer_public),
                                    (_CURVE_SECRETKEY, keys.peer_secret)):
                    lib.check(zmq.zmq_setsockopt(self._socket, option, key, len(key)))
            address = f"inproc://hqshm-monitor.{os.getpid()}.{next(_MONITOR_IDS)}".encode()
            lib.check(zmq.zmq_socket_monitor(self._socket, address, events))
            self._monitor = lib.check(zmq.zmq_socket(context, _PAIR))
            lib.check(zmq.zmq_connect(self._monitor, address))
        except BaseException:
            self.close()
            raise
        self._items = (_PollItem * 2)(_PollItem(self._socket, 0, _POLLIN, 0),
                                      _PollItem(self._monitor, 0, _POLLIN, 0))

    def _set_int(self, option: int, value: ctypes.c_int | ctypes.c_int64) -> None:
        self._lib.check(self._lib.lib.zmq_setsockopt(self._socket, option, ctypes.byref(value),
                                                     ctypes.sizeof(value)))

    def connect(self, endpoint: str) -> None:
        self._lib.check(self._lib.lib.zmq_connect(self._socket, endpoint.encode()))

    def send(self, frame: bytes) -> None:
        """Queue one frame (libzmq copies it); blocks only while the queue is full."""
        while self._lib.lib.zmq_send(self._socket, frame, len(frame), 0) == -1:
            self._retry_if_interrupted()

    def poll(self, timeout_ms: int | None, *, messages: bool = True) -> tuple[bool, bool]:
        """Wait until a frame or a monitor event is ready, or ``timeout_ms`` (None: forever)
        passes; returns (a frame is ready, an event is ready). ``messages=False`` waits for
        events only. A signal's handler runs (Ctrl-C raises) and the wait goes on."""
        items = self._items if messages else ctypes.pointer(self._items[1])
        count = 2 if messages else 1
        timeout = -1 if timeout_ms is None else max(0, timeout_ms)
        deadline = None if timeout_ms is None else _now_ms() + timeout
        while True:
            ready = self._lib.lib.zmq_poll(items, count, timeout)
            if ready >= 0:
                break
            self._retry_if_interrupted()
            if deadline is not None:
                timeout = max(0, deadline - _now_ms())
        if ready == 0:
            return False, False
        frame = messages and bool(self._items[0].revents & _POLLIN)
        return frame, bool(self._items[1].revents & _POLLIN)

    def recv(self) -> bytes:
        """The next frame (after ``poll`` found one)."""
        return self._recv_part(self._socket)[0]

    def recv_event(self) -> list[bytes]:
        """The next monitor message, both frames (see cluster/monitor.py)."""
        frames = []
        more = True
        while more:
            frame, more = self._recv_part(self._monitor)
            frames.append(frame)
        return frames

    def _recv_part(self, socket: int | None) -> tuple[bytes, bool]:
        """One message part, and whether more parts of the message follow."""
        zmq = self._lib.lib
        msg = _Msg()
        zmq.zmq_msg_init(ctypes.byref(msg))
        try:
            while zmq.zmq_msg_recv(ctypes.byref(msg), socket, 0) == -1:
                self._retry_if_interrupted()
            data = zmq.zmq_msg_data(ctypes.byref(msg))
            frame = ctypes.string_at(data, zmq.zmq_msg_size(ctypes.byref(msg))) if data else b""
        finally:
            zmq.zmq_msg_close(ctypes.byref(msg))
        more = ctypes.c_int(0)
        size = ctypes.c_size_t(ctypes.sizeof(more))
        self._lib.check(zmq.zmq_getsockopt(socket, _RCVMORE, ctypes.byref(more),
                                           ctypes.byref(size)))
        return frame, bool(more.value)

    def _retry_if_interrupted(self) -> None:
        """Raise the last error unless it is EINTR; Python runs the signal's handler (which
        may raise KeyboardInterrupt) as this returns."""
        if self._lib.lib.zmq_errno() != _EINTR:
            raise self._lib.error()

    def __del__(self) -> None:
        """A dealer dropped without ``close`` is closed, as pyzmq closes its sockets."""
        self.close()

    def close(self) -> None:
        zmq = self._lib.lib
        if self._socket is not None:
            zmq.zmq_socket_monitor(self._socket, None, 0)
        if self._monitor is not None:
            zmq.zmq_close(self._monitor)
            self._monitor = None
        if self._socket is not None:
            zmq.zmq_close(self._socket)
            self._socket = None


def _now_ms() -> int:
    return int(time.monotonic() * 1000)
