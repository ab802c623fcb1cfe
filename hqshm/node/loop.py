"""The node: registers with the server, keeps a local queue, starts tasks on executors.

One thread and one poller over the server socket, its monitor, the executors' doorbell and their
pidfds. Each turn reads everything that is ready, starts what fits, and sends one ``TaskUpdates``
with everything that happened, so a burst of short tasks costs one frame, not one per task.

What the node owns: the allocator (which CPUs a task gets), the executors (which process runs
it), and time (limits, kill escalation, heartbeats, idle timeout). The server only says what to
run, what to cancel and what to give back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from hqshm import __version__, errors
from hqshm.cluster.codec import MAX_FRAME
from hqshm.cluster.errors import PeerError, VersionMismatch
from hqshm.cluster.monitor import monitor_event
from hqshm.cluster.protocol import (
    NODE_LINK,
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    Failed,
    Finished,
    Heartbeat,
    NodeRegistered,
    NodeStopping,
    RegisterNode,
    ReserveNode,
    RetractTasks,
    ServerHeartbeat,
    Started,
    StopNode,
    StopReason,
    TaskNotification,
    TasksRetracted,
    TaskUpdates,
    task_key,
)
from hqshm.cluster.resources import FRACTIONS, RequestVariant
from hqshm.cluster.security import derive_keys, secure_client_socket
from hqshm.errors import UserError
from hqshm.model.resourcespec import env_name, format_request
from hqshm.model.workerconfig import WorkerConfiguration
from hqshm.node import affinity, launch, notify
from hqshm.node.allocator import Allocation, Allocator
from hqshm.node.config import NodeOptions, cpu_ids, node_resources
from hqshm.node.executor import OK, SKIPPED, ExecutorHandle, ExecutorPool, TaskPayload
from hqshm.node.ring import RecordKind

logger = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 20  # spec/deployment.md §4.1: 20 tries, 2 s apart
CONNECT_INTERVAL = 2.0
KILL_GRACE = 1.0  # SIGINT, then SIGKILL after this long (spec/jobs.md §7)
SERVER_SILENCE_LIMIT = 3  # heartbeats without a word from the server: it is lost
MAX_EXTRA_EXECUTORS = 4  # per CPU, for tasks that need less than one CPU
# Task updates wait this long to share a frame: each frame wakes ZeroMQ's I/O thread and the
# server's loop, which costs more than the task itself when tasks are short. An update is sent
# at once when the node has nothing left to start, since then the server must refill it.
FLUSH_DELAY = 0.005
# Tasks of a group whose mean run time is below HANDOFF_MAX are handed off: the next one waits
# in the executor's ring behind the running one and inherits its CPUs, so the executor goes on
# without waiting for this loop, and the loop collects reports every DRAIN_TICK instead of
# waking for every task. Longer tasks are dispatched one at a time, so that a task is reported
# RUNNING only when it runs.
HANDOFF_MAX = 0.02
DRAIN_TICK = 0.002


class ServerNotConnected(UserError):
    template = "Server could not be connected"


class WorkerRefused(UserError):
    template = ("The HQ server at {host}:{port} refused this worker's credentials.\n"
                "Check that the access file belongs to the running server.")


class Interrupted(Exception):
    """A signal arrived while the node was still connecting."""


@dataclass(eq=False)
class GroupInfo:
    request_variants: tuple[RequestVariant, ...]
    priority: int
    body: bytes
    request_env: list[dict[str, str]]  # per variant: HQ_RESOURCE_REQUEST_* values
    time_limit: float | None
    ran: int = 0
    ran_time: float = 0.0

    @property
    def short(self) -> bool:
        return self.ran > 0 and self.ran_time / self.ran < HANDOFF_MAX


@dataclass(eq=False)
class Queued:
    key: int
    instance: int
    gid: int
    entry: bytes | None
    nodes: tuple[str, ...] = ()  # a multi-node task's hostnames, this node first


@dataclass(eq=False)
class Running:
    key: int
    instance: int
    gid: int
    handle: ExecutorHandle
    allocation: Allocation  # shared with its hand-off successor, which inherits it
    started: float
    deadline: float | None
    reported: bool = True  # started reported to the server (hand-offs: once they start)
    heir: int | None = None  # the hand-off successor that takes over the allocation
    pid: int = 0
    canceled: bool = False
    timed_out: bool = False
    kill_at: float | None = None  # when to escalate to SIGKILL
    signal_pending: int = 0  # a signal to send once the pid is known


@dataclass
class Updates:
    started: list[Started] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.started or self.finished or self.failed)


class Node:
    def __init__(self, options: NodeOptions,
                 on_registered: Callable[[int, WorkerConfiguration], None] | None = None) -> None:
        self.options = options
        self.on_registered = on_registered
        self.hostname = options.hostname or socket.gethostname()
        # HQ's default work dir is a fresh /tmp/hq-worker<random>/work; we remove it at exit.
        self.own_work_root = None if options.work_dir else tempfile.mkdtemp(prefix="hq-worker")
        self.work_dir = options.work_dir or os.path.join(self.own_work_root or "", "work")
        os.makedirs(self.work_dir, exist_ok=True)
        self.descriptor = node_resources(options).descriptor  # coupling included
        self.allocator = Allocator(self.descriptor)
        cpu_pool = self.descriptor.pool("cpus")
        assert cpu_pool is not None
        self.n_cpus = cpu_pool.count
        self.pinnable = options.pin and self._labels_are_cpus(cpu_pool.labels)
        # NUMA node of each real CPU (from this machine's topology, whatever --cpus says).
        self.cpu_numa = self._real_numa() if self.pinnable else {}
        if options.pin and not self.pinnable:
            logger.warning("The CPU labels of this worker (%s) are not all CPUs it may use; "
                           "tasks will not be pinned", ",".join(cpu_pool.labels[:16]))
        if not affinity.C_MODULE:
            logger.warning("The C affinity module is not available (%s); using Python's os "
                           "functions, which spawn tasks more slowly",
                           affinity.FALLBACK_REASON)
        self.started_at = time.time()
        self.deadline = (None if options.time_limit is None
                         else time.monotonic() + options.time_limit)
        self.notify = notify.Listener()
        self.node_ctx = launch.NodeContext(
            worker_id=0, hostname=self.hostname, work_dir=self.work_dir,
            hq_path=_hq_path(), base_env=dict(options.env),
            access_key=self.notify.access_key,
            memory_mode=(affinity.MemPolicy.PREFERRED if options.memory_binding == "prefer"
                         else affinity.MemPolicy.BIND))
        # Executors are forked before any ZeroMQ socket exists (fork and zmq do not mix).
        self.pool = ExecutorPool(max(1, self.n_cpus), self.node_ctx)
        self.groups: dict[int, GroupInfo] = {}
        # The local queue: FIFO per group; groups run by priority, then job (the key's upper
        # half), as the server orders them. ``queued`` is the truth: an entry of a deque whose
        # key is no longer there was canceled or retracted and is skipped.
        self.queue: dict[int, deque[Queued]] = {}
        self.queued: dict[int, Queued] = {}
        self.running: dict[int, Running] = {}
        self.updates = Updates()
        self.worker_id = 0
        self.server_uid = ""
        self.exit_code = 0
        self.stopping = False
        self.finishing = False  # server lost with finish-running: no new tasks
        self.reserved_for = 0  # key of the multi-node task this node is a secondary of
        self.last_heard = time.monotonic()
        self.last_beat = time.monotonic()
        self.last_flush = time.monotonic()
        self.idle_since: float | None = time.monotonic()
        self.idle_timeout = options.idle_timeout
        self.context: zmq.Context | None = None
        self.socket: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None

    # --- set-up ---------------------------------------------------------------------------

    def _real_numa(self) -> dict[int, int]:
        if self.options.memory_binding == "none":
            return {}
        try:
            topology = affinity.read_topology("/sys")
        except OSError:
            return {}
        return {cpu.id: max(cpu.numa, 0) for cpu in topology}

    @staticmethod
    def _labels_are_cpus(labels: tuple[str, ...]) -> bool:
        ids = cpu_ids(labels)
        if ids is None:
            return False
        allowed = set(affinity.get_affinity())
        return all(i in allowed for i in ids)

    def configuration(self) -> WorkerConfiguration:
        return WorkerConfiguration(
            hostname=self.hostname,
            work_dir=self.work_dir,
            heartbeat=self.options.heartbeat,
            idle_timeout=self.idle_timeout,
            time_limit=self.options.time_limit,
            on_server_lost=self.options.on_server_lost,
            group=self.options.group or "default",
            pid=os.getpid(),
            listen_address=f"{self.hostname}:0",
            resources=self.descriptor,
            overview_interval=self.options.overview_interval,
            min_utilization=self.options.min_utilization,
            launcher_fallback="" if affinity.C_MODULE else str(affinity.FALLBACK_REASON),
        )

    def connect(self, wake_fd: int, signals: list[int]) -> None:
        """Register, retrying as HQ does; a refused handshake or a signal ends it at once."""
        endpoint = self.options.server
        secret = endpoint.secret
        self.context = zmq.Context()
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.maxmsgsize = MAX_FRAME
        secure_client_socket(sock, derive_keys(secret) if secret else None)
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        sock.connect(f"tcp://{endpoint.host}:{endpoint.port}")
        self.socket = sock
        config = self.configuration()
        register = RegisterNode(
            version=__version__,
            hostname=self.hostname,
            resources=self.descriptor,
            group=config.group,
            time_limit=self.options.time_limit,
            heartbeat=self.options.heartbeat,
            idle_timeout=self.idle_timeout,
            info=config.encode(),
            min_utilization=self.options.min_utilization,
        )
        self._send(register)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(wake_fd, zmq.POLLIN)
        for attempt in range(CONNECT_ATTEMPTS):
            deadline = time.monotonic() + CONNECT_INTERVAL
            while (left := deadline - time.monotonic()) > 0:
                ready = dict(poller.poll(int(left * 1000) + 1))
                if signals:
                    raise Interrupted()
                if self.monitor in ready:
                    frames = self.monitor.recv_multipart()
                    if monitor_event(frames)[0] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                        raise WorkerRefused(host=endpoint.host, port=endpoint.port)
                if sock in ready:
                    reply = self._decode(sock.recv())
                    if isinstance(reply, NodeRegistered):
                        self._registered(reply, config)
                        return
                    if isinstance(reply, StopNode):
                        raise UserError(f"The server refused this worker: {reply.reason}")
            logger.warning("Could not connect to server, error: no answer (attempt %d of %d)",
                           attempt + 1, CONNECT_ATTEMPTS)
        raise ServerNotConnected()

    def _registered(self, reply: NodeRegistered, config: WorkerConfiguration) -> None:
        self.worker_id = reply.worker_id
        self.server_uid = reply.server_uid
        self.pool.set_worker_id(reply.worker_id)  # executors name it in stream files
        if self.idle_timeout is None and reply.idle_timeout is not None:
            self.idle_timeout = reply.idle_timeout
        self.last_heard = time.monotonic()
        logger.info("Worker %d registered at the server", self.worker_id)
        if self.on_registered is not None:
            self.on_registered(self.worker_id, config)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = signal.set_wakeup_fd(wake_w.fileno())
        signals: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            signals.append(signum)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self.connect(wake_r.fileno(), signals)
            except Interrupted:
                logger.info("Received signal %d while connecting, stopping", signals[0])
                return 1
            poller = zmq.Poller()
            assert self.socket is not None and self.monitor is not None
            poller.register(self.socket, zmq.POLLIN)
            poller.register(self.monitor, zmq.POLLIN)
            poller.register(self.pool.doorbell_r, zmq.POLLIN)
            poller.register(wake_r.fileno(), zmq.POLLIN)
            poller.register(self.notify.fileno(), zmq.POLLIN)
            registered_fds = set()
            while True:
                for fd in self.pool.pidfds():
                    if fd not in registered_fds:
                        poller.register(fd, zmq.POLLIN)
                        registered_fds.add(fd)
                ready = dict(poller.poll(self._timeout_ms()))
                if wake_r.fileno() in ready:
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(4096)
                if signals:
                    logger.info("Received signal %d, stopping", signals[0])
                    self.exit_code = 1
                    break
                if self.socket in ready:
                    self._read_server()
                if self.monitor in ready:
                    self._read_monitor()
                if self.notify.fileno() in ready:
                    self._read_notifications()
                self._collect()
                if any(fd in ready for fd in registered_fds):
                    for fd in [fd for fd in registered_fds if fd in ready]:
                        poller.unregister(fd)
                        registered_fds.discard(fd)
                    self._reap()
                self._timers()
                if self.stopping:
                    break
                if not self.finishing:
                    self._start_tasks()
                # Report at once when capacity is idle and nothing is queued: the server must
                # refill us. Otherwise reports wait up to FLUSH_DELAY to share a frame.
                self._flush(urgent=not self.queued and self.pool.free() is not None)
                if self.finishing and not self.running:
                    break
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.set_wakeup_fd(previous)
            wake_r.close()
            wake_w.close()
            self._shutdown()
        return self.exit_code

    def _timeout_ms(self) -> int:
        timeout = 1.0
        now = time.monotonic()
        if self.updates:
            timeout = max(0.0, self.last_flush + FLUSH_DELAY - now)
        if any(not t.reported for t in self.running.values()):
            timeout = min(timeout, DRAIN_TICK)
        for task in self.running.values():
            for due in (task.deadline, task.kill_at):
                if due is not None:
                    timeout = min(timeout, max(0.0, due - now))
        return int(timeout * 1000) + 1

    # --- server messages ------------------------------------------------------------------

    def _send(self, message: object) -> None:
        assert self.socket is not None
        self.socket.send(NODE_LINK.encode(message))

    def _decode(self, frame: bytes) -> object | None:
        try:
            return NODE_LINK.decode(frame)
        except VersionMismatch as exc:
            raise UserError(
                f"The server speaks node protocol {exc.theirs}, this worker {exc.ours}; "
                "use the same hqshm version on both") from None
        except PeerError as exc:
            logger.warning("Invalid message from the server: %s", exc)
            return None

    def _read_server(self) -> None:
        assert self.socket is not None
        self.last_heard = time.monotonic()
        for _ in range(512):
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            message = self._decode(frame)
            if isinstance(message, ComputeTasks):
                self._compute(message)
            elif isinstance(message, DefineGroup):
                self._define(message)
            elif isinstance(message, CancelTasks):
                self._cancel(message.keys)
            elif isinstance(message, RetractTasks):
                self._retract(message.keys)
            elif isinstance(message, StopNode):
                self._stop_requested(message.reason)
                return
            elif isinstance(message, ReserveNode):
                self.reserved_for = message.key
                if not message.key and not self.running and not self.queued:
                    self.idle_since = time.monotonic()
            elif isinstance(message, ServerHeartbeat):
                pass

    def _define(self, msg: DefineGroup) -> None:
        from hqshm.model.program import decode_program

        program = decode_program(msg.body)
        request_env = []
        for variant in msg.request.variants:
            request_env.append({
                f"HQ_RESOURCE_REQUEST_{env_name(e.name)}": format_request(e)
                for e in variant.entries
            })
        self.groups[msg.gid] = GroupInfo(msg.request.variants, msg.priority, msg.body,
                                         request_env, program.time_limit)

    def _compute(self, msg: ComputeTasks) -> None:
        group = self.groups.get(msg.gid)
        if group is None:
            logger.warning("Tasks of an undefined group %d ignored", msg.gid)
            return
        for i, key in enumerate(msg.keys):
            instance = msg.instances[i] if msg.instances else 0
            entry = msg.entries[i] if msg.entries else None  # raw: the executor decodes it
            queued = Queued(key, instance, msg.gid, entry, msg.nodes)
            self.queued[key] = queued
            self.queue.setdefault(msg.gid, deque()).append(queued)
        self.idle_since = None

    def _cancel(self, keys: tuple[int, ...]) -> None:
        for key in keys:
            if self.queued.pop(key, None) is not None:
                continue
            task = self.running.get(key)
            if task is not None and not task.canceled:
                task.canceled = True
                if task.handle.key != key:
                    self.pool.skip(task.handle, key)  # queued behind another: do not start
                self._kill(task)

    def _retract(self, keys: tuple[int, ...]) -> None:
        given = tuple(k for k in keys if self.queued.pop(k, None) is not None)
        self._send(TasksRetracted(given))

    def _read_notifications(self) -> None:
        """Tasks' `hq task notify` messages: checked, forwarded, answered."""
        for request in self.notify.receive():
            key = task_key(request.job_id, request.task_id)
            task = self.running.get(key)
            if task is None or task.instance != request.instance:
                self.notify.answer(request.sender, "the task is not running on this worker")
                continue
            self._send(TaskNotification(key, request.instance, request.message))
            self.notify.answer(request.sender)

    def _stop_requested(self, reason: str) -> None:
        if reason == StopReason.STOPPED:
            logger.info("Worker stopped by the server")
            self.exit_code = 0
            self.stopping = True
        else:
            logger.info("The server stopped (%s)", reason)
            self._server_lost()

    def _read_monitor(self) -> None:
        assert self.monitor is not None
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = monitor_event(frames)[0]
            if event == zmq.EVENT_DISCONNECTED and not self.stopping:
                logger.warning("Connection to the server was lost")
                self._server_lost()

    def _server_lost(self) -> None:
        self.exit_code = 1
        if self.options.on_server_lost == "finish-running" and self.running:
            if not self.finishing:
                logger.info("Waiting for finishing running tasks")
            self.finishing = True
            self.queued.clear()
            self.queue.clear()
        else:
            self.stopping = True

    # --- tasks ----------------------------------------------------------------------------

    def _group_order(self) -> list[int]:
        """Groups with queued tasks, best first: higher priority, then the older job."""
        order = []
        for gid, tasks in self.queue.items():
            while tasks and tasks[0].key not in self.queued:
                tasks.popleft()  # canceled or retracted meanwhile
            if tasks:
                order.append((-self.groups[gid].priority, tasks[0].key, gid))
        order.sort()
        return [gid for _, _, gid in order]

    def _start_tasks(self) -> None:
        """Start what fits, best group first; a group that does not fit now does not block
        the groups after it (different resource shapes never wait for each other)."""
        if not self.queued:
            return
        for gid in self._group_order():
            tasks = self.queue[gid]
            group = self.groups[gid]
            while tasks:
                queued = tasks[0]
                if queued.key not in self.queued:
                    tasks.popleft()
                    continue
                handle = self.pool.free()
                if handle is None and len(self.pool.handles) >= self.n_cpus * MAX_EXTRA_EXECUTORS:
                    break
                if queued.nodes:
                    # The server reserved this whole node for it: nothing to allocate.
                    allocation: Allocation | None = Allocation(_multinode_variant(group), ())
                else:
                    allocation = self.allocator.try_allocate(group.request_variants)
                if allocation is None:
                    break
                if handle is None:
                    handle = self.pool.grow()
                tasks.popleft()
                del self.queued[queued.key]
                self._launch(queued, group, allocation, handle, handoff=False)
        self._hand_off()

    def _hand_off(self) -> None:
        """Queue the next task of a short group behind each running one of the same group."""
        if not self.queued:
            return
        order = self._group_order()
        best = order[0] if order else None
        for handle in self.pool.handles:
            if len(handle.inflight) != 1:
                continue
            current = self.running.get(handle.inflight[0])
            if current is None or current.canceled or current.kill_at is not None:
                continue
            group = self.groups[current.gid]
            # Never let a hand-off jump over a better group's task.
            if not group.short or current.gid != best:
                continue
            tasks = self.queue[best]
            while tasks and tasks[0].key not in self.queued:
                tasks.popleft()
            if not tasks:
                break
            queued = tasks.popleft()
            del self.queued[queued.key]
            current.heir = queued.key
            self._launch(queued, group, current.allocation, handle, handoff=True)

    def _launch(self, queued: Queued, group: GroupInfo, allocation: Allocation,
                handle: ExecutorHandle, handoff: bool) -> None:
        now = time.time()
        # Multi-node tasks get none of the resource variables (spec/jobs.md §6).
        env = {} if queued.nodes else dict(group.request_env[allocation.variant])
        if len(group.request_variants) > 1 and not queued.nodes:
            env["HQ_RESOURCE_VARIANT"] = str(allocation.variant)
        cpu_labels: list[str] = []
        whole_cpus = True
        numa = -1
        for taken in allocation.taken:
            if taken.name not in self.allocator.indexed:
                continue
            labels = self.allocator.labels(taken.name, taken)
            env[f"HQ_RESOURCE_VALUES_{env_name(taken.name)}"] = ",".join(labels)
            if taken.name == "cpus":
                cpu_labels = labels
                whole_cpus = all(amount == FRACTIONS for _, amount in taken.items)
            elif taken.name == "gpus/nvidia":
                env["CUDA_VISIBLE_DEVICES"] = ",".join(labels)
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            elif taken.name == "gpus/amd":
                env["ROCR_VISIBLE_DEVICES"] = ",".join(labels)
        mask = [int(c) for c in cpu_labels] if self.pinnable else []
        if mask and self.cpu_numa:
            # Memory goes where the CPUs are: bound to their NUMA node when they share one.
            numas = {self.cpu_numa.get(c) for c in mask}
            if len(numas) == 1 and None not in numas:
                numa = numas.pop()  # type: ignore[assignment]
        payload = TaskPayload(queued.gid, queued.entry, env, cpu_labels, whole_cpus,
                              bool(mask), list(queued.nodes)).encode()
        self.pool.dispatch(handle, queued.key, queued.instance, queued.gid, group.body,
                           mask, numa, payload)
        if handoff:
            # Reported, and timed, when the executor says it started.
            self.running[queued.key] = Running(queued.key, queued.instance, queued.gid, handle,
                                               allocation, now, None, reported=False)
            return
        deadline = None if group.time_limit is None else time.monotonic() + group.time_limit
        self.running[queued.key] = Running(queued.key, queued.instance, queued.gid, handle,
                                           allocation, now, deadline)
        self.updates.started.append((queued.key, queued.instance, now, allocation.variant))

    def _collect(self) -> None:
        for handle, record in self.pool.drain():
            task = self.running.get(record.key)
            if task is None or task.handle is not handle:
                continue
            if record.kind == RecordKind.STARTED:
                task.pid = record.pid
                if not task.reported:
                    self._report_start(task, record.t_start)
                if task.signal_pending:
                    self._signal(task, task.signal_pending)
                    task.signal_pending = 0
            elif record.kind == RecordKind.ENDED:
                group = self.groups.get(task.gid)
                if group is not None and record.status != SKIPPED:
                    group.ran += 1
                    group.ran_time += max(0.0, record.t_end - record.t_start)
                if not task.reported and record.status != SKIPPED:
                    self._report_start(task, record.t_start)
                if task.kill_at is not None and task.pid > 0:
                    # Killed (cancel, time limit, shutdown): its main process is gone; whatever
                    # else lives in its process group (`cmd &` ignores SIGINT) goes too.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(task.pid, signal.SIGKILL)
                error = record.payload.decode("utf-8", "replace")
                self._ended(task, record.status == OK, record.t_start, record.t_end, error)

    def _report_start(self, task: Running, started: float) -> None:
        task.reported = True
        task.started = started
        limit = self.groups[task.gid].time_limit
        if limit is not None:
            task.deadline = time.monotonic() + limit - max(0.0, time.time() - started)
        self.updates.started.append((task.key, task.instance, started, task.allocation.variant))

    def _ended(self, task: Running, ok: bool, t0: float, t1: float, error: str) -> None:
        del self.running[task.key]
        if task.heir is None or task.heir not in self.running:
            self.allocator.release(task.allocation)  # else the hand-off successor keeps it
        if not self.running and not self.queued:
            self.idle_since = time.monotonic()
        if task.canceled:
            return
        variant = task.allocation.variant
        if task.timed_out:
            self.updates.failed.append((task.key, task.instance, task.started, t1, variant,
                                        errors.TIME_LIMIT_REACHED, False))
        elif ok:
            self.updates.finished.append((task.key, task.instance, task.started, t1, variant))
        else:
            # Retryable only if the program itself ran and failed (it had a pid).
            self.updates.failed.append((task.key, task.instance, task.started, t1, variant,
                                        error, task.pid > 0))

    def _reap(self) -> None:
        self._collect()  # an executor may have reported its last task before dying
        for handle, status in self.pool.reap():
            cause = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                     else f"exit code {os.WEXITSTATUS(status)}")
            for key in list(handle.inflight):
                task = self.running.get(key)
                if task is None:
                    continue
                handle.inflight.popleft()
                self._ended(task, False, task.started, time.time(),
                            f"The executor running the task on worker {self.worker_id} "
                            f"({self.hostname}) died ({cause})")

    def _kill(self, task: Running) -> None:
        """SIGINT to the task's process group now, SIGKILL after the grace period."""
        task.kill_at = time.monotonic() + KILL_GRACE
        self._signal(task, signal.SIGINT)

    def _signal(self, task: Running, signum: int) -> None:
        """Signal the task's process group, or as soon as it has one."""
        if task.pid <= 0:
            task.signal_pending = signum
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(task.pid, signum)

    def _timers(self) -> None:
        now = time.monotonic()
        for task in list(self.running.values()):
            if task.deadline is not None and now >= task.deadline and task.kill_at is None:
                task.timed_out = True
                self._kill(task)
            elif task.kill_at is not None and now >= task.kill_at:
                task.kill_at = now + KILL_GRACE
                self._signal(task, signal.SIGKILL)
        if now - self.last_beat >= self.options.heartbeat:
            self.last_beat = now
            self._send(Heartbeat())
        silence = max(SERVER_SILENCE_LIMIT * self.options.heartbeat, 10.0)
        if now - self.last_heard > silence and not self.stopping:
            logger.warning("The server has not answered for %.0f s", now - self.last_heard)
            self.last_heard = now
            self._server_lost()
        if self.deadline is not None and now >= self.deadline and not self.stopping:
            logger.info("Worker time limit reached")
            self._leave(StopReason.TIME_LIMIT)
        if (self.idle_timeout is not None and self.idle_since is not None
                and not self.running and not self.queued and not self.reserved_for
                and now - self.idle_since >= self.idle_timeout and not self.stopping):
            logger.info("Idle timeout reached")
            self._leave(StopReason.IDLE_TIMEOUT)

    def _leave(self, reason: str) -> None:
        self._flush()
        self._send(NodeStopping(reason))
        self.exit_code = 0
        self.stopping = True

    def _flush(self, urgent: bool = True) -> None:
        if not self.updates:
            return
        now = time.monotonic()
        if not urgent and now - self.last_flush < FLUSH_DELAY:
            return
        self.last_flush = now
        updates, self.updates = self.updates, Updates()
        ended = {item[0] for item in updates.finished} | {item[0] for item in updates.failed}
        started = tuple(s for s in updates.started if s[0] not in ended)
        with contextlib.suppress(zmq.ZMQError):
            self._send(TaskUpdates(started, tuple(updates.finished), tuple(updates.failed)))

    # --- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Kill what still runs (SIGINT, then SIGKILL), stop executors, close the link."""
        self.pool.control.stop()  # queued hand-offs must not start now
        for task in self.running.values():
            self._kill(task)
        deadline = time.monotonic() + KILL_GRACE + 1.0
        escalated = False
        while self.running and time.monotonic() < deadline:
            time.sleep(0.01)
            self._collect()
            if not escalated and time.monotonic() > deadline - 1.0:
                for task in self.running.values():
                    self._signal(task, signal.SIGKILL)
                escalated = True
        if self.socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._flush()
            self.socket.close(linger=500)
        if self.monitor is not None:
            self.monitor.close(linger=0)
        self.pool.stop()
        self.notify.close()
        if self.context is not None:
            self.context.term()
        if self.own_work_root is not None:
            import shutil

            shutil.rmtree(self.own_work_root, ignore_errors=True)


def _multinode_variant(group: GroupInfo) -> int:
    return next((i for i, v in enumerate(group.request_variants) if v.n_nodes), 0)


def _hq_path() -> str:
    """Absolute path of the `hq` program, for tasks that call `$HQ ...`."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "hq"
    if os.path.basename(argv0) in ("hq", "hq-node"):
        found = argv0 if os.sep in argv0 else None
        if found is None:
            import shutil

            found = shutil.which(argv0)
        if found:
            return str(Path(found).absolute().parent / "hq")
    import shutil

    return shutil.which("hq") or "hq"

