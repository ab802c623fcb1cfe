"""The node's loop: the imperative shell around its core (hqshm/node/core.py).

Set-up (resources, pinning, executors forked before any ZeroMQ socket, the notification
listener, signals), the handshake with the server, then one poller over the server socket, its
monitor, the executors' doorbell and pidfds, the notification socket and the signal wake-up
pipe. Each turn reads what is ready and feeds it to the core, which decides; the loop carries
its decisions out (socket sends, ring pushes, signals, new executors): ``Node`` is the core's
``Outbox``. A burst of short tasks costs one ``TaskUpdates`` frame, not one per task, because the
core batches reports.

The clocks are read here and only here, and passed to the core as ``now`` (epoch) and ``mono``
(monotonic) at the step that needs them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hqshm import __version__
from hqshm.cluster.bounds import MAX_FRAME, MAX_NODE_VALUES
from hqshm.cluster.errors import PeerError, VersionMismatch
from hqshm.cluster.firstuse import zmq  # imported once the executors are forked
from hqshm.cluster.frozen import replace
from hqshm.cluster.ids import GroupId, InstanceId, TaskKey, task_key
from hqshm.cluster.monitor import monitor_event
from hqshm.cluster.protocol import (
    NODE_LINK,
    ComputeTasks,
    FetchResult,
    NodeRegistered,
    RegisterNode,
    ReleaseResults,
    Resumed,
    StopNode,
    StoreResult,
    TaskUpdates,
)
from hqshm.cluster.security import derive_keys, secure_client_socket
from hqshm.errors import UserError
from hqshm.model.workerconfig import WorkerConfiguration
from hqshm.node import affinity, batchsystem, launch, notify, results
from hqshm.node.config import NodeOptions, ServerEndpoint, cpu_ids, node_resources
from hqshm.node.core import NodeCore, NodeSettings, Signal
from hqshm.node.executor import IN_PROCESS, OK, SKIPPED, TaskPayload, end_text
from hqshm.node.pool import ExecutorPool
from hqshm.node.ring import RecordFlag, RecordKind

logger = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 20  # spec/deployment.md §4.1: 20 tries, 2 s apart
CONNECT_INTERVAL = 2.0
SHUTDOWN_POLL = 0.01  # how often shutdown looks for the ends of the tasks it killed
# Named apart from the unlocked directories of older versions, which a sweep must not take for
# abandoned while such a node still runs.
RESULTS_PREFIX = "hqshm-results-locked-"
ABANDONED_AFTER = 60.0  # s: a result directory no node locks is removed once this old
_SIGNALS = {Signal.INTERRUPT: signal.SIGINT, Signal.KILL: signal.SIGKILL}
_AFTER_OK = int(RecordFlag.AFTER_OK)
_TELL_START = int(RecordFlag.TELL_START)
_STARTED, _ENDED = RecordKind.STARTED, RecordKind.ENDED  # records carry these very members


class ServerNotConnected(UserError):
    template = "Server could not be connected"


class WorkerRefused(UserError):
    template = ("The HQ server at {host}:{port} refused this worker's credentials.\n"
                "Check that the access file belongs to the running server.")


class Interrupted(Exception):
    """A signal arrived while the node was still connecting."""


class Node:
    """One node process: set-up, handshake, the loop, shutdown; and the core's ``Outbox``."""

    def __init__(self, options: NodeOptions,
                 on_registered: Callable[[int, WorkerConfiguration], None] | None = None) -> None:
        # The batch allocation first: `--manager slurm` outside Slurm fails before any set-up.
        # Its ID and remaining time are the defaults of --group and --time-limit.
        self.allocation = batchsystem.detect_allocation(options.manager, options.env)
        options = replace(
            options,
            group=batchsystem.worker_group(options.group, self.allocation),
            time_limit=batchsystem.worker_time_limit(options.time_limit, self.allocation),
        )
        self.options = options
        self.on_registered = on_registered
        self.hostname = options.hostname or socket.gethostname()
        # HQ's default work dir is a fresh /tmp/hq-worker<random>/work; we remove it at exit.
        self.own_work_root = None if options.work_dir else tempfile.mkdtemp(prefix="hq-worker")
        self.work_dir = options.work_dir or os.path.join(self.own_work_root or "", "work")
        os.makedirs(self.work_dir, exist_ok=True)
        self.descriptor = node_resources(options).descriptor  # coupling included
        cpu_pool = self.descriptor.pool("cpus")
        assert cpu_pool is not None
        pinnable = options.pin and self._labels_are_cpus(cpu_pool.labels)
        if options.pin and not pinnable:
            logger.warning("The CPU labels of this worker (%s) are not all CPUs it may use; "
                           "tasks will not be pinned", ",".join(cpu_pool.labels[:16]))
        if not affinity.C_MODULE:
            logger.warning("The C affinity module is not available (%s); using Python's os "
                           "functions, which spawn tasks more slowly",
                           affinity.FALLBACK_REASON)
        self.core = NodeCore(
            NodeSettings(
                descriptor=self.descriptor,
                hostname=self.hostname,
                heartbeat=options.heartbeat,
                idle_timeout=options.idle_timeout,
                time_limit=options.time_limit,
                on_server_lost=options.on_server_lost,
                pin=pinnable,
                # NUMA node of each real CPU (from this machine's topology, whatever --cpus
                # says).
                cpu_numa=self._real_numa() if pinnable else {},
            ),
            self,
            time.monotonic(),
        )
        self.notify = notify.Listener()
        self.node_ctx = launch.NodeContext(
            worker_id=0, hostname=self.hostname, work_dir=self.work_dir,
            hq_path=_hq_path(), base_env=dict(options.env),
            access_key=self.notify.access_key,
            results_dir=_results_dir(self.own_work_root or self.work_dir),
            memory_mode=(affinity.MemPolicy.PREFERRED if options.memory_binding == "prefer"
                         else affinity.MemPolicy.BIND))
        # Results made on other nodes, received in parts (StoreResult) before their tasks.
        self.receiver = results.Receiver(self.node_ctx.results_dir)
        # Executors are forked before any ZeroMQ socket exists (fork and zmq do not mix).
        self.pool = ExecutorPool(len(self.core.slots), self.node_ctx,
                                 own_dir=self.own_work_root)
        self.context: zmq.Context | None = None
        self.socket: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.poller: zmq.Poller | None = None  # the loop's, once it serves
        self.links = 0  # sockets opened to a server, to name their monitors
        # While the server is lost (reconnect mode): the endpoint of the registration on its
        # way, and whether its connection failed (then the next attempt opens a new one).
        self.attempt: ServerEndpoint | None = None
        self.attempt_failed = False

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
            idle_timeout=self.core.idle_timeout,
            time_limit=self.options.time_limit,
            on_server_lost=self.options.on_server_lost,
            group=self.options.group or "default",
            pid=os.getpid(),
            listen_address=f"{self.hostname}:0",
            resources=self.descriptor,
            manager=self.allocation.manager if self.allocation is not None else "None",
            manager_job_id=self.allocation.job_id if self.allocation is not None else None,
            overview_interval=self.options.overview_interval,
            min_utilization=self.options.min_utilization,
            launcher_fallback="" if affinity.C_MODULE else str(affinity.FALLBACK_REASON),
        )

    def connect(self, wake_fd: int, signals: list[int]) -> None:
        """Register, retrying as HQ does; a refused handshake or a signal ends it at once."""
        endpoint = self.options.server
        self.context = zmq.Context()
        sock, monitor = self._open_link(endpoint)
        config = self.configuration()
        self.send(self._registration(config, "", (), self.options.time_limit))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(wake_fd, zmq.POLLIN)
        for attempt in range(CONNECT_ATTEMPTS):
            deadline = time.monotonic() + CONNECT_INTERVAL
            while (left := deadline - time.monotonic()) > 0:
                ready = dict(poller.poll(int(left * 1000) + 1))
                if signals:
                    raise Interrupted()
                if monitor in ready:
                    frames = monitor.recv_multipart()
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

    def _open_link(self, endpoint: ServerEndpoint) -> tuple[zmq.Socket, zmq.Socket]:
        """A socket to the server (the link, or an attempt to register again) and its
        monitor, in the loop's poller once it has one."""
        assert self.context is not None
        secret = endpoint.secret
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.maxmsgsize = MAX_FRAME
        secure_client_socket(sock, derive_keys(secret) if secret else None)
        # A name of its own: a new socket may get the closed one's descriptor, on which
        # pyzmq's default name is built, before ZeroMQ has let go of the old name.
        self.links += 1
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH,
            addr=f"inproc://hqshm-node-monitor-{os.getpid()}-{self.links}")
        sock.connect(f"tcp://{endpoint.host}:{endpoint.port}")
        self.socket, self.monitor = sock, monitor
        if self.poller is not None:
            self.poller.register(sock, zmq.POLLIN)
            self.poller.register(monitor, zmq.POLLIN)
        return sock, monitor

    def _close_link(self) -> None:
        """Close the socket to the server, unsent messages dropped: the server is gone."""
        if self.socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.socket.disable_monitor()
        for sock in (self.socket, self.monitor):
            if sock is None:
                continue
            if self.poller is not None:
                self.poller.unregister(sock)
            sock.close(linger=0)
        self.socket = self.monitor = None

    def _registration(self, config: WorkerConfiguration, server_uid: str,
                      resumed: tuple[Resumed, ...], time_limit: float | None) -> RegisterNode:
        return RegisterNode(
            version=__version__,
            hostname=self.hostname,
            resources=self.descriptor,
            group=config.group,
            time_limit=time_limit,
            heartbeat=self.options.heartbeat,
            idle_timeout=self.options.idle_timeout,
            info=config.encode(),
            min_utilization=self.options.min_utilization,
            server_uid=server_uid,
            resumed=resumed,
        )

    def _registered(self, reply: NodeRegistered, config: WorkerConfiguration) -> None:
        if self.core.lost:
            # A restarted server numbers its groups anew: each executor gets every program
            # again rather than run a new group's task with an old group's program.
            self.pool.forget_groups()
        self.attempt = None
        self.pool.set_worker_id(reply.worker_id)  # executors name it in stream files
        self.core.registered(reply.worker_id, reply.idle_timeout, time.monotonic(),
                             reply.server_uid, reply.rejected)
        if self.on_registered is not None:
            self.on_registered(reply.worker_id, config)

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
        # Taken from here on even if the process was started with them blocked (a parent that
        # held them when it forked us: the mask is inherited).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            try:
                self.connect(wake_r.fileno(), signals)
            except Interrupted:
                logger.info("Received signal %d while connecting, stopping", signals[0])
                return 1
            return self._serve(wake_r, signals)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.set_wakeup_fd(previous)
            wake_r.close()
            wake_w.close()
            self._shutdown()

    def _serve(self, wake: socket.socket, signals: list[int]) -> int:
        """One poll, then one step per concern, until the core stops or a signal comes."""
        assert self.socket is not None and self.monitor is not None
        poller = self.poller = zmq.Poller()
        for source in (self.socket, self.monitor, self.pool.doorbell_r, wake.fileno(),
                       self.notify.fileno()):
            poller.register(source, zmq.POLLIN)
        pidfds: set[int] = set()
        core = self.core
        pool = self.pool
        doorbell = pool.doorbell_r
        watched = -1  # the pool's generation whose pidfds are in the poller
        while True:
            if pool.generation != watched:
                watched = pool.generation
                self._watch_executors(poller, pidfds)
            ready = dict(poller.poll(core.poll_timeout_ms(time.monotonic())))
            if wake.fileno() in ready:
                with contextlib.suppress(BlockingIOError):
                    wake.recv(4096)
            if signals:
                logger.info("Received signal %d, stopping", signals[0])
                # What ended before the signal is a true end, reported; what still runs is
                # killed by the shutdown unreported: the server sees a lost connection and
                # gives it back with a crash (spec/deployment.md §4.2).
                self._collect()
                core.signaled()
                return core.exit_code
            if self.socket in ready:
                self._read_server()
            if self.monitor in ready:
                self._read_monitor()
            if self.notify.fileno() in ready:
                self._read_notifications()
            # The clocks once a turn: what the turn decides is decided at one instant.
            now, mono = time.time(), time.monotonic()
            self._collect(doorbell in ready, now, mono)
            if ready and not pidfds.isdisjoint(ready):
                self._reap(poller, pidfds, ready)
            core.timers(mono)
            if core.stopping:
                return core.exit_code
            core.start_tasks(now, mono)
            core.flush(mono)
            if core.finished:
                return core.exit_code

    def _watch_executors(self, poller: zmq.Poller, pidfds: set[int]) -> None:
        """Poll every executor's pidfd, those started since (grown, or replacing the dead) too."""
        for fd in self.pool.pidfds():
            if fd not in pidfds:
                poller.register(fd, zmq.POLLIN)
                pidfds.add(fd)

    def _read_server(self) -> None:
        assert self.socket is not None
        self.core.heard(time.monotonic())
        for _ in range(512):
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            message = self._decode(frame)
            if message is None:
                continue
            if isinstance(message, NodeRegistered):
                if self.core.lost:  # registered again: this socket is the link now
                    self._registered(message, self.configuration())
                continue
            if isinstance(message, StoreResult):  # before the task that takes it (in order)
                try:
                    self.receiver.part(self.core.server_uid, message)
                except Exception as exc:  # noqa: BLE001 - the last resort: log, serve on
                    logger.exception("Dropped a result part that could not be stored (%r)",
                                     exc)
                continue
            if isinstance(message, ReleaseResults):
                self.receiver.release(message.job_ids)
                results.release(self.node_ctx.results_dir, self.core.server_uid,
                                message.job_ids)
                continue
            if isinstance(message, FetchResult):  # one part (<= MAX_PART) of a held result
                with contextlib.suppress(zmq.ZMQError):
                    self.send(results.read_part(self.node_ctx.results_dir,
                                                self.core.server_uid, message))
                continue
            if isinstance(message, ComputeTasks) and message.results:
                results.store_received(self.node_ctx.results_dir, self.core.server_uid,
                                       message.results)
            try:
                self.core.on_message(message, time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the last resort: log, serve on
                logger.exception("Dropped a message that could not be handled: %s (%r)",
                                 type(message).__name__, exc)
            if isinstance(message, StopNode):
                return  # the loop acts on it before it reads on

    def _decode(self, frame: bytes) -> object | None:
        try:
            return NODE_LINK.decode(frame, MAX_NODE_VALUES)
        except VersionMismatch as exc:
            raise UserError(
                f"The server speaks node protocol {exc.theirs}, this worker {exc.ours}; "
                "use the same hqshm version on both") from None
        except PeerError as exc:
            logger.warning("Invalid message from the server: %s", exc)
            return None

    def _read_monitor(self) -> None:
        assert self.monitor is not None
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = monitor_event(frames)[0]
            if self.core.lost:
                self._attempt_event(event)
            elif event == zmq.EVENT_DISCONNECTED:
                self.core.connection_lost(time.monotonic())

    def _attempt_event(self, event: int) -> None:
        """An attempt to register again lost its connection or was refused: the next one
        opens a new socket (zmq would reconnect this one, but the registration it queued was
        consumed, or the keys are stale)."""
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and self.attempt is not None:
            logger.warning("The server at %s:%d refused this worker's credentials; trying again",
                           self.attempt.host, self.attempt.port)
        if event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_HANDSHAKE_FAILED_AUTH):
            self.attempt_failed = True

    def _read_notifications(self) -> None:
        """Tasks' `hq task notify` messages: checked and forwarded by the core, answered."""
        try:
            for request in self.notify.receive():
                key = task_key(request.job_id, request.task_id)
                refusal = self.core.on_notification(key, request.instance, request.message)
                self.notify.answer(request.sender, refusal)
        except Exception as exc:  # noqa: BLE001 - the last resort: log, serve on
            logger.exception("Dropped a notification that could not be handled (%r)", exc)

    def _collect(self, rang: bool = True, now: float | None = None,
                 mono: float | None = None) -> None:
        """The executors' reports, to the core (two a task: names are bound once);
        ``rang``: the doorbell is readable."""
        reports = self.pool.drain(rang)
        if not reports:
            return
        if now is None or mono is None:
            now, mono = time.time(), time.monotonic()
        on_started, on_ended = self.core.on_started, self.core.on_ended
        read_ended, with_result = results.read_ended, results.RESULT_FLAG
        for handle, record in reports:
            kind = record.kind
            if kind is _ENDED:
                status = record.status
                flags = record.flags
                if flags & with_result:
                    error, result = read_ended(flags, record.payload)
                else:
                    error, result = record.payload, None
                on_ended(handle.index, record.key, status == OK, status == SKIPPED,
                         record.t_start, record.t_end, error, now, mono, result)
            elif kind is _STARTED:
                on_started(handle.index, record.key, record.pid, record.t_start, now, mono,
                           record.status == IN_PROCESS)

    def _reap(self, poller: zmq.Poller, pidfds: set[int],
              ready: dict[object, int]) -> None:
        """Dead executors: the pool replaces them, the core ends the tasks they held."""
        for fd in [fd for fd in pidfds if fd in ready]:
            poller.unregister(fd)
            pidfds.discard(fd)
        self._collect()  # an executor may have reported its last task before dying
        for handle, status in self.pool.reap():
            self.core.executor_died(handle.index, _death_cause(status), time.time(),
                                    time.monotonic(), end_text(status))

    # --- the core's outbox ----------------------------------------------------------------

    def send(self, message: object) -> None:
        assert self.socket is not None
        self.socket.send(NODE_LINK.encode(message))

    def report(self, updates: TaskUpdates) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.send(updates)

    def dispatch(self, executor: int, key: TaskKey, instance: InstanceId, gid: GroupId,
                 body: bytes, cpus: list[int], numa: int, entry: bytes | None,
                 env: dict[str, str], cpu_labels: list[str], whole_cpus: bool,
                 nodes: tuple[str, ...], after_ok: bool = False, tell_start: bool = False
                 ) -> None:
        self.pool.dispatch(self.pool.handles[executor], key, instance, gid, body, cpus, numa,
                           TaskPayload.pack(gid, entry, env, cpu_labels, whole_cpus, bool(cpus),
                                            nodes),
                           (_AFTER_OK if after_ok else 0) | (_TELL_START if tell_start else 0))

    def skip(self, executor: int, key: TaskKey) -> None:
        self.pool.skip(self.pool.handles[executor], key)

    def send_signal(self, pid: int, which: Signal) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, _SIGNALS[which])

    def interrupt_function(self, executor: int, key: TaskKey, pid: int) -> None:
        self.pool.interrupt(self.pool.handles[executor], key)
        self.send_signal(pid, Signal.INTERRUPT)

    def start_executor(self) -> None:
        self.pool.grow()

    def room(self, executor: int) -> int:
        return self.pool.handles[executor].sub.room()

    def forget_group(self, gid: GroupId) -> None:
        self.pool.forget(gid)

    def register_again(self, server_uid: str, resumed: tuple[Resumed, ...],
                       time_limit: float | None) -> None:
        """Register with the server the access file names now; a registration still on its
        way to that same endpoint is left alone (zmq connects it once the server listens)."""
        endpoint = self._rediscover()
        if endpoint is None:
            return
        if endpoint == self.attempt and not self.attempt_failed:
            return
        if endpoint != self.attempt:
            logger.info("Registering again at %s:%d", endpoint.host, endpoint.port)
        self._close_link()
        self._open_link(endpoint)
        self.attempt, self.attempt_failed = endpoint, False
        self.send(self._registration(self.configuration(), server_uid, resumed, time_limit))

    def _rediscover(self) -> ServerEndpoint | None:
        rediscover = self.options.rediscover
        if rediscover is None:
            return self.options.server
        try:
            return rediscover()
        except Exception as exc:  # noqa: BLE001 - a broken file now may be fine next time
            logger.debug("The server cannot be found: %s", exc)
            return None

    # --- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Kill what still runs (SIGINT, then SIGKILL), stop executors, close the link."""
        self.pool.control.stop()  # queued hand-offs must not start now
        deadline = self.core.begin_shutdown(time.monotonic())
        while self.core.running and time.monotonic() < deadline:
            time.sleep(SHUTDOWN_POLL)
            self._collect()
            self.core.escalate_shutdown(time.monotonic())
        if self.socket is not None:
            self.core.flush(time.monotonic(), force=True)
            # A registration still on its way to a server (lost) must not arrive after we left.
            self.socket.close(linger=0 if self.core.lost else 500)
        if self.monitor is not None:
            self.monitor.close(linger=0)
        self.pool.stop()
        self.notify.close()
        if self.context is not None:
            self.context.term()
        if self.own_work_root is not None:
            shutil.rmtree(self.own_work_root, ignore_errors=True)
        self.receiver.close()
        if self.node_ctx.results_dir:
            shutil.rmtree(self.node_ctx.results_dir, ignore_errors=True)


