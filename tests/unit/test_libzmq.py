"""The client's DEALER socket on libzmq through ctypes (cluster/libzmq.py) and its pyzmq
fallback (cluster/dealer.py), each against a real pyzmq ROUTER with CURVE and the ZAP handler."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq
from hqshm.cluster import libzmq, monitor
from hqshm.cluster.curvekeys import EndpointKeys, derive_keys
from hqshm.cluster.dealer import MonitoredDealer, PyzmqDealer, open_dealer
from hqshm.cluster.security import ZapResponder, secure_server_socket
from zmq.utils import z85

SECRET = bytes(range(32))
OTHER = bytes(range(100, 132))
EVENTS = (monitor.EVENT_HANDSHAKE_SUCCEEDED | monitor.EVENT_HANDSHAKE_FAILED_AUTH
          | monitor.EVENT_HANDSHAKE_FAILED_PROTOCOL | monitor.EVENT_HANDSHAKE_FAILED_NO_DETAIL
          | monitor.EVENT_CONNECT_RETRIED | monitor.EVENT_DISCONNECTED)
REFUSED = (monitor.EVENT_HANDSHAKE_FAILED_AUTH, monitor.EVENT_HANDSHAKE_FAILED_PROTOCOL,
           monitor.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
LIB = libzmq.load()

Opener = Callable[[int, EndpointKeys | None], MonitoredDealer]


@pytest.fixture(params=["libzmq", "pyzmq"])
def open_client(request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens a client DEALER of either implementation; closes them all after the test."""
    opened: list[MonitoredDealer] = []

    def opener(max_size: int, keys: EndpointKeys | None) -> MonitoredDealer:
        if request.param == "libzmq":
            if LIB is None:
                pytest.skip("no libzmq loadable through ctypes here")
            dealer: MonitoredDealer = libzmq.Dealer(LIB, max_size, keys, EVENTS)
        else:
            dealer = PyzmqDealer(max_size, keys, EVENTS)
        opened.append(dealer)
        return dealer

    yield opener
    for dealer in opened:
        dealer.close()


class EchoServer:
    """A CURVE ROUTER of the client domain with its ZAP handler, echoing every frame from a
    thread of its own (its sockets live and die there)."""

    def __init__(self, keys: EndpointKeys) -> None:
        self.context = zmq.Context()
        self.stop = threading.Event()
        self.bound = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._serve, args=(keys,), daemon=True)
        self.thread.start()
        assert self.bound.wait(10)

    def _serve(self, keys: EndpointKeys) -> None:
        zap = ZapResponder(self.context, {"client": keys})
        router = self.context.socket(zmq.ROUTER)
        router.linger = 0
        secure_server_socket(router, keys, "client")
        self.port = router.bind_to_random_port("tcp://127.0.0.1")
        self.bound.set()
        poller = zmq.Poller()
        poller.register(zap.socket, zmq.POLLIN)
        poller.register(router, zmq.POLLIN)
        while not self.stop.is_set():
            ready = dict(poller.poll(20))
            if zap.socket in ready:
                zap.handle_ready()
            if router in ready:
                router.send_multipart(router.recv_multipart())
        router.close(linger=0)
        zap.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.context.term()


@pytest.fixture
def server() -> Iterator[EchoServer]:
    echo = EchoServer(derive_keys(SECRET))
    yield echo
    echo.close()


def _next_event(dealer: MonitoredDealer, timeout_ms: int = 5000) -> int:
    assert dealer.poll(timeout_ms, messages=False)[1], "no monitor event in time"
    return monitor.monitor_event(dealer.recv_event())[0]


def _connected(open_client: Opener, port: int, max_size: int = 1 << 30) -> MonitoredDealer:
    dealer = open_client(max_size, derive_keys(SECRET))
    dealer.connect(f"tcp://127.0.0.1:{port}")
    assert _next_event(dealer) == monitor.EVENT_HANDSHAKE_SUCCEEDED
    return dealer


