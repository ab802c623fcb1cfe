"""`hq server start`: refuse a live server, bind, publish the access file, serve until stopped.

Runs in the process the user started, so `hq server info`'s Pid is that process (HQ's tests
signal it). SIGINT and SIGTERM stop it like `hq server stop` does: nodes are told to stop,
``hq-current`` is removed, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import zmq

from hqshm import __version__
from hqshm.cluster import reactor
from hqshm.cluster.core import Core, Worker
from hqshm.cluster.ids import GroupId, TaskId, WorkerId, split_key
from hqshm.cluster.protocol import RegisterNode, StopReason, TaskNotification
from hqshm.cluster.security import ZapResponder, derive_keys
from hqshm.cluster.server_loop import ServerLoop
from hqshm.errors import UserError
from hqshm.link import access, serverdir
from hqshm.link.client import ClientConnection
from hqshm.link.responses import ServerInfo, TaskExplainResponse
from hqshm.model.workerconfig import decode_configuration
from hqshm.server.events import EventStream
from hqshm.server.explain import explain_task
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import Job, NewGroup
from hqshm.server.journal.service import JournalService, load_journal
from hqshm.server.rpc import ClientService, ServerControl
from hqshm.server.workers import WorkerBook

logger = logging.getLogger(__name__)

# How long a restored server keeps the running tasks of a node that reconnects
# (--on-server-lost reconnect) before it runs them again elsewhere.
RECONNECT_GRACE = 30.0
# How long it assigns nothing while it waits for them (less if they are all back sooner).
RECONNECT_PAUSE = 10.0


class ServerOnline(UserError):  # spec/cli.md §3, hq server start
    template = (
        "Server at {dir} is already online, please stop it first"
        " using `hq server stop --server-dir {dir}`"
    )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    server_dir: Path
    host: str | None = None
    client_port: int = 0
    worker_port: int = 0
    idle_timeout: float | None = None
    access_file: Path | None = None
    disable_client_auth: bool = False
    disable_worker_auth: bool = False
    journal: Path | None = None
    journal_flush_period: float = 30.0


def check_not_online(server_dir: Path) -> None:
    """Fail if a server answers from this dir; a stale access file (dead server) is fine."""
    try:
        conn = ClientConnection(server_dir, connect_timeout=3.0)
    except UserError:
        return
    conn.close()
    raise ServerOnline(dir=server_dir)


class Server(ServerControl):
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.context = zmq.Context()
        self.host = config.host or socket.gethostname()
        self.instance: Path | None = None
        self.core = Core()
        self.events = EventStream()
        self.workers = WorkerBook(self.events)
        loaded = load_journal(config.journal)
        record = self._access_record()
        if loaded is not None and loaded.server_uid:  # a restored server keeps its UID
            record = replace(record, server_uid=loaded.server_uid)
        self.record = record
        self.server_uid = record.server_uid or ""
        self.book = JobBook(self.server_uid, self.workers, self.events)
        self.book.cancel_groups = self._cancel_groups
        self.journal = JournalService(config.journal, self.book, self.server_uid,
                                      lambda: self.core.next_worker_id)
        if loaded is not None:
            self.core.next_worker_id = self.journal.restore(loaded)
        self.events.subscribe(self.journal.journal)
        client_secret = access.secret_bytes(record.client) if record.client else None
        worker_secret = access.secret_bytes(record.worker) if record.worker else None
        client_keys = derive_keys(client_secret) if client_secret else None
        worker_keys = derive_keys(worker_secret) if worker_secret else None
        self.zap = ZapResponder(self.context, {"client": client_keys, "worker": worker_keys})
        self.loop = ServerLoop(self.context, self.core, self.book, self, self.zap,
                               server_uid=self.server_uid,
                               default_idle_timeout=config.idle_timeout)
        self.info = ServerInfo("", "", 0, "", 0, __version__, os.getpid(), time.time())
        self.clients = ClientService(self.context, self.book, self.workers, self.info, self,
                                     self.events)
        assert record.client is not None and record.worker is not None
        self.client_port = self.clients.bind("*", record.client.port, client_keys)
        self.worker_port = self.loop.bind_workers("*", record.worker.port, worker_keys)
        self.loop.add_reader(self.clients.socket, self.clients.read)
        self.clients.handlers.update(self.journal.handlers())
        now = time.time()
        groups, running = self.journal.started(now)
        self.add_groups(groups)
        for key, gid, instance in running.orphans:
            self.core.orphans[key] = (gid, instance, now + RECONNECT_GRACE)
        if running.reconnecting:
            # Their nodes may hold tasks whose start the journal missed: nothing is assigned
            # until they are back (or RECONNECT_PAUSE has passed), so those are taken back.
            self.core.reconnecting = running.reconnecting
            self.core.paused_until = now + RECONNECT_PAUSE
            logger.info("%d running tasks wait up to %d s for %d nodes to reconnect",
                        len(running.orphans), RECONNECT_GRACE, running.reconnecting)
        if loaded is not None:
            logger.info("State restoration completed")
        self.info = ServerInfo(
            server_uid=self.server_uid,
            client_host=record.client.host,
            client_port=self.client_port,
            worker_host=record.worker.host,
            worker_port=self.worker_port,
            version=__version__,
            pid=os.getpid(),
            start_date=time.time(),
            journal_path=str(config.journal) if config.journal else None,
        )
        self.clients.info = self.info
        if config.disable_client_auth:
            logger.warning("Server is started with unprotected client connections. "
                           "Anyone can connect as a client.")
        if config.disable_worker_auth:
            logger.warning("Server is started with unprotected worker connections. "
                           "Anyone can connect as a worker.")

    def _access_record(self) -> access.AccessRecord:
        if self.config.access_file is not None:
            record = access.read_access_file(self.config.access_file)
            if record.client is None or record.worker is None or record.server_uid is None:
                raise UserError(f"The access file {self.config.access_file} must be a full "
                                "file (with server_uid, client and worker parts)")
            return record
        return access.generate(
            __version__,
            client_host=self.host,
            client_port=self.config.client_port or _free_port(),
            worker_host=self.host,
            worker_port=self.config.worker_port or _free_port(),
            client_secret=not self.config.disable_client_auth,
            worker_secret=not self.config.disable_worker_auth,
        )

    def publish(self) -> Path:
        """Create the instance dir with its access file and point ``hq-current`` at it."""
        root = self.config.server_dir
        self.instance = serverdir.create_instance_dir(root)
        record = access.AccessRecord(
            self.record.version, self.server_uid,
            access.Endpoint(self.info.client_host, self.client_port,
                            self.record.client.secret_key if self.record.client else None),
            access.Endpoint(self.info.worker_host, self.worker_port,
                            self.record.worker.secret_key if self.record.worker else None),
        )
        access.write_access_file(self.instance / serverdir.ACCESS_FILE, record)
        serverdir.link_current(root, self.instance)
        return self.instance

    def run(self, on_ready: Callable[[ServerInfo], None] | None = None) -> None:
        self.publish()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = signal.set_wakeup_fd(wake_w.fileno())
        stop_signal = []

        def on_signal(signum: int, _frame: object) -> None:
            stop_signal.append(signum)
            self.loop.stop()

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        self.loop.add_reader(wake_r.fileno(), lambda: _drain(wake_r))
        self.loop.call_every(1.0, lambda now: None)
        self.loop.call_every(self.config.journal_flush_period,
                             lambda now: self.journal.journal.tick())
        self.loop.call_every(1.0, lambda now: self.journal.journal.maintain())
        self.loop.call_every(1.0, lambda now: reactor.expire_orphans(self.core, self.loop.out,
                                                                     now))
        try:
            if on_ready is not None:
                on_ready(self.info)
            self.loop.run()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            signal.set_wakeup_fd(previous)
            wake_r.close()
            wake_w.close()
            self.shutdown()

    def shutdown(self) -> None:
        logger.info("Stopping server")
        # Not STOPPED, which means `hq worker stop` (exit 0): to a node a stopping server is a
        # lost one, as in HQ, so it exits 1 (after its running tasks with finish-running).
        self.loop.stop_nodes(StopReason.SERVER_STOPPED)
        self.journal.stopped(time.time())
        if self.instance is not None:
            serverdir.unlink_current(self.config.server_dir, self.instance)
        self.zap.close()
        self.context.destroy(linger=200)  # lets the stop messages leave before sockets close

    # --- ServerHooks ----------------------------------------------------------------------

    def node_registered(self, worker: Worker, msg: RegisterNode, now: float) -> str | None:
        try:
            config = decode_configuration(msg.info)
        except Exception:
            return "invalid worker configuration"
        if config.idle_timeout is None and self.config.idle_timeout is not None:
            config = replace(config, idle_timeout=self.config.idle_timeout)
        self.workers.joined(worker.wid, config, now)
        logger.info("Worker %d registered from %s", worker.wid, msg.hostname)
        return None

    def node_left(self, wid: WorkerId, reason: str, now: float) -> None:
        self.workers.left(wid, reason, now)

    def task_notified(self, wid: WorkerId, msg: TaskNotification) -> None:
        job_id, task_id = split_key(msg.key)
        self.clients.notify(job_id, task_id, wid, msg.message)

    def after_turn(self, now: float) -> None:
        self.clients.answer_waiters()
        self.journal.journal.turn_done()

    # --- ServerControl --------------------------------------------------------------------

    def add_groups(self, groups: Sequence[NewGroup]) -> None:
        for new in groups:
            reactor.add_group(self.core, new.group, new.deps, new.after)

    def explain(self, job: Job, task_id: TaskId, now: float) -> TaskExplainResponse:
        return explain_task(self.core, job, task_id, now)

    def stop_server(self) -> None:
        self.loop.stop()

    def stop_worker(self, wid: WorkerId, now: float) -> None:
        self.loop.stop_worker(wid, now)

    def worker_load(self, wid: WorkerId) -> tuple[int, int, str]:
        worker = self.core.workers.get(wid)
        if worker is None:
            return 0, 0, ""
        role = ""
        if worker.reserved_for is not None:
            members = self.core.multinode.get(worker.reserved_for, [])
            role = "main" if members[:1] == [wid] else "secondary"
        return len(worker.assigned) + len(worker.running), len(worker.running), role

    def _cancel_groups(self, gids: Sequence[GroupId], now: float) -> None:
        reactor.cancel_groups(self.core, self.loop.out, gids, now)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


def _free_port() -> int:
    """A port the OS considers free now; binding it right after is the usual small race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])