def _results_dir(fallback: str) -> str:
    """The node's result directory: on tmpfs (/dev/shm) when there is one, so that results
    live in shared memory; removed when the node ends (here, or by its executors).

    The node holds a lock on it for its life, and its forked executors share that lock, so
    the directories of nodes killed with no chance to clean up (SIGKILL, the OOM killer: on
    tmpfs their results would hold memory until a reboot) are found and removed by the next
    node that starts on the machine."""
    for parent in ("/dev/shm", fallback):
        with contextlib.suppress(OSError):
            _remove_abandoned(parent)
            path = tempfile.mkdtemp(prefix=RESULTS_PREFIX, dir=parent)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)  # kept open (and locked) until the process ends
            return path
    return ""


def _remove_abandoned(parent: str) -> int:
    """Remove this user's result directories in ``parent`` that no live process locks; how
    many. Directories changed less than ``ABANDONED_AFTER`` ago are left alone: their node
    may not have locked them yet. Others' entries, links and files are never touched."""
    now = time.time()
    removed = 0
    uid = os.getuid()
    with os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith(RESULTS_PREFIX):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if (info.st_uid != uid or not stat.S_ISDIR(info.st_mode)
                        or now - info.st_mtime < ABANDONED_AFTER):
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                             | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live node (or one of its executors) holds it
            else:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
            finally:
                os.close(fd)
    if removed:
        logger.info("Removed %d result director%s left by nodes that were killed", removed,
                    "y" if removed == 1 else "ies")
    return removed


def _death_cause(status: int) -> str:
    """How an executor ended, from its wait status: "killed by signal 9 (SIGKILL)"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {number} ({name})"
    return f"exited with code {os.WEXITSTATUS(status)}"


def _hq_path() -> str:
    """Absolute path of the `hq` program, for tasks that call `$HQ ...`."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "hq"
    if os.path.basename(argv0) in ("hq", "hq-node"):
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found:
            return str(Path(found).absolute().parent / "hq")
    return shutil.which("hq") or "hq"