def _answer(dealer: MonitoredDealer, timeout_ms: int = 10_000) -> bytes:
    assert dealer.poll(timeout_ms) == (True, False)
    return dealer.recv()


def test_the_right_keys_are_answered(open_client: Opener, server: EchoServer) -> None:
    dealer = _connected(open_client, server.port)
    dealer.send(b"ping")
    assert _answer(dealer) == b"ping"


def test_keys_of_another_secret_are_refused(open_client: Opener, server: EchoServer) -> None:
    dealer = open_client(1 << 20, derive_keys(OTHER))
    dealer.connect(f"tcp://127.0.0.1:{server.port}")
    assert _next_event(dealer) in REFUSED


def test_nobody_listening_is_a_retried_connect(open_client: Opener) -> None:
    with zmq.Context() as context, context.socket(zmq.ROUTER) as probe:  # a port, then freed
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    dealer = open_client(1 << 20, derive_keys(SECRET))
    dealer.connect(f"tcp://127.0.0.1:{port}")
    assert _next_event(dealer) == monitor.EVENT_CONNECT_RETRIED


def test_a_server_that_closes_is_a_disconnection(open_client: Opener) -> None:
    echo = EchoServer(derive_keys(SECRET))
    dealer = _connected(open_client, echo.port)
    echo.close()
    assert _next_event(dealer) == monitor.EVENT_DISCONNECTED


def test_frames_of_several_megabytes_go_and_come_back_whole(open_client: Opener,
                                                            server: EchoServer) -> None:
    dealer = _connected(open_client, server.port)
    frame = bytes(range(256)) * (24 << 12)  # 24 MiB
    dealer.send(frame)
    assert _answer(dealer) == frame
    dealer.send(b"")
    assert _answer(dealer) == b""


def test_a_frame_over_the_bound_drops_the_connection(open_client: Opener,
                                                     server: EchoServer) -> None:
    dealer = _connected(open_client, server.port, max_size=1000)
    dealer.send(b"x" * 900)  # the bound counts CURVE's framing too, some 40 bytes
    assert _answer(dealer) == b"x" * 900
    dealer.send(b"x" * 1001)  # its echo is over the bound
    assert dealer.poll(5000) == (False, True)
    assert monitor.monitor_event(dealer.recv_event())[0] == monitor.EVENT_DISCONNECTED


def test_poll_times_out_with_nothing_ready(open_client: Opener, server: EchoServer) -> None:
    dealer = _connected(open_client, server.port)
    assert dealer.poll(50) == (False, False)
    assert dealer.poll(0, messages=False) == (False, False)


@pytest.mark.skipif(LIB is None, reason="no libzmq loadable through ctypes here")
def test_key_helpers_match_pyzmq() -> None:
    assert LIB is not None
    secret = z85.encode(bytes(range(32)))
    assert LIB.curve_public(secret) == zmq.curve_public(secret)
    assert LIB.z85_encode(bytes(range(32))) == secret
    assert LIB.z85_decode(secret) == bytes(range(32))
    with pytest.raises(ValueError):
        LIB.z85_encode(b"abc")
    with pytest.raises(ValueError):
        LIB.z85_decode(b"abcd")


def test_the_environment_forces_pyzmq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(libzmq.FORCE_PYZMQ, "1")
    assert libzmq.load() is None
    dealer = open_dealer(1 << 20, None, EVENTS)
    try:
        assert isinstance(dealer, PyzmqDealer)
    finally:
        dealer.close()


def test_keys_are_the_same_with_pyzmq() -> None:
    """The key derivation of either path, in a fresh interpreter that forces pyzmq."""
    forced = subprocess.run(
        [sys.executable, "-c", "from hqshm.cluster.curvekeys import derive_keys; "
         f"print(repr(derive_keys({SECRET!r}).__getstate__()))"],
        capture_output=True, text=True, check=True, env={**os.environ, libzmq.FORCE_PYZMQ: "1"})
    assert forced.stdout.strip() == repr(derive_keys(SECRET).__getstate__())
