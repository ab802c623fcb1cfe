"""The server's event loop: reads the node socket, calls the core, writes its decisions out.

One thread, one ``zmq.Poller``. Each turn reads everything that is ready, then schedules once:
a burst of task updates from many nodes costs one scheduling pass, not one per message.
The product adds its own sockets (clients) and periodic work through ``add_reader`` and
``call_every``, and learns about nodes through ``ServerHooks``.

Node loss is noticed two ways: a TCP disconnect (ZeroMQ's socket monitor reports the file
descriptor, which we map to the node that registered on it) within milliseconds, and silence
beyond ``heartbeat_timeout`` for a node that hangs with its connection open. A node dropped for
its silence is told so (``StopNode(DROPPED)``), and so is any peer that speaks without being
registered (a dropped node that woke up, or one that reconnected): its tasks were given back,
so it must kill them rather than run them twice.

Messages to one node leave in the order they were sent, always. The product may hold a
``ComputeTasks`` (``before_compute`` says so: it must first fetch, from another node, a
result those tasks take as arguments): that message and every later one to the same node wait
in the node's queue, in order, until the product calls ``release``; the queue then goes
through ``before_compute`` again at the next flush, before anything newer. Only messages that
no task's order depends on (``StopNode``, ``ServerHeartbeat``, ``FetchResult``) pass a held
queue, so two nodes each waiting for a result of the other cannot wait for each other.
Messages to other nodes are not delayed.

A handler that raises does not take the server down: the loop logs the error and drops the
message (or the rest of that socket's turn), a last resort for bugs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import zmq

from . import firstuse, reactor
from .bounds import MAX_FRAME, MAX_NODE_VALUES
from .core import Core, TaskEvents, Worker
from .errors import PeerError, VersionMismatch
from .frozen import field, mutable
from .ids import TaskKey, WorkerId
from .monitor import monitor_event
from .protocol import (
    NODE_LINK,
    PROTOCOL,
    ComputeTasks,
    FetchResult,
    Heartbeat,
    NodeRegistered,
    NodeStopping,
    RegisterNode,
    ResultItem,
    ResultPart,
    ServerHeartbeat,
    StopNode,
    StopReason,
    TaskNotification,
    TasksRetracted,
    TaskUpdates,
    heartbeat_timeout,
    mergeable,
    merged,
)
from .scheduler import schedule
from .security import EndpointKeys, ZapResponder, listen

logger = logging.getLogger(__name__)

MAX_READS_PER_TURN = 512  # bound one socket's share of a turn so others are not starved
# The server starts without numpy (cluster/firstuse.py) and imports it the first time it waits
# this long with nothing to read, so that workers register first and a job that comes later
# does not wait for the import.
NUMPY_WHEN_IDLE_MS = 100
# Messages that pass a node's held queue: none concerns a task's order.
_UNORDERED = (StopNode, ServerHeartbeat, FetchResult)


class ServerHooks(Protocol):
    """What the product learns about nodes; tasks go through ``TaskEvents`` instead."""

    def node_registered(self, worker: Worker, msg: RegisterNode, now: float) -> str | None:
        """Accept (None) or refuse (a reason) a node that asks to join."""
        ...

    def node_left(self, wid: WorkerId, reason: str, now: float) -> None: ...

    def task_notified(self, wid: WorkerId, msg: TaskNotification) -> None: ...

    def task_results(self, wid: WorkerId, results: tuple[ResultItem, ...], now: float) -> None:
        """Function tasks' results, before the ends of those tasks are handled."""
        ...

    def result_part(self, wid: WorkerId, msg: ResultPart, now: float) -> None:
        """A node's answer to a ``FetchResult`` (checked by the product: it asked)."""
        ...

    def after_turn(self, now: float) -> None: ...


@mutable
class SocketOutbox:
    """Collects messages during a turn and sends them at its end."""

    events: TaskEvents
    pending: list[tuple[WorkerId, object]] = field(default_factory=list)

    def send(self, worker: WorkerId, message: object) -> None:
        self.pending.append((worker, message))


def _merge_computes(pending: list[tuple[WorkerId, object]]) -> list[tuple[WorkerId, object]]:
    """The turn's messages, each ComputeTasks merged into the one before it to the same node
    where it can be (``protocol.mergeable``); each node's messages stay in their order."""
    if len(pending) < 2:
        return pending
    out: list[tuple[WorkerId, object]] = []
    # Each node's last message in out while it is a ComputeTasks: [where, what joins it,
    # keys, entry bytes].
    open_runs: dict[WorkerId, list[Any]] = {}
    runs: list[list[Any]] = []
    for wid, message in pending:
        run = open_runs.get(wid)
        if isinstance(message, ComputeTasks):
            keys, size = len(message.keys), sum(map(len, message.entries))
            if run is not None and mergeable(run[1][0], message, run[2] + keys, run[3] + size):
                run[1].append(message)
                run[2] += keys
                run[3] += size
                continue
            run = open_runs[wid] = [len(out), [message], keys, size]
            runs.append(run)
        elif run is not None:
            del open_runs[wid]
        out.append((wid, message))
    for at, messages, _keys, _bytes in runs:
        if len(messages) > 1:
            out[at] = (out[at][0], merged(messages))
    return out


