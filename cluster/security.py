"""CURVE sockets of the two server endpoints, and the ZAP handler that admits only their peers.

The access file keeps HQ's schema: per endpoint one ``secret_key`` of 32 random bytes. Both
sides derive that endpoint's two CURVE key pairs from it (server and peer), so the file stays
HQ-compatible while the wire is ZeroMQ CURVE. The derivation is in curvekeys.py (clients use it
without pyzmq), re-exported here.

Why a peer without the access file sees nothing but an open port:

* The server's public key is derived from the secret and never sent. A CURVE client must box
  its HELLO to that key; a client that does not know it sends a HELLO the server cannot open,
  and libzmq drops the connection without answering. What such a peer learns is that the port
  is open and greets with ZMTP 3 and the CURVE mechanism.
* A libzmq CURVE server with no ZAP handler accepts *any* client key pair, so knowing the
  server key would be enough. ``ZapResponder`` closes that hole: per domain (one per endpoint)
  it admits exactly the one peer public key derived from the same secret, so a client of the
  worker endpoint cannot talk to the client endpoint and vice versa.
* After the handshake every message is encrypted and authenticated by CURVE.

An endpoint configured without a key (HQ's ``--disable-...-authentication-and-encryption``)
uses the NULL mechanism and its domain admits everyone; the socket still names its domain so
that the same handler is asked and the choice stays explicit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from .curvekeys import EndpointKeys, derive_keys, z85_decode
from .digests import same_secret
from .firstuse import zmq  # a node imports it once its executors are forked

logger = logging.getLogger(__name__)

ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"
"""Where libzmq looks for the ZAP handler of a context (RFC 27)."""

_CURVE_KEY_SIZE: Final = 32
_ZAP_VERSION: Final = b"1.0"
_ZAP_REQUEST_FRAMES: Final = 6  # version, request id, domain, address, identity, mechanism
_MAX_REFUSAL_SOURCES: Final = 1024

__all__ = ["ZAP_ENDPOINT", "EndpointKeys", "ZapResponder", "derive_keys", "listen",
           "secure_client_socket", "secure_server_socket"]


def secure_server_socket(sock: zmq.Socket, keys: EndpointKeys | None, domain: str) -> None:
    """Make ``sock`` (not yet bound) a CURVE server of ``domain``, or a NULL one without keys.

    The ZAP domain is set in both cases: libzmq asks the ZAP handler about NULL connections
    only when the socket has a domain, and the handler is where the policy lives.
    """
    if keys is not None:
        sock.curve_server = True
        sock.curve_secretkey = keys.server_secret
    sock.zap_domain = domain.encode()


def listen(context: zmq.Context, host: str, port: int, keys: EndpointKeys | None, domain: str,
           max_size: int, use_fd: int = -1) -> tuple[zmq.Socket, int]:
    """A ROUTER socket of ``domain`` bound at ``host:port`` (0: any free port), or serving the
    listening socket ``use_fd`` bound already (the address is then ignored; the socket owns
    the descriptor), which drops any frame over ``max_size`` before it is read; returns it
    and its port. Bind the context's ZapResponder first."""
    sock = context.socket(zmq.ROUTER)
    if use_fd >= 0:
        sock.setsockopt(zmq.USE_FD, use_fd)
    sock.linger = 0
    sock.maxmsgsize = max_size
    sock.router_mandatory = False
    secure_server_socket(sock, keys, domain)
    try:
        sock.bind(f"tcp://{host}:{port}" if port else f"tcp://{host}:*")
    except zmq.ZMQError:
        sock.close()
        raise
    return sock, int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def secure_client_socket(sock: zmq.Socket, keys: EndpointKeys | None) -> None:
    """Make ``sock`` (not yet connected) a CURVE client holding the endpoint's peer keys."""
    if keys is None:
        return
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.peer_public
    sock.curve_secretkey = keys.peer_secret


class ZapResponder:
    """The ZAP handler (RFC 27) of one context: admits one peer key per domain.

    Bind it before any server socket of the context binds: a CURVE connection that arrives
    while no handler is bound is accepted whatever its key. The owner polls ``socket`` in its
    own loop and calls ``handle_ready()``, which never blocks and never raises on what a peer
    (or libzmq) sent.
    """

    def __init__(self, context: zmq.Context, domains: Mapping[str, EndpointKeys | None]) -> None:
        # None admits every peer of the domain (an endpoint configured without a key).
        self._admitted: dict[bytes, bytes | None] = {
            name.encode(): None if keys is None else z85_decode(keys.peer_public)
            for name, keys in domains.items()
        }
        self._refusals: dict[tuple[bytes, bytes], int] = {}
        self.socket: zmq.Socket = context.socket(zmq.REP)
        self.socket.linger = 0
        try:
            self.socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            self.socket.close()
            raise

    def handle_ready(self) -> int:
        """Answer every pending request; return how many were answered."""
        answered = 0
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return answered
            try:
                reply = self._answer(frames)
            except Exception:  # a bug here must not stop the owner's loop
                logger.warning("ZAP handler failed on a request", exc_info=True)
                reply = _reply(frames[1] if len(frames) > 1 else b"", b"500", b"internal error")
            try:
                # REP routes the reply to the asking pipe; it drops rather than blocks.
                self.socket.send_multipart(reply, zmq.NOBLOCK)
            except zmq.ZMQError as error:
                logger.warning("Cannot send ZAP reply: %s", error)
            answered += 1

    def close(self) -> None:
        self.socket.close(linger=0)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < _ZAP_REQUEST_FRAMES or frames[0] != _ZAP_VERSION:
            logger.warning("Malformed ZAP request (%d frames), refused", len(frames))
            return _reply(frames[1] if len(frames) > 1 else b"", b"500", b"malformed request")
        request_id, domain, address, _identity, mechanism = frames[1:6]
        credentials = frames[6:]
        if domain not in self._admitted:
            self._log_refusal(domain, address, "unknown domain")
            return _reply(request_id, b"400", b"unknown domain")
        expected = self._admitted[domain]
        if expected is None:
            return _reply(request_id, b"200", b"OK")
        if (
            mechanism == b"CURVE"
            and len(credentials) == 1
            and len(credentials[0]) == _CURVE_KEY_SIZE
            and same_secret(credentials[0], expected)
        ):
            logger.debug("Admitted %s peer from %s", _text(domain), _text(address))
            return _reply(request_id, b"200", b"OK")
        self._log_refusal(domain, address, "key not admitted")
        return _reply(request_id, b"400", b"not admitted")

    def _log_refusal(self, domain: bytes, address: bytes, reason: str) -> None:
        # A refused libzmq client reconnects every few hundred ms: warn on the 1st, 2nd, 4th,
        # 8th... refusal from one address so that a stray peer cannot flood the log.
        source = (domain, address)
        if source not in self._refusals and len(self._refusals) >= _MAX_REFUSAL_SOURCES:
            self._refusals.clear()
        count = self._refusals.get(source, 0) + 1
        self._refusals[source] = count
        if count & (count - 1) == 0:
            logger.warning(
                "Refused connection to %s endpoint from %s: %s (%d refusals from this address)",
                _text(domain),
                _text(address),
                reason,
                count,
            )
        else:
            logger.debug("Refused connection to %s from %s", _text(domain), _text(address))


def _reply(request_id: bytes, status: bytes, text: bytes) -> list[bytes]:
    return [_ZAP_VERSION, request_id, status, text, b"", b""]


def _text(raw: bytes) -> str:
    """Peer-supplied bytes made safe for a log line."""
    return raw[:100].decode("utf-8", "replace").encode("unicode_escape").decode("ascii")
