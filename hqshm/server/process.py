"""`hq server start`'s server: the books, the journal and the loop, on endpoints.py's sockets.

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
from pathlib import Path

from hqshm import __version__
from hqshm.cluster import reactor
from hqshm.cluster.core import Core, Worker
from hqshm.cluster.frozen import replace
from hqshm.cluster.ids import GroupId, JobId, TaskId, WorkerId, split_key
from hqshm.cluster.protocol import (
    RegisterNode,
    ReleaseResults,
    ResultItem,
    ResultPart,
    StopReason,
    TaskNotification,
)
from hqshm.cluster.server_loop import ServerLoop
from hqshm.link.details import TaskExplainResponse
from hqshm.link.responses import ServerInfo
from hqshm.model.workerconfig import decode_configuration
from hqshm.server.autoalloc.service import AutoAlloc
from hqshm.server.endpoints import Listeners, ServerConfig, attach, bind_listeners
from hqshm.server.events import EventStream
from hqshm.server.explain import explain_task
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import Job, NewGroup
from hqshm.server.journal.service import JournalService, load_journal
from hqshm.server.results import ResultStore, store_limit
from hqshm.server.rpc import ClientService, ServerControl
from hqshm.server.workers import WorkerBook

logger = logging.getLogger(__name__)

# How long a restored server keeps the running tasks of a node that reconnects
# (--on-server-lost reconnect) before it runs them again elsewhere.
RECONNECT_GRACE = 30.0
# How long it assigns nothing while it waits for them (less if they are all back sooner).
RECONNECT_PAUSE = 10.0


class Server(ServerControl):
    def __init__(self, config: ServerConfig, listeners: Listeners | None = None) -> None:
        """``listeners``: bound and published already (`hq server start` does so before it
        imports this module); None: bound here, once the journal has given the server UID."""
        self.config = config
        self.core = Core()
        self.events = EventStream()
        self.workers = WorkerBook(self.events)
        try:
            loaded = load_journal(config.journal)
            if listeners is None:
                listeners = bind_listeners(config, loaded.server_uid if loaded else None)
            endpoints = attach(listeners)
        except BaseException:
            if listeners is not None:
                listeners.unpublish(config.server_dir)
                listeners.close()
            raise
        self.endpoints = endpoints
        self.context = endpoints.context
        record = endpoints.record
        assert record.client is not None and record.worker is not None
        self.server_uid = record.server_uid or ""
        self.book = JobBook(self.server_uid, self.workers, self.events)
        self.book.cancel_groups = self._cancel_groups
        self.journal = JournalService(config.journal, self.book, self.server_uid,
                                      lambda: self.core.next_worker_id)
        if loaded is not None:
            self.core.next_worker_id = self.journal.restore(loaded)
        self.events.subscribe(self.journal.journal)
        self.zap = endpoints.zap
        self.loop = ServerLoop(self.context, self.core, self.book, self, self.zap,
                               server_uid=self.server_uid,
                               default_idle_timeout=config.idle_timeout)
        self.info = ServerInfo("", "", 0, "", 0, __version__, os.getpid(), time.time())
        self.clients = ClientService(self.context, self.book, self.workers, self.info, self,
                                     self.events)
        self.clients.serve(endpoints.clients)
        self.loop.serve_workers(endpoints.workers, endpoints.worker_monitor)
        self.loop.add_reader(self.clients.socket, self.clients.read)
        self.clients.handlers.update(self.journal.handlers())
        self.autoalloc = AutoAlloc(
            self.core, lambda: self.endpoints.instance, self.journal.journal.append,
            self.loop.add_reader, self.clients.reply, lambda: self.clients._identity,
            dict(os.environ))
        if loaded is not None:
            self.autoalloc.restore(loaded.records, time.time())
        self.journal.extra_snapshot = self.autoalloc.snapshot
        self.clients.handlers.update(self.autoalloc.handlers())
        self.results = ResultStore(self.book, store_limit(), time.time())
        self.events.subscribe(self.results)
        self.clients.handlers.update(self.results.handlers())
        self.loop.before_compute = self.results.attach
        self.results.on_release = self._release_results
        self.results.send = self.loop.out.send
        self.results.connected = self.loop.links.__contains__
        self.results.release = self.loop.release
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
            client_port=record.client.port,
            worker_host=record.worker.host,
            worker_port=record.worker.port,
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

    @property
    def instance(self) -> Path | None:
        return self.endpoints.instance

    def run(self, on_ready: Callable[[ServerInfo], None] | None = None) -> None:
        if self.endpoints.instance is None:
            self.endpoints.publish(self.config.server_dir)
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
        # `hq server start` holds these from its start until now (serverstart): one that came
        # meanwhile is delivered here, and stops the loop before it serves.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        self.loop.add_reader(wake_r.fileno(), lambda: _drain(wake_r))
        self.loop.call_every(1.0, lambda now: None)
        self.loop.call_every(self.config.journal_flush_period,
                             lambda now: self.journal.journal.tick())
        self.loop.call_every(1.0, lambda now: self.journal.journal.maintain())
        self.loop.call_every(1.0, lambda now: reactor.expire_orphans(self.core, self.loop.out,
                                                                     now))
        tun = self.autoalloc.tun
        self.loop.call_every(tun.schedule_tick, self.autoalloc.tick)
        self.loop.call_every(tun.refresh_interval, self.autoalloc.poll)
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
        self.autoalloc.shutdown()
        # Not STOPPED, which means `hq worker stop` (exit 0): to a node a stopping server is a
        # lost one, as in HQ, so it exits 1 (after its running tasks with finish-running).
        self.loop.stop_nodes(StopReason.SERVER_STOPPED)
        self.journal.stopped(time.time())
        self.endpoints.unpublish(self.config.server_dir)
        self.endpoints.close()  # lets the stop messages leave before the sockets close

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
        self.autoalloc.worker_connected(worker.wid, config, now)
        return None

    def node_left(self, wid: WorkerId, reason: str, now: float) -> None:
        self.results.worker_left(wid, reason)
        self.workers.left(wid, reason, now)
        self.autoalloc.worker_lost(wid, reason, now)

    def task_notified(self, wid: WorkerId, msg: TaskNotification) -> None:
        job_id, task_id = split_key(msg.key)
        self.clients.notify(job_id, task_id, wid, msg.message)

    def task_results(self, wid: WorkerId, results: tuple[ResultItem, ...], now: float) -> None:
        self.results.add(wid, results)

    def result_part(self, wid: WorkerId, msg: ResultPart, now: float) -> None:
        self.results.part(wid, msg)

    def after_turn(self, now: float) -> None:
        self.clients.answer_waiters()
        self.book.seal_completed()
        self.autoalloc.after_turn(now, self.book.next_gid)
        self.journal.journal.turn_done()
        self.clients.send_replies()  # after the write: an answered change is in the journal

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

    def _release_results(self, job_ids: tuple[JobId, ...]) -> None:
        for wid in list(self.loop.links):
            self.loop.out.send(wid, ReleaseResults(job_ids))

    def _cancel_groups(self, gids: Sequence[GroupId], now: float) -> None:
        reactor.cancel_groups(self.core, self.loop.out, gids, now)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass
