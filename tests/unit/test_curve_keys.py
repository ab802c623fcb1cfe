"""CURVE key derivation, socket set-up and the ZAP handler, over real ZeroMQ sockets."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
from hqshm.cluster.digests import hmac_sha256
from hqshm.cluster.security import (
    ZAP_ENDPOINT,
    EndpointKeys,
    ZapResponder,
    derive_keys,
    secure_client_socket,
    secure_server_socket,
)
from zmq.utils import z85

SECRET_A = bytes(range(32))
SECRET_B = bytes(range(100, 132))

# --- an independent X25519 (RFC 7748 §5), to check the derivation without libzmq ------------

_P = 2**255 - 19


def _x25519(scalar: bytes, u: bytes) -> bytes:
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    n = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (n >> t) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
        aa, bb, da, cb = a * a, b * b, d * a, c * b
        e = aa - bb
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + 121665 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def _public_of(secret_z85: bytes) -> bytes:
    return z85.encode(_x25519(z85.decode(secret_z85), (9).to_bytes(32, "little")))


def test_reference_x25519_matches_rfc7748_vector() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    expected = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert _x25519(alice, (9).to_bytes(32, "little")).hex() == expected


def test_derived_public_keys_are_x25519_of_the_secrets() -> None:
    keys = derive_keys(SECRET_A)
    assert keys.server_public == _public_of(keys.server_secret)
    assert keys.peer_public == _public_of(keys.peer_secret)


def test_derivation_is_deterministic_and_separates_roles_and_secrets() -> None:
    a, again, b = derive_keys(SECRET_A), derive_keys(SECRET_A), derive_keys(SECRET_B)
    assert a == again
    assert len({a.server_secret, a.peer_secret, b.server_secret, b.peer_secret}) == 4
    assert all(len(key) == 40 for key in (a.server_secret, a.server_public, a.peer_public))


def test_derivation_is_pinned() -> None:
    """The KDF is part of the wire format: every release must derive the same keys."""
    assert derive_keys(SECRET_A) == EndpointKeys(
        server_secret=b"(wMDBW!@Ldz:n5<u:5yaXWVKFYlzQ(q0N/T!yfb^",
        server_public=b"1}EiP4&af%FQ6ws0!Hn.xr5u]-#ek[Lame%i)}ns",
        peer_secret=b"rq/G2^aVF]dTip(Z8u{kg.#bjIi.lK5?t9gzN1k:",
        peer_public=b"n+Y-6l6PMG%6lW3lPi]Qus.XPiPOH1pz/kfspBek",
    )


@pytest.mark.parametrize("size", [0, 1, 32, 63, 64, 65, 200])
def test_hmac_on_pythons_sha256_is_hmacs(size: int) -> None:
    key = bytes(i * 3 % 256 for i in range(size))
    for message in (b"", b"hqshm curve v1 server", bytes(range(256)) * 3):
        assert hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()


def test_derive_refuses_a_short_secret() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        derive_keys(b"short")


def test_repr_hides_secrets() -> None:
    keys = derive_keys(SECRET_A)
    text = repr(keys)
    assert keys.server_secret.decode() not in text
    assert keys.peer_secret.decode() not in text
    assert keys.peer_public.decode() in text


# --- real sockets ----------------------------------------------------------------------------


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


class Server:
    """A ROUTER that echoes."""

    def __init__(self, ctx: zmq.Context, keys: EndpointKeys | None, domain: str) -> None:
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        secure_server_socket(self.router, keys, domain)
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")


class Pump:
    """The servers' loop, run from the test's thread: ZAP requests and echoes."""

    def __init__(self, zap: ZapResponder | None, *servers: Server) -> None:
        self.zap = zap
        self.servers = servers
        self.zap_answers = 0

    def exchange(self, client: zmq.Socket, timeout: float) -> bytes | None:
        """Send a ping from ``client``; serve until its reply comes or the time is up."""
        client.send(b"ping")
        poller = zmq.Poller()
        if self.zap is not None:
            poller.register(self.zap.socket, zmq.POLLIN)
        for server in self.servers:
            poller.register(server.router, zmq.POLLIN)
        poller.register(client, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(int(left * 1000) + 1))
            if self.zap is not None and self.zap.socket in ready:
                self.zap_answers += self.zap.handle_ready()
            for server in self.servers:
                if server.router in ready:
                    identity, body = server.router.recv_multipart()
                    server.router.send_multipart([identity, b"echo " + body])
            if client in ready:
                return client.recv()
        return None


def _client(ctx: zmq.Context, keys: EndpointKeys | None, port: int) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    secure_client_socket(sock, keys)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def _intruder(server_of: EndpointKeys, peer_of: EndpointKeys) -> EndpointKeys:
    """Knows one endpoint's server key but holds another's peer key pair."""
    return EndpointKeys(
        server_secret=b"",
        server_public=server_of.server_public,
        peer_secret=peer_of.peer_secret,
        peer_public=peer_of.peer_public,
    )


def test_curve_client_with_the_right_keys_is_answered(ctx: zmq.Context) -> None:
    keys = derive_keys(SECRET_A)
    zap = ZapResponder(ctx, {"client": keys})
    server = Server(ctx, keys, "client")
    assert server.router.curve_server == 1
    assert server.router.zap_domain == b"client"
    pump = Pump(zap, server)
    assert pump.exchange(_client(ctx, keys, server.port), 5.0) == b"echo ping"
    assert pump.zap_answers == 1
    zap.close()


def test_keys_of_another_secret_get_nothing_and_the_server_keeps_serving(
    ctx: zmq.Context,
) -> None:
    keys = derive_keys(SECRET_A)
    zap = ZapResponder(ctx, {"client": keys})
    server = Server(ctx, keys, "client")
    pump = Pump(zap, server)
    assert pump.exchange(_client(ctx, derive_keys(SECRET_B), server.port), 1.0) is None
    assert pump.exchange(_client(ctx, keys, server.port), 5.0) == b"echo ping"
    zap.close()


def test_zap_refuses_a_peer_that_knows_only_the_server_key(
    ctx: zmq.Context, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack ZAP exists for: the right server key with a key pair of the peer's choosing."""
    keys, other = derive_keys(SECRET_A), derive_keys(SECRET_B)
    zap = ZapResponder(ctx, {"client": keys})
    server = Server(ctx, keys, "client")
    pump = Pump(zap, server)
    with caplog.at_level(logging.WARNING, logger="hqshm.cluster.security"):
        assert pump.exchange(_client(ctx, _intruder(keys, other), server.port), 1.0) is None
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert refusals, "the refusal was not logged"
    assert "client" in refusals[0] and "127.0.0.1" in refusals[0]
    for pair in (keys, other):
        for key in (pair.peer_public, pair.peer_secret, pair.server_secret):
            assert key.decode() not in caplog.text
    assert pump.exchange(_client(ctx, keys, server.port), 5.0) == b"echo ping"
    zap.close()


