"""Automatic allocation, assembled: the `hq alloc` requests, the scheduling tick, status polls,
workers joining and leaving, the journal, and server stop.

Everything runs on the server's thread; only the batch commands (and removing old directories)
run in the ``Runner``'s threads, whose answers come back as callbacks on this thread. The
decisions are the pure modules' (``planner``, ``reconcile``); this module carries them out and
journals what changed.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hqshm.cluster.core import Core
from hqshm.errors import UserError
from hqshm.link.allocrequests import (
    AllocAddRequest,
    AllocationView,
    AllocDryRunRequest,
    AllocInfoRequest,
    AllocInfoResponse,
    AllocListRequest,
    AllocLogRequest,
    AllocPathResponse,
    AllocQueueCreated,
    AllocQueueRequest,
    AllocQueuesResponse,
    QueueView,
)
from hqshm.link.responses import Ack, ErrorResponse
from hqshm.model.allocqueue import QueueParams
from hqshm.model.workerconfig import WorkerConfiguration
from hqshm.server.autoalloc import parsers, planner, reconcile, script
from hqshm.server.autoalloc.demand import queue_demand
from hqshm.server.autoalloc.state import (
    ENDED,
    PAUSED,
    RUNNING,
    Allocation,
    Queue,
    Tunables,
    id_order,
)
from hqshm.server.journal.allocrecords import (
    AllocCountersRecord,
    AllocQueuedRecord,
    AllocStateRecord,
    QueueCreatedRecord,
    QueueRemovedRecord,
    QueueResourcesRecord,
    QueueStateRecord,
)
from hqshm.server.rpc import DEFERRED

if TYPE_CHECKING:  # the runner (threads, subprocess) is imported when first used
    from hqshm.server.autoalloc.runner import CommandResult, Runner

logger = logging.getLogger("hqshm.server.autoalloc")
SUBMIT_TIMEOUT = 120.0

CANCEL_TIMEOUT = 10.0


def hq_program() -> str:
    """The absolute `hq` of this installation (the venv's, next to the interpreter)."""
    candidate = Path(sys.executable).parent / "hq"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("hq")
    return str(Path(found).resolve()) if found else str(candidate)


def _submit_argv(manager: str) -> list[str]:
    return ["qsub" if manager == "pbs" else "sbatch", "hq-submit.sh"]


def _cancel_argv(manager: str, job_id: str) -> list[str]:
    return ["qdel" if manager == "pbs" else "scancel", job_id]


def _parse_job_id(manager: str, stdout: str) -> str:
    return parsers.parse_qsub(stdout) if manager == "pbs" else parsers.parse_sbatch(stdout)


class AutoAlloc:
    def __init__(self, core: Core, instance_dir: Callable[[], Path | None],
                 journal: Callable[[object], None],
                 add_reader: Callable[[int, Callable[[], object]], None],
                 reply: Callable[[bytes, object], None], identity: Callable[[], bytes],
                 env: dict[str, str], tunables: Tunables | None = None) -> None:
        self.core = core
        self.instance_dir = instance_dir
        self.journal = journal
        self.add_reader = add_reader
        self.reply = reply
        self.identity = identity
        self.env = env
        self.tun = tunables or Tunables.from_env(env)
        self.queues: dict[int, Queue] = {}
        self.next_queue_id = 1
        self.by_alloc: dict[str, int] = {}  # allocation id -> queue id
        self.by_worker: dict[int, str] = {}  # worker id -> allocation id
        # Workers of a batch job not known (yet): one may register before its sbatch answers.
        self.strangers: dict[int, tuple[WorkerConfiguration, float]] = {}
        self.polling: set[int] = set()  # queues with a status poll in flight
        self.ended_dirs: dict[int, deque[str]] = {}  # queue -> dirs of ended allocations
        self._runner: Runner | None = None
        self._dry_runs = 0
        self._last_gid_seen = -1
        self._last_tick = 0.0

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            from hqshm.server.autoalloc.runner import Runner

            self._runner = Runner(self.add_reader, self.env)
        return self._runner

    def handlers(self) -> dict[type, Callable[..., object]]:
        return {AllocAddRequest: self.add, AllocDryRunRequest: self.dry_run,
                AllocListRequest: self.list, AllocInfoRequest: self.info,
                AllocQueueRequest: self.queue_action, AllocLogRequest: self.log}

    # --- requests -------------------------------------------------------------------------

    def _queue(self, queue_id: int) -> Queue:
        queue = self.queues.get(queue_id)
        if queue is None:
            raise UserError(f"Queue {queue_id} not found")
        return queue

    def add(self, request: AllocAddRequest, now: float) -> object:
        params = request.params
        resources = params.declared_resources()  # raises on a bad definition
        if not request.dry_run:
            return AllocQueueCreated(self._create(params, resources, now))
        identity = self.identity()

        def done(error: str | None) -> None:
            if error is not None:
                self.reply(identity, ErrorResponse(error))
            else:
                self.reply(identity, AllocQueueCreated(self._create(params, resources,
                                                                    now)))

        self._trial(params, done)
        return DEFERRED

    def dry_run(self, request: AllocDryRunRequest, now: float) -> object:
        request.params.declared_resources()
        identity = self.identity()
        self._trial(request.params, lambda error: self.reply(
            identity, Ack() if error is None else ErrorResponse(error)))
        return DEFERRED

    def _create(self, params: QueueParams, resources: object, now: float) -> int:
        queue_id = self.next_queue_id
        self.next_queue_id += 1
        self.queues[queue_id] = Queue(queue_id, params, params.declared_resources(),
                                      created_at=now)
        self.journal(QueueCreatedRecord(queue_id, params, now))
        logger.info("Allocation queue %d created", queue_id)
        return queue_id

    def list(self, request: AllocListRequest, now: float) -> AllocQueuesResponse:
        return AllocQueuesResponse(tuple(self._view(q) for q in self.queues.values()))

    def info(self, request: AllocInfoRequest, now: float) -> AllocInfoResponse:
        queue = self._queue(request.queue_id)
        allocations = sorted(queue.allocations.values(), key=lambda a: id_order(a.id))
        if request.filter is not None:
            allocations = [a for a in allocations if a.state == request.filter]
        return AllocInfoResponse(self._view(queue), tuple(
            AllocationView(a.id, queue.id, a.state, a.workdir, a.target_workers, a.queued_at,
                           a.started_at, a.ended_at, a.end_reason) for a in allocations))

    def _view(self, q: Queue) -> QueueView:
        return QueueView(q.id, q.params, q.state, q.resources, q.reason, q.auto_paused,
                         q.retry_at, q.next_submit_at or None, q.failed_submissions,
                         q.failed_allocations, q.last_failure)

    def queue_action(self, request: AllocQueueRequest, now: float) -> Ack:
        queue = self._queue(request.queue_id)
        if request.action == "pause":
            planner.pause(queue)
            self.journal(QueueStateRecord(queue.id, True, False, now))
        elif request.action == "resume":
            planner.resume(queue)
            self.journal(QueueStateRecord(queue.id, False, False, now))
            self._last_tick = 0.0
        else:
            self._remove(queue, request.force, now)
        return Ack()

    def _remove(self, queue: Queue, force: bool, now: float) -> None:
        running = [a for a in queue.allocations.values() if a.state == RUNNING]
        if running and not force:
            raise UserError("Allocation queue has running jobs, so it will not be removed. "
                            "Use `--force` if you want to remove the queue anyway")
        for alloc in queue.allocations.values():
            if alloc.active:
                self._cancel(queue, alloc)
        queue.removing = True
        del self.queues[queue.id]
        self.journal(QueueRemovedRecord(queue.id, now))
        logger.info("Allocation queue %d removed", queue.id)

    def log(self, request: AllocLogRequest, now: float) -> AllocPathResponse:
        queue_id = self.by_alloc.get(request.allocation_id)
        queue = self.queues.get(queue_id) if queue_id is not None else None
        alloc = queue.allocations.get(request.allocation_id) if queue is not None else None
        if alloc is None:
            raise UserError(f"Allocation {request.allocation_id} not found")
        return AllocPathResponse(str(Path(alloc.workdir) / request.channel))

    # --- submitting -----------------------------------------------------------------------

    def _script(self, queue_id: int, params: QueueParams, counter: int, workers: int,
                directory: Path, dry_run: bool = False) -> str:
        instance = self.instance_dir()
        assert instance is not None
        command = script.worker_command(params, hq_program(), instance,
                                        self.env.get("RUST_LOG"))
        name = script.allocation_name(queue_id, params, counter)
        return script.batch_script(params, name, workers, directory, command, dry_run)

    def _trial(self, params: QueueParams, done: Callable[[str | None], None]) -> None:
        """Submit a test allocation and cancel it at once; ``done(None)`` or the error."""
        instance = self.instance_dir()
        if instance is None:
            done("the server has no instance directory yet")
            return
        root = instance / "autoalloc"
        root.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="dry-run-", dir=root))
        self._dry_runs += 1
        text = self._script(0, params, self._dry_runs, 1, directory, dry_run=True)
        (directory / "hq-submit.sh").write_text(text)

        def submitted(result: CommandResult) -> None:
            job_id, error = self._job_id(params.manager, result)
            if job_id is None:
                shutil.rmtree(directory, ignore_errors=True)
                done(f"Could not submit allocation: {error}")
                return

            def canceled(cancel: CommandResult) -> None:
                shutil.rmtree(directory, ignore_errors=True)
                done(None if cancel.ok else
                     f"Could not cancel allocation {job_id}: {cancel.error()}")

            self.runner.run(_cancel_argv(params.manager, job_id), directory, canceled)

        self.runner.run(_submit_argv(params.manager), directory, submitted, SUBMIT_TIMEOUT)

    @staticmethod
    def _job_id(manager: str, result: CommandResult) -> tuple[str | None, str]:
        if not result.ok:
            return None, result.error()
        try:
            return _parse_job_id(manager, result.stdout), ""
        except parsers.ParseError as exc:
            return None, str(exc)

    def _submit(self, queue: Queue, workers: int, now: float) -> None:
        instance = self.instance_dir()
        if instance is None:
            return
        queue.counter += 1
        counter = queue.counter
        directory = script.allocation_dir(instance, queue.id, queue.params, counter)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hq-submit.sh").write_text(
                self._script(queue.id, queue.params, counter, workers, directory))
        except OSError as exc:
            self._submission_failed(queue, f"cannot write the allocation directory: {exc}",
                                    now, directory)
            return
        queue.in_flight += 1
        queue.in_flight_workers += workers

        def submitted(result: CommandResult) -> None:
            queue.in_flight -= 1
            queue.in_flight_workers -= workers
            job_id, error = self._job_id(queue.params.manager, result)
            at = result_time()
            if job_id is None:
                self._submission_failed(queue, error, at, directory)
                return
            try:
                (directory / "jobid").write_text(job_id)
            except OSError:
                logger.warning("Cannot write %s", directory / "jobid")
            alloc = Allocation(job_id, queue.id, counter, workers, str(directory), at)
            queue.allocations[job_id] = alloc
            self.by_alloc[job_id] = queue.id
            planner.submission_succeeded(queue)
            self.journal(AllocQueuedRecord(queue.id, job_id, counter, workers, str(directory),
                                           at))
            logger.info("Queued allocation %s (%d workers) of queue %d", job_id, workers,
                        queue.id)
            for wid, (config, since) in list(self.strangers.items()):
                if config.manager_job_id == job_id:
                    self.worker_connected(wid, config, since)
            if queue.removing:
                self._cancel(queue, alloc)

        self.runner.run(_submit_argv(queue.params.manager), directory, submitted,
                        SUBMIT_TIMEOUT)

    def _submission_failed(self, queue: Queue, error: str, now: float,
                           directory: Path) -> None:
        logger.warning("Could not submit allocation for queue %d: %s", queue.id, error)
        # Its directory (the script that failed) is kept like an ended allocation's, within
        # the same bound: a queue retrying with back-off must not fill the disk with them.
        self._retire_dir(queue, str(directory))
        message = planner.submission_failed(queue, error, now, self.tun)
        if message is not None:
            logger.warning("%s", message)
            self.journal(QueueStateRecord(queue.id, True, True, now))

    def _cancel(self, queue: Queue, alloc: Allocation) -> None:
        if alloc.cancel_requested:
            return
        alloc.cancel_requested = True
        job_id = alloc.id

        def canceled(result: CommandResult) -> None:
            if not result.ok:
                logger.warning("Could not cancel allocation %s: %s", job_id, result.error())

        self.runner.run(_cancel_argv(queue.params.manager, job_id), None, canceled)

    # --- the tick and polls ---------------------------------------------------------------

    def after_turn(self, now: float, next_gid: int) -> None:
        """New tasks get an allocator's look soon (not only on the next tick), once the
        scheduler has placed what the workers can take: a pass put off to a later turn (a
        busy server spaces them) left a new task waiting beside a free worker, and the
        allocator asked for a new one for it."""
        if (self.queues and next_gid != self._last_gid_seen
                and not self.core.needs_scheduling
                and now - self._last_tick >= min(0.2, self.tun.schedule_tick)):
            self._last_gid_seen = next_gid
            self.tick(now)

    def tick(self, now: float) -> None:
        self._last_tick = now
        for queue in list(self.queues.values()):
            try:
                params = queue.params
                demand = queue_demand(self.core, queue.resources, params.worker_limit,
                                      params.max_workers_per_alloc)
                decision = planner.plan(queue, demand, now)
                queue.reason = decision.reason
                for workers in decision.submit:
                    self._submit(queue, workers, now)
                self._check_suspects(queue)
            except Exception:  # noqa: BLE001 - the last resort: one queue's bug, not all
                logger.exception("Automatic allocation of queue %d failed", queue.id)

    def poll(self, now: float) -> None:
        for queue in list(self.queues.values()):
            active = [a for a in queue.allocations.values() if a.active]
            if not active or queue.id in self.polling:
                continue
            try:
                self._poll_queue(queue, active)
            except Exception:  # noqa: BLE001 - the last resort
                logger.exception("Polling allocations of queue %d failed", queue.id)

    def _poll_queue(self, queue: Queue, active: list[Allocation]) -> None:
        ids = [a.id for a in active]
        asked = result_time()
        if queue.params.manager == "pbs":
            argv = ["qstat"]
            for job_id in ids:
                argv += ["-f", job_id]
            argv += ["-F", "json", "-x"]
            self.polling.add(queue.id)

            def answered(result: CommandResult) -> None:
                self.polling.discard(queue.id)
                at = result_time()
                try:
                    found = parsers.parse_qstat(result.stdout, ids)
                except parsers.ParseError as exc:
                    error = result.error() if not result.ok else str(exc)
                    for job_id in ids:
                        self._verdict(queue, job_id, lambda a: reconcile.status_failed(
                            a, error, at), at, asked)
                    return
                for job_id in ids:
                    status = found.get(job_id)
                    if status is None:
                        self._verdict(queue, job_id, lambda a: reconcile.status_missing(a, at),
                                      at, asked)
                    else:
                        self._verdict(queue, job_id, lambda a, s=status:
                                      reconcile.status_reported(a, s, at), at, asked)

            self.runner.run(argv, None, answered)
            return
        self.polling.add(queue.id)
        left = [len(ids)]
        for job_id in ids:
            def answered_one(result: CommandResult, job_id: str = job_id) -> None:
                left[0] -= 1
                if left[0] == 0:
                    self.polling.discard(queue.id)
                at = result_time()
                if not result.ok:
                    if result.returncode is not None and parsers.scontrol_missing(result.stderr):
                        self._verdict(queue, job_id, lambda a: reconcile.status_missing(a, at),
                                      at, asked)
                    else:
                        error = result.error()
                        self._verdict(queue, job_id, lambda a: reconcile.status_failed(
                            a, error, at), at, asked)
                    return
                try:
                    status = parsers.parse_scontrol_job(result.stdout)
                except parsers.ParseError as exc:
                    text = str(exc)
                    self._verdict(queue, job_id, lambda a: reconcile.status_failed(a, text, at),
                                  at, asked)
                    return
                self._verdict(queue, job_id, lambda a: reconcile.status_reported(a, status, at),
                              at, asked)

            self.runner.run(["scontrol", "show", "job", job_id], None, answered_one)

    def _verdict(self, queue: Queue, job_id: str,
                 step: Callable[[Allocation], reconcile.Verdict], now: float,
                 asked: float | None = None) -> None:
        """Apply one piece of news; ``asked``: when the poll that brought it was sent (an
        answer sent before an allocation became suspect cannot explain why it ended)."""
        alloc = queue.allocations.get(job_id)
        if alloc is None:
            return
        if asked is not None and alloc.suspect_at is not None and asked < alloc.suspect_at:
            return
        before = alloc.state
        verdict = step(alloc)
        if alloc.state != before:
            at = alloc.started_at if alloc.state == RUNNING else alloc.ended_at
            self.journal(AllocStateRecord(queue.id, alloc.id, alloc.state, at or now))
            if alloc.state == RUNNING:
                logger.info("Allocation %s is running", alloc.id)
        if verdict is not None:
            self._ended(queue, alloc, verdict, now)

    def _ended(self, queue: Queue, alloc: Allocation, verdict: tuple[bool, str],
               now: float) -> None:
        failed, why = verdict
        logger.info("Allocation %s %s: %s", alloc.id, alloc.state, why)
        message = planner.allocation_ended(queue, failed, f"allocation {alloc.id}: {why}", now,
                                           self.tun)
        if message is not None:
            logger.warning("%s", message)
            self.journal(QueueStateRecord(queue.id, True, True, now))
        self._forget_old(queue, alloc)

    def _forget_old(self, queue: Queue, alloc: Allocation) -> None:
        """Keep the directories of the ``keep_dirs`` most recently ended allocations, and
        remember at most ``keep_ended`` ended allocations."""
        self._retire_dir(queue, alloc.workdir)
        ended = [a for a in queue.allocations.values() if a.state in ENDED]
        for gone in sorted(ended, key=lambda a: a.counter)[:max(0, len(ended)
                                                                 - self.tun.keep_ended)]:
            del queue.allocations[gone.id]
            self.by_alloc.pop(gone.id, None)

    def _retire_dir(self, queue: Queue, workdir: str) -> None:
        """A directory no active allocation uses any more; the oldest beyond ``keep_dirs``
        are removed (in the runner's thread)."""
        old = planner.retire_dir(self.ended_dirs.setdefault(queue.id, deque()), workdir,
                                 self.tun.keep_dirs)
        if old:
            self.runner.call(lambda: [shutil.rmtree(d, ignore_errors=True) for d in old])

    # --- workers --------------------------------------------------------------------------

    def worker_connected(self, wid: int, config: WorkerConfiguration, now: float) -> None:
        job_id = config.manager_job_id
        if job_id is None:
            return
        if job_id not in self.by_alloc:
            if self.queues:
                self.strangers[wid] = (config, now)
            return
        self.strangers.pop(wid, None)
        queue = self.queues.get(self.by_alloc[job_id])
        if queue is None or queue.params.manager_name != config.manager.upper():
            return
        alloc = queue.allocations.get(job_id)
        if alloc is None:
            return
        self.by_worker[wid] = job_id
        self._verdict(queue, job_id, lambda a: reconcile.worker_connected(a, wid, now), now)
        if queue.resources is None:
            queue.resources = config.resources
            self.journal(QueueResourcesRecord(queue.id, config.resources))
            logger.info("Queue %d learned its worker resources from worker %d", queue.id, wid)

    def worker_lost(self, wid: int, reason: str, now: float) -> None:
        self.strangers.pop(wid, None)
        job_id = self.by_worker.pop(wid, None)
        if job_id is None:
            return
        queue = self.queues.get(self.by_alloc.get(job_id, -1))
        if queue is not None:
            limit = queue.params.worker_limit
            self._verdict(queue, job_id, lambda a: reconcile.worker_lost(a, wid, reason, now,
                                                                         limit), now)
            self._check_suspects(queue)

    def _check_suspects(self, queue: Queue) -> None:
        """Ask the batch system why allocations whose workers all died at once ended."""
        suspects = [a for a in queue.allocations.values()
                    if a.active and a.suspect_at is not None]
        if suspects and queue.id not in self.polling:
            self._poll_queue(queue, suspects)

    # --- stop, journal --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Server stop: cancel every queued and running allocation (waits, within bounds)."""
        import subprocess
        import time

        procs = []
        for queue in self.queues.values():
            for alloc in queue.allocations.values():
                if alloc.active:
                    try:
                        procs.append((alloc.id, subprocess.Popen(
                            _cancel_argv(queue.params.manager, alloc.id), env=self.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)))
                    except OSError as exc:
                        logger.warning("Could not cancel allocation %s: %s", alloc.id, exc)
        deadline = time.monotonic() + CANCEL_TIMEOUT
        for job_id, proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                logger.warning("Could not cancel allocation %s: it took too long", job_id)
        if self._runner is not None:
            self._runner.close()

    def snapshot(self) -> Iterator[object]:
        yield AllocCountersRecord(self.next_queue_id)
        for q in self.queues.values():
            yield QueueCreatedRecord(q.id, q.params, q.created_at)
            if q.state == PAUSED:
                yield QueueStateRecord(q.id, True, q.auto_paused, 0.0)
            if q.resources is not None and q.params.cpus is None:
                yield QueueResourcesRecord(q.id, q.resources)
            for a in q.allocations.values():
                yield AllocQueuedRecord(q.id, a.id, a.counter, a.target_workers, a.workdir,
                                        a.queued_at)
                if a.started_at is not None:
                    yield AllocStateRecord(q.id, a.id, RUNNING, a.started_at)
                if a.state in ENDED:
                    yield AllocStateRecord(q.id, a.id, a.state, a.ended_at or a.queued_at)

    def restore(self, records: Iterable[object], now: float) -> None:
        for r in records:
            try:
                self._restore_one(r, now)
            except Exception as exc:  # noqa: BLE001 - a bad record must not stop the server
                logger.warning("Journal record %s could not be applied and was skipped: %s",
                               type(r).__name__, exc)
        for queue in self.queues.values():  # old directories stay bounded across restarts
            ended = sorted((a for a in queue.allocations.values() if a.state in ENDED),
                           key=lambda a: a.counter)
            self.ended_dirs[queue.id] = deque(a.workdir for a in ended)

    def _restore_one(self, r: object, now: float) -> None:
        match r:
            case AllocCountersRecord():
                self.next_queue_id = max(self.next_queue_id, r.next_queue_id)
            case QueueCreatedRecord():
                self.queues[r.queue_id] = Queue(r.queue_id, r.params,
                                                r.params.declared_resources(),
                                                created_at=r.at)
                self.next_queue_id = max(self.next_queue_id, r.queue_id + 1)
            case QueueRemovedRecord():
                queue = self.queues.pop(r.queue_id, None)
                for job_id in queue.allocations if queue is not None else ():
                    self.by_alloc.pop(job_id, None)
            case QueueStateRecord():
                queue = self.queues.get(r.queue_id)
                if queue is not None:
                    if r.paused:
                        planner.pause(queue)
                        if r.auto:  # a restarted server retries it after the first back-off
                            queue.auto_paused = True
                            queue.retry_at = now + self.tun.pause_retry
                    else:
                        planner.resume(queue)
            case QueueResourcesRecord():
                queue = self.queues.get(r.queue_id)
                if queue is not None:
                    queue.resources = r.resources
            case AllocQueuedRecord():
                queue = self.queues.get(r.queue_id)
                if queue is not None:
                    queue.allocations[r.allocation_id] = Allocation(
                        r.allocation_id, r.queue_id, r.counter, r.workers, r.workdir, r.at)
                    queue.counter = max(queue.counter, r.counter)
                    self.by_alloc[r.allocation_id] = r.queue_id
            case AllocStateRecord():
                queue = self.queues.get(r.queue_id)
                alloc = queue.allocations.get(r.allocation_id) if queue is not None else None
                if alloc is not None:
                    alloc.state = r.state
                    if r.state == RUNNING:
                        alloc.started_at = r.at
                    elif r.state in ENDED:
                        alloc.ended_at = r.at


def result_time() -> float:
    import time

    return time.time()
