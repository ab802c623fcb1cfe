"""The loops' last resorts and the server's word to dropped nodes (issue 8, items 4 and 6).

A real ``ServerLoop`` on a loopback socket with a DEALER that plays a node, and the node loop's
``_read_server`` over a socket pair with a stub core: a handler that raises is logged and its
message dropped, and the loop goes on; a node the server does not know, or one dropped for its
heartbeats, is told ``StopNode(DROPPED)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import zmq
from core_env import list_pool
from hqshm.cluster import reactor
from hqshm.cluster.core import Core, Worker
from hqshm.cluster.ids import WorkerId
from hqshm.cluster.protocol import (
    NODE_LINK,
    Heartbeat,
    NodeRegistered,
    RegisterNode,
    ServerHeartbeat,
    StopNode,
    StopReason,
    TaskUpdates,
)
from hqshm.cluster.resources import ResourceDescriptor
from hqshm.cluster.security import ZapResponder
from hqshm.cluster.server_loop import ServerLoop

from hqshm.node.loop import Node

DROPPED_LOG = "Dropped a message that could not be handled"
RECEIVE_MS = 5000


class NoEvents:
    """The product's ``TaskEvents``: nothing happens to tasks in these tests."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Hooks:
    def __init__(self) -> None:
        self.left: list[tuple[WorkerId, str]] = []

    def node_registered(self, worker: Worker, msg: RegisterNode, now: float) -> str | None:
        return None

    def node_left(self, wid: WorkerId, reason: str, now: float) -> None:
        self.left.append((wid, reason))

    def task_notified(self, wid: WorkerId, msg: object) -> None:
        pass

    def after_turn(self, now: float) -> None:
        pass