def test_without_zap_libzmq_admits_any_peer_key(ctx: zmq.Context) -> None:
    """Control for the test above: it is the ZAP handler, not CURVE, that refuses."""
    keys, other = derive_keys(SECRET_A), derive_keys(SECRET_B)
    server = Server(ctx, keys, "client")
    intruder = _client(ctx, _intruder(keys, other), server.port)
    assert Pump(None, server).exchange(intruder, 5.0) == b"echo ping"


def test_worker_keys_cannot_talk_to_the_client_endpoint(ctx: zmq.Context) -> None:
    client_keys, worker_keys = derive_keys(SECRET_A), derive_keys(SECRET_B)
    zap = ZapResponder(ctx, {"client": client_keys, "worker": worker_keys})
    clients = Server(ctx, client_keys, "client")
    workers = Server(ctx, worker_keys, "worker")
    pump = Pump(zap, clients, workers)
    assert pump.exchange(_client(ctx, worker_keys, clients.port), 1.0) is None
    mixed = _intruder(client_keys, worker_keys)
    assert pump.exchange(_client(ctx, mixed, clients.port), 1.0) is None
    assert pump.exchange(_client(ctx, worker_keys, workers.port), 5.0) == b"echo ping"
    assert pump.exchange(_client(ctx, client_keys, clients.port), 5.0) == b"echo ping"
    zap.close()


def test_null_mechanism_pair_works_without_keys(ctx: zmq.Context) -> None:
    zap = ZapResponder(ctx, {"worker": None})
    server = Server(ctx, None, "worker")
    assert server.router.curve_server == 0
    assert server.router.zap_domain == b"worker"
    pump = Pump(zap, server)
    assert pump.exchange(_client(ctx, None, server.port), 5.0) == b"echo ping"
    assert pump.zap_answers == 1, "the handler was not asked about the NULL domain"
    zap.close()


