"""A client's connection to the server: find the access file, connect with CURVE, ask, answer.

The ZeroMQ socket monitor tells us what TCP cannot: a refused connection (server gone: fail at
once rather than retry forever), a refused handshake (wrong keys), and a dropped connection while
we wait for a long answer such as `hq job wait`. The socket is libzmq's through ctypes
(cluster/libzmq.py), so that a command does not pay pyzmq's import; pyzmq where that fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from hqshm import __version__
from hqshm.cluster import monitor
from hqshm.cluster.codec import MAX_FRAME
from hqshm.cluster.curvekeys import derive_keys
from hqshm.cluster.dealer import open_dealer
from hqshm.cluster.errors import PeerError, VersionMismatch
from hqshm.cluster.monitor import monitor_event
from hqshm.errors import UserError
from hqshm.link import access, serverdir
from hqshm.link.requests import CLIENT_LINK
from hqshm.link.responses import ErrorResponse, Notification

CONNECT_TIMEOUT = 10.0
_REFUSED = (monitor.EVENT_HANDSHAKE_FAILED_AUTH, monitor.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            monitor.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_GONE = (monitor.EVENT_CONNECT_RETRIED, monitor.EVENT_DISCONNECTED)
_EVENTS = monitor.EVENT_HANDSHAKE_SUCCEEDED | sum(_REFUSED) | sum(_GONE)

R = TypeVar("R")


class ServerError(UserError):
    """The server answered with an error: its text, as is."""


class AuthenticationRefused(UserError):
    template = (
        "The HQ server at {host}:{port} refused this client's credentials.\n"
        "Check that {path} belongs to the running server (it may have been restarted)."
    )


class ConnectionLost(UserError):
    template = "Lost the connection to the HQ server at {host}:{port}."


class NoClientAccess(UserError):
    template = "The access file {path} holds no client credentials (it is a worker-only file)."


class ClientConnection:
    def __init__(self, server_dir: serverdir.StrPath, *, env: Mapping[str, str] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 starting_wait: float = serverdir.STARTING_WAIT) -> None:
        """Connect; a server that is still starting there (``serverdir.starting_pid``) gets up
        to ``starting_wait`` seconds to publish its access file and listen, so a client run
        right after `hq server start` does not fail. Without one, failures come at once."""
        env = os.environ if env is None else env
        default = serverdir.default_server_dir(env)
        deadline = time.monotonic() + starting_wait
        while True:
            try:
                self._connect(server_dir, default, connect_timeout)
                return
            except (serverdir.NoRunningInstance, serverdir.ServerUnreachable):
                # Unreachable: the access file may be a dead predecessor's, not yet replaced.
                if not serverdir.wait_while_starting(server_dir, deadline):
                    raise

    def _connect(self, server_dir: serverdir.StrPath, default: str,
                 connect_timeout: float) -> None:
        self.access_path = serverdir.find_access_file(server_dir, default_dir=default)
        record = access.read_access_file(self.access_path)
        access.check_version(record, __version__)
        if record.client is None:
            raise NoClientAccess(path=self.access_path)
        self.record = record
        self.host = record.client.host
        self.port = record.client.port
        secret = access.secret_bytes(record.client)
        self.socket = open_dealer(MAX_FRAME, derive_keys(secret) if secret else None, _EVENTS)
        try:
            self.socket.connect(f"tcp://{self.host}:{self.port}")
        except BaseException:
            self.socket.close()
            raise
        self._await_handshake(connect_timeout)

    def _unreachable(self) -> UserError:
        return serverdir.ServerUnreachable(host=self.host, port=self.port)

    def _await_handshake(self, timeout: float) -> None:
        if not self.socket.poll(int(timeout * 1000), messages=False)[1]:
            self.close()
            raise self._unreachable()
        while True:
            event = monitor_event(self.socket.recv_event())[0]
            if event == monitor.EVENT_HANDSHAKE_SUCCEEDED:
                return
            # A failed handshake means that TCP got through: someone listens but does not
            # take our keys. A CURVE server that cannot open our HELLO (other secret, hence
            # another server key) drops us without a word, which libzmq reports as NO_DETAIL.
            if event in _REFUSED:
                self.close()
                raise AuthenticationRefused(host=self.host, port=self.port,
                                            path=self.access_path)
            if event in _GONE:
                self.close()
                raise self._unreachable()
            if not self.socket.poll(int(timeout * 1000), messages=False)[1]:
                self.close()
                raise self._unreachable()

    def request(self, message: object, expect: type[R], *, timeout: float | None = None,
                on_notification: Callable[[Notification], None] | None = None) -> R:
        """Send one request and return its response, which must be an ``expect``.

        A server-side error raises ServerError, an answer of another type UserError.
        Notifications that arrive before the response go to ``on_notification``.
        """
        self.send(message)
        while True:
            response = self.receive(timeout)
            if response is None:
                raise UserError(f"The HQ server at {self.host}:{self.port} did not answer "
                                f"within {timeout:g} s.")
            if isinstance(response, Notification):
                if on_notification is not None:
                    on_notification(response)
                continue
            if not isinstance(response, expect):
                raise UserError(f"Unexpected answer from the server to {type(message).__name__}: "
                                f"{type(response).__name__}, not {expect.__name__}")
            return response

    def send(self, message: object) -> None:
        self.socket.send(CLIENT_LINK.encode(message))

    def receive(self, timeout: float | None) -> object | None:
        """The next message from the server, or None after ``timeout`` seconds."""
        remaining_ms = None if timeout is None else int(timeout * 1000)
        while True:
            frame_ready, event_ready = self.socket.poll(remaining_ms)
            if not (frame_ready or event_ready):
                return None
            if frame_ready:
                frame = self.socket.recv()
                try:
                    response = CLIENT_LINK.decode(frame)
                except VersionMismatch as exc:
                    raise UserError(f"The server speaks client protocol {exc.theirs}, this "
                                    f"client speaks {exc.ours}") from None
                except PeerError as exc:
                    raise UserError(f"Invalid answer from the server: {exc}") from None
                if isinstance(response, ErrorResponse):
                    raise ServerError(response.message)
                return response
            if event_ready:
                event = monitor_event(self.socket.recv_event())[0]
                if event in _GONE:
                    raise ConnectionLost(host=self.host, port=self.port)

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