@mutable
class _Link:
    routing_id: bytes
    fd: int
    heartbeat: float


class ServerLoop:
    def __init__(self, context: zmq.Context, core: Core, events: TaskEvents,
                 hooks: ServerHooks, zap: ZapResponder, server_uid: str = "",
                 default_idle_timeout: float | None = None) -> None:
        self.context = context
        self.server_uid = server_uid
        self.default_idle_timeout = default_idle_timeout  # for nodes that set none
        self.core = core
        self.hooks = hooks
        self.zap = zap
        self.out = SocketOutbox(events)
        self.poller = zmq.Poller()
        self.readers: dict[object, Callable[[], object]] = {}
        self.timers: list[list] = []  # [next_due, period, fn]
        self.links: dict[WorkerId, _Link] = {}  # worker id -> link
        self.by_routing_id: dict[bytes, WorkerId] = {}
        self.by_fd: dict[int, WorkerId] = {}  # file descriptor -> worker id
        # Set by ``stop``, which may come before ``run`` (a signal while the server starts):
        # ``run`` then returns at once instead of serving on.
        self.stopped = False
        # A scheduling pass costs O(waiting groups): with thousands waiting and a message a
        # millisecond, passing after each turn left no time for the messages. The next pass
        # waits as long as the last one took, so scheduling takes at most half the loop.
        self.schedule_after = 0.0  # monotonic
        self.worker_socket: zmq.Socket | None = None
        # The product's last word on a ComputeTasks before it leaves: the messages to send now
        # in its place (itself with the results it carries, results to store before it), and
        # whether it is held instead (with every later message to that node, until
        # ``release``: the module's docstring).
        self.before_compute: Callable[[WorkerId, ComputeTasks],
                                      tuple[Sequence[object], bool]] | None = None
        self.held: dict[WorkerId, list[object]] = {}  # per node, in order; [0] a ComputeTasks
        self.released: set[WorkerId] = set()  # held queues to try again at the next flush
        self.add_reader(zap.socket, zap.handle_ready)

    # --- set-up ---------------------------------------------------------------------------

    def bind_workers(self, host: str, port: int, keys: EndpointKeys | None) -> int:
        sock, bound = listen(self.context, host, port, keys, "worker", MAX_FRAME)
        self.serve_workers(sock, sock.get_monitor_socket(zmq.EVENT_DISCONNECTED))
        return bound

    def serve_workers(self, sock: zmq.Socket, monitor: zmq.Socket) -> None:
        """Serve nodes on ``sock`` (bound by ``security.listen``), whose monitor reports each
        disconnect: a node's loss noticed at once."""
        self.worker_socket = sock
        self.add_reader(sock, self._read_nodes)
        self.add_reader(monitor, lambda: self._read_monitor(monitor))

    def add_reader(self, sock: object, callback: Callable[[], object]) -> None:
        self.readers[sock] = callback
        self.poller.register(sock, zmq.POLLIN)

    def call_every(self, period: float, fn: Callable[[float], None]) -> None:
        self.timers.append([time.monotonic() + period, period, fn])

    # --- running --------------------------------------------------------------------------

    def run(self) -> None:
        self.call_every(1.0, self._check_heartbeats)
        numpy_pending = not firstuse.loaded(firstuse.np)
        while not self.stopped:
            timeout = self._next_timeout()
            if numpy_pending:
                timeout = min(timeout, NUMPY_WHEN_IDLE_MS)
            ready = dict(self.poller.poll(timeout))
            if numpy_pending and not ready:
                firstuse.load(firstuse.np)
                numpy_pending = False
            now = time.time()
            for sock in ready:
                try:
                    self.readers[sock]()
                except Exception as exc:  # noqa: BLE001 - the last resort: log, serve on
                    logger.exception("Dropped a message that could not be handled: %r", exc)
            self._run_timers()
            self.turn_end(now)

    def turn_end(self, now: float) -> None:
        """Schedule if anything changed, send what the turn decided, let the product react."""
        if self.core.needs_scheduling:
            start = time.monotonic()
            if start >= self.schedule_after:
                schedule(self.core, self.out, now)
                end = time.monotonic()
                self.schedule_after = end + (end - start)
        self.hooks.after_turn(now)
        reactor.send_forgets(self.core, self.out)
        self.flush()

    def stop(self) -> None:
        self.stopped = True

    def stop_nodes(self, reason: str) -> None:
        for wid in list(self.links):
            self.out.send(wid, StopNode(reason))
        self.flush()

    def flush(self) -> None:
        assert self.worker_socket is not None
        if self.released:  # older than anything pending: they go first
            released, self.released = self.released, set()
            for wid in released:
                for message in self.held.pop(wid, ()):
                    self._send(wid, message)
        pending, self.out.pending = self.out.pending, []
        for wid, message in _merge_computes(pending):
            self._send(wid, message)

    def release(self, wid: WorkerId) -> None:
        """Try a node's held queue again at the next flush (what it waited for is there, or
        will not come)."""
        if wid in self.held:
            self.released.add(wid)

    def _send(self, wid: WorkerId, message: object) -> None:
        link = self.links.get(wid)
        if link is None:
            return
        held = self.held.get(wid)
        if held is not None and not isinstance(message, _UNORDERED):
            held.append(message)
            return
        messages: Sequence[object] = (message,)
        if self.before_compute is not None and isinstance(message, ComputeTasks):
            messages, hold = self.before_compute(wid, message)
            if hold:
                self.held[wid] = [message]
        assert self.worker_socket is not None
        for one in messages:
            try:
                self.worker_socket.send_multipart(
                    [link.routing_id, NODE_LINK.encode(one)], zmq.NOBLOCK
                )
            except zmq.Again:
                logger.warning("Worker %d is not reading; message dropped", wid)

    def _next_timeout(self) -> int:
        dues = [t[0] for t in self.timers]
        if self.core.needs_scheduling:  # when the pass may run, and any pause has ended
            pause_left = max(0.0, self.core.paused_until - time.time())
            dues.append(max(self.schedule_after, time.monotonic() + pause_left))
        if not dues:
            return 1000
        return max(0, min(1000, int((min(dues) - time.monotonic()) * 1000) + 1))

    def _run_timers(self) -> None:
        mono = time.monotonic()
        for timer in self.timers:
            if timer[0] <= mono:
                timer[0] = mono + timer[1]
                timer[2](time.time())

    # --- nodes ----------------------------------------------------------------------------

    def _read_nodes(self) -> None:
        assert self.worker_socket is not None
        now = time.time()
        strangers: set[bytes] = set()
        try:
            for _ in range(MAX_READS_PER_TURN):
                try:
                    frames = self.worker_socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return
                if len(frames) == 2:
                    self._read_frame(frames, strangers, now)
        finally:
            for routing_id in strangers:
                self._tell_dropped(routing_id)

    def _read_frame(self, frames: list[zmq.Frame], strangers: set[bytes], now: float) -> None:
        """One node message; ``strangers`` collects unregistered peers that must be told."""
        routing_id = frames[0].bytes
        try:
            message = NODE_LINK.decode(frames[1].bytes, MAX_NODE_VALUES)
        except VersionMismatch as exc:
            logger.warning("Refused a node speaking protocol %d (ours %d)", exc.theirs,
                           PROTOCOL)
            return
        except PeerError as exc:
            self._bad_peer(routing_id, str(exc), now)
            return
        wid = self.by_routing_id.get(routing_id)
        try:
            if wid is not None:
                self._dispatch(wid, message, now)
            elif isinstance(message, RegisterNode):
                self._register(routing_id, frames[1].get(zmq.SRCFD), message, now)
            elif not isinstance(message, NodeStopping):
                strangers.add(routing_id)
        except Exception as exc:  # noqa: BLE001 - the last resort: log, serve on
            logger.exception("Dropped a message that could not be handled: %s from worker %s "
                             "(%r)", type(message).__name__, wid, exc)

    def _tell_dropped(self, routing_id: bytes) -> None:
        """A peer spoke that is no registered node: a node that was dropped (it has been
        frozen, or its connection broke) and runs on. Its tasks were given back: it must
        kill them and leave, not report them or start them again."""
        assert self.worker_socket is not None
        # Info: a node stopped by the server, or that left, may still send its last reports.
        logger.info("An unregistered worker spoke (it was dropped); telling it to stop")
        try:
            self.worker_socket.send_multipart(
                [routing_id, NODE_LINK.encode(StopNode(StopReason.DROPPED))], zmq.NOBLOCK)
        except zmq.Again:
            logger.warning("A dropped worker is not reading; it was not told to stop")

    def _dispatch(self, wid: WorkerId, message: object, now: float) -> None:
        worker = self.core.workers.get(wid)
        if worker is None:
            return
        worker.last_seen = now
        if isinstance(message, TaskUpdates):
            if message.results:
                self.hooks.task_results(wid, message.results, now)
            reactor.on_task_updates(self.core, self.out, wid, message, now)
        elif isinstance(message, TasksRetracted):
            reactor.on_tasks_retracted(self.core, self.out, wid, message.keys, now)
        elif isinstance(message, Heartbeat):
            pass
        elif isinstance(message, TaskNotification):
            self.hooks.task_notified(wid, message)
        elif isinstance(message, ResultPart):
            self.hooks.result_part(wid, message, now)
        elif isinstance(message, NodeStopping):
            self.drop_worker(wid, message.reason, now)
        else:
            self._bad_peer_wid(wid, f"unexpected {type(message).__name__}", now)

    def _register(self, routing_id: bytes, fd: int, msg: RegisterNode, now: float) -> None:
        worker = reactor.add_worker(
            self.core, msg.hostname, msg.resources, msg.group, msg.time_limit, now,
            msg.min_utilization,
        )
        link = _Link(routing_id, fd, msg.heartbeat)
        self.links[worker.wid] = link
        refusal = self.hooks.node_registered(worker, msg, now)
        if refusal is not None:
            self.out.send(worker.wid, StopNode(refusal))
            self.flush()
            del self.links[worker.wid]
            self.core.remove_worker(worker.wid)
            return
        self.by_routing_id[routing_id] = worker.wid
        self.by_fd[fd] = worker.wid
        rejected: list[TaskKey] = [key for key, _instance, _variant in msg.resumed]
        if msg.server_uid == self.server_uid and self.core.reconnecting > 0:
            self.core.reconnecting -= 1
            if self.core.reconnecting == 0:  # every node that reconnects is back
                self.core.paused_until = 0.0
        if msg.resumed and msg.server_uid == self.server_uid:
            rejected = reactor.adopt(self.core, self.out, worker, msg.resumed, now)
            logger.info("Worker %d took back %d running tasks", worker.wid,
                        len(msg.resumed) - len(rejected))
        self.out.send(worker.wid, NodeRegistered(worker.wid, self.server_uid,
                                                 self.default_idle_timeout, tuple(rejected)))

    def drop_worker(self, wid: WorkerId, reason: str, now: float) -> None:
        """Forget a node and give its tasks back (the core counts crashes by reason)."""
        link = self.links.pop(wid, None)
        if link is None:
            return
        self.held.pop(wid, None)
        self.released.discard(wid)
        self.by_routing_id.pop(link.routing_id, None)
        if self.by_fd.get(link.fd) == wid:
            del self.by_fd[link.fd]
        reactor.on_worker_lost(self.core, self.out, wid, reason, now)
        self.hooks.node_left(wid, reason, now)

    def stop_worker(self, wid: WorkerId, now: float) -> None:
        """`hq worker stop`: tell the node, and treat its tasks as returned (not crashed)."""
        if wid in self.links:
            self.out.send(wid, StopNode(StopReason.STOPPED))
            self.flush()
            self.drop_worker(wid, StopReason.STOPPED, now)

    def _read_monitor(self, monitor: zmq.Socket) -> None:
        now = time.time()
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event, value = monitor_event(frames)
            if event == zmq.EVENT_DISCONNECTED:
                wid = self.by_fd.pop(value, None)
                if wid is not None:
                    self.drop_worker(wid, StopReason.CONNECTION_LOST, now)

    def _check_heartbeats(self, now: float) -> None:
        for wid, link in list(self.links.items()):
            worker = self.core.workers.get(wid)
            if worker is None:
                continue
            if worker.deadline is not None and worker.assigned:
                # Its remaining lifetime shrinks: tasks it can no longer start must move.
                self.core.changed()
            if now - worker.last_seen > heartbeat_timeout(link.heartbeat):
                logger.warning("Worker %d missed its heartbeats", wid)
                # Should it be only frozen, it reads this first when it wakes up.
                self.out.send(wid, StopNode(StopReason.DROPPED))
                self.flush()
                self.drop_worker(wid, StopReason.HEARTBEAT_LOST, now)
            else:
                self.out.send(wid, ServerHeartbeat())

    def _bad_peer(self, routing_id: bytes, why: str, now: float) -> None:
        wid = self.by_routing_id.get(routing_id)
        if wid is None:
            logger.warning("Dropped an invalid message from an unregistered node: %s", why)
            return
        self._bad_peer_wid(wid, why, now)

    def _bad_peer_wid(self, wid: WorkerId, why: str, now: float) -> None:
        logger.warning("Worker %d sent an invalid message (%s); disconnecting it", wid, why)
        self.out.send(wid, StopNode("protocol error"))
        self.flush()
        self.drop_worker(wid, StopReason.CONNECTION_LOST, now)