class Server:
    """A server loop that the test turns by hand, and its nodes' sockets."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.hooks = Hooks()
        self.core = Core()
        self.loop = ServerLoop(self.context, self.core, NoEvents(), self.hooks,  # type: ignore[arg-type]
                               ZapResponder(self.context, {"worker": None}))
        self.port = self.loop.bind_workers("127.0.0.1", 0, None)
        self.nodes: list[zmq.Socket] = []

    def node(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvtimeo = RECEIVE_MS
        sock.connect(f"tcp://127.0.0.1:{self.port}")
        self.nodes.append(sock)
        return sock

    def turn(self, until: float = 2.0) -> None:
        """Poll once (ZAP handshakes and node frames), read, end the turn."""
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            ready = dict(self.loop.poller.poll(50))
            for sock in ready:
                self.loop.readers[sock]()
            if self.loop.worker_socket in ready:
                break
        self.loop.turn_end(time.time())

    def register(self, sock: zmq.Socket) -> WorkerId:
        descriptor = ResourceDescriptor((list_pool("cpus", "0"),))
        sock.send(NODE_LINK.encode(RegisterNode("0", "n", descriptor, "default", None, 1.0,
                                                None, b"")))
        self.turn()
        reply = NODE_LINK.decode(sock.recv())
        assert isinstance(reply, NodeRegistered)
        return reply.worker_id

    def close(self) -> None:
        for sock in self.nodes:
            sock.close(linger=0)
        for sock in list(self.loop.readers):
            if isinstance(sock, zmq.Socket):
                sock.close(linger=0)
        self.context.term()


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    try:
        yield made
    finally:
        made.close()


def receive(sock: zmq.Socket) -> object:
    """The next message that is no heartbeat."""
    while True:
        message = NODE_LINK.decode(sock.recv())
        if not isinstance(message, ServerHeartbeat):
            return message


def test_a_node_message_whose_handler_raises_is_dropped_and_the_server_goes_on(
        server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    node = server.node()
    wid = server.register(node)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(reactor, "on_task_updates", broken)
    seen = server.core.workers[wid].last_seen
    with caplog.at_level(logging.ERROR):
        node.send(NODE_LINK.encode(TaskUpdates()))
        server.turn()
    [record] = [r for r in caplog.records if DROPPED_LOG in r.getMessage()]
    assert "TaskUpdates" in record.getMessage() and record.exc_info is not None
    # The node is still there and what it says next is read.
    time.sleep(0.01)
    node.send(NODE_LINK.encode(Heartbeat()))
    server.turn()
    assert server.core.workers[wid].last_seen > seen
    assert server.hooks.left == []


def test_a_reader_that_raises_is_logged_and_the_loop_goes_on(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        server.loop.stop()

    reader, writer = server.context.socket(zmq.PAIR), server.context.socket(zmq.PAIR)
    reader.bind("inproc://guard")
    writer.connect("inproc://guard")
    server.nodes += [reader, writer]
    server.loop.add_reader(reader, lambda: (reader.recv(), broken()))
    writer.send(b"1")
    writer.send(b"2")
    with caplog.at_level(logging.ERROR):
        server.loop.run()  # returns when the second message stops it
    assert len(calls) == 2
    assert any(DROPPED_LOG in r.getMessage() for r in caplog.records)


def test_a_node_the_server_does_not_know_is_told_it_was_dropped(server: Server) -> None:
    stranger = server.node()
    stranger.send(NODE_LINK.encode(Heartbeat()))
    stranger.send(NODE_LINK.encode(TaskUpdates()))
    server.turn()
    assert receive(stranger) == StopNode(StopReason.DROPPED)
    assert server.core.workers == {}


def test_a_node_dropped_for_its_heartbeats_is_told_so(server: Server) -> None:
    node = server.node()
    wid = server.register(node)
    server.core.workers[wid].last_seen -= 10.0  # heartbeat 1 s: lost after 4 s
    server.loop._check_heartbeats(time.time())
    assert receive(node) == StopNode(StopReason.DROPPED)
    assert server.hooks.left == [(wid, StopReason.HEARTBEAT_LOST)]
    node.send(NODE_LINK.encode(Heartbeat()))  # it wakes up and speaks: told again
    server.turn()
    assert receive(node) == StopNode(StopReason.DROPPED)


# --- the node's loop ---------------------------------------------------------------------------


class BrokenCore:
    """The node core's message handler, failing on its first message."""

    def __init__(self) -> None:
        self.messages: list[object] = []

    def heard(self, mono: float) -> None:
        pass

    def on_message(self, message: object, mono: float) -> None:
        self.messages.append(message)
        if len(self.messages) == 1:
            raise RuntimeError("a bug")


def test_a_server_message_whose_handler_raises_is_dropped_and_the_node_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    context = zmq.Context()
    server, node = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        server.bind("inproc://node")
        node.connect("inproc://node")
        for message in (ServerHeartbeat(), StopNode(StopReason.STOPPED)):
            server.send(NODE_LINK.encode(message))
        assert node.poll(RECEIVE_MS)
        time.sleep(0.05)  # both frames are in
        core = BrokenCore()
        shell = SimpleNamespace(socket=node, core=core)
        shell._decode = lambda frame: Node._decode(shell, frame)  # type: ignore[arg-type]
        with caplog.at_level(logging.ERROR):
            Node._read_server(shell)  # type: ignore[arg-type]
        assert core.messages == [ServerHeartbeat(), StopNode(StopReason.STOPPED)]
        [record] = [r for r in caplog.records if DROPPED_LOG in r.getMessage()]
        assert "ServerHeartbeat" in record.getMessage()
    finally:
        server.close(linger=0)
        node.close(linger=0)
        context.term()


def test_a_stop_that_comes_before_the_loop_runs_is_not_lost(server: Server) -> None:
    """A SIGINT between the server's handler being set and its loop starting calls ``stop``
    first: ``run`` must then return at once, not serve on (the server then never exited)."""
    server.loop.stop()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (server.loop.run(), done.set()), daemon=True)
    thread.start()
    assert done.wait(5.0), "the loop served on after stop()"