def test_null_domain_refused_when_the_handler_does_not_know_it(ctx: zmq.Context) -> None:
    zap = ZapResponder(ctx, {"client": derive_keys(SECRET_A)})
    server = Server(ctx, None, "worker")
    assert Pump(zap, server).exchange(_client(ctx, None, server.port), 1.0) is None
    zap.close()


# --- the ZAP handler fed directly ------------------------------------------------------------


@pytest.fixture
def zap(ctx: zmq.Context) -> Iterator[ZapResponder]:
    responder = ZapResponder(ctx, {"client": derive_keys(SECRET_A), "open": None})
    yield responder
    responder.close()


@pytest.fixture
def asker(ctx: zmq.Context, zap: ZapResponder) -> Iterator[zmq.Socket]:
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(ZAP_ENDPOINT)
    yield sock
    sock.close()


def _ask(zap: ZapResponder, asker: zmq.Socket, frames: list[bytes]) -> list[bytes]:
    asker.send_multipart(frames)
    deadline = time.monotonic() + 5.0
    while not asker.poll(10):
        zap.handle_ready()
        assert time.monotonic() < deadline, "no ZAP reply"
    return asker.recv_multipart()


def _request(domain: bytes, mechanism: bytes, *credentials: bytes) -> list[bytes]:
    return [b"1.0", b"7", domain, b"10.0.0.9", b"", mechanism, *credentials]


def test_zap_admits_the_peer_key_of_its_domain(zap: ZapResponder, asker: zmq.Socket) -> None:
    key = z85.decode(derive_keys(SECRET_A).peer_public)
    assert _ask(zap, asker, _request(b"client", b"CURVE", key))[:3] == [b"1.0", b"7", b"200"]


@pytest.mark.parametrize(
    "request_frames",
    [
        _request(b"client", b"CURVE", z85.decode(derive_keys(SECRET_B).peer_public)),
        _request(b"client", b"CURVE", z85.decode(derive_keys(SECRET_A).server_public)),
        _request(b"client", b"CURVE", b"short"),
        _request(b"client", b"CURVE"),
        _request(b"client", b"NULL"),
        _request(b"client", b"PLAIN", b"user", b"password"),
        _request(b"nowhere", b"NULL"),
        _request(b"\xff\n\x00", b"NULL"),
    ],
    ids=["other-key", "server-key", "short-key", "no-key", "null", "plain", "unknown", "binary"],
)
def test_zap_refuses(zap: ZapResponder, asker: zmq.Socket, request_frames: list[bytes]) -> None:
    assert _ask(zap, asker, request_frames)[:3] == [b"1.0", b"7", b"400"]


def test_zap_admits_any_peer_of_an_open_domain(zap: ZapResponder, asker: zmq.Socket) -> None:
    assert _ask(zap, asker, _request(b"open", b"NULL"))[2] == b"200"


@pytest.mark.parametrize(
    "request_frames",
    [[b"garbage"], [b"1.0", b"7"], [b"2.0", b"7", b"client", b"a", b"", b"NULL"]],
    ids=["one-frame", "two-frames", "bad-version"],
)
def test_zap_answers_malformed_requests_with_500_and_keeps_going(
    zap: ZapResponder, asker: zmq.Socket, request_frames: list[bytes]
) -> None:
    reply = _ask(zap, asker, request_frames)
    assert len(reply) == 6 and reply[2] == b"500"
    assert _ask(zap, asker, _request(b"open", b"NULL"))[2] == b"200"


def test_handle_ready_does_not_block_when_idle(zap: ZapResponder) -> None:
    answered: list[int] = []
    caller = threading.Thread(target=lambda: answered.append(zap.handle_ready()), daemon=True)
    caller.start()
    caller.join(timeout=10)  # a blocking receive would wait for ever, not 10 s
    assert answered == [0]


def test_refusals_are_logged_on_powers_of_two(
    zap: ZapResponder, asker: zmq.Socket, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hqshm.cluster.security"):
        for _ in range(9):
            _ask(zap, asker, _request(b"client", b"NULL"))
    counts = [r.args[-1] for r in caplog.records if r.levelno == logging.WARNING]
    assert counts == [1, 2, 4, 8]
    assert "10.0.0.9" in caplog.records[0].getMessage()


def test_a_second_handler_in_one_context_is_refused(ctx: zmq.Context, zap: ZapResponder) -> None:
    with pytest.raises(zmq.ZMQError):
        ZapResponder(ctx, {})
