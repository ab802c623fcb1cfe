"""Jobs: what users submitted, and every task's history, kept by column.

The book is the product's side of the cluster core: it turns submits into core groups and
implements ``TaskEvents`` to record what the core reports. Every change of its state is an
event (``server.events``): a request handler or a core report checks what it must, builds the
event, applies it, and publishes it to the book's sink. Applying is the only way state changes,
and ``apply`` alone replays a recorded event, so a fresh book fed the stream reaches the same
state. Side effects on the core (killing the tasks of a canceled job) are the handlers' and are
never replayed. Time is always passed in; the book reads no clock.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

from hqshm.cluster.core import FailedForGood
from hqshm.cluster.firstuse import np
from hqshm.cluster.ids import (
    KEY_SHIFT,
    MAX_JOB_ID,
    TASK_MASK,
    GroupId,
    InstanceId,
    JobId,
    TaskId,
    TaskKey,
    WorkerId,
    split_key,
    task_key,
)
from hqshm.cluster.protocol import Finished, Started
from hqshm.model.submission import ArraySubmission, GraphSubmission
from hqshm.model.taskstates import TaskState
from hqshm.model.tasktable import TaskTable
from hqshm.server.events import (
    Event,
    EventSink,
    JobAborted,
    JobCanceled,
    JobClosed,
    JobOpened,
    JobsForgotten,
    JobSubmitted,
    TaskNodesReserved,
    TasksAborted,
    TasksAdopted,
    TasksCrashed,
    TasksFailed,
    TasksFinished,
    TasksRequeued,
    TasksStarted,
    WorkerConnected,
    WorkerLost,
)
from hqshm.server.jobs import (
    NEVER_RESTART_ERROR,
    Job,
    JobIdsExhausted,
    JobNotFound,
    JobNotOpened,
    NewGroup,
    Submit,
    crash_error,
)
from hqshm.server.jobstore import JobStore
from hqshm.server.submits import core_group, plan_array, plan_graph
from hqshm.server.workers import WorkerBook

logger = logging.getLogger(__name__)

# States are read with ``.item(row)``: NumPy 2 compares a numpy scalar with an IntEnum through
# its slow object path (about 20 us), which once cost the server half its time per task.
UNFINISHED = (TaskState.WAITING, TaskState.RUNNING)
assert max(UNFINISHED) < min(set(TaskState) - set(UNFINISHED)), "unfinished() compares"
# Batches of task reports up to this many keys are located key by key: the vectorised path
# costs about 150 us of fixed numpy overhead, the scalar one about 10 us a key.
FEW_KEYS = 8


def unfinished(states: np.ndarray) -> np.ndarray:
    """Which of these states are WAITING or RUNNING (``np.isin`` sorts: 40 us for one)."""
    return states <= TaskState.RUNNING


class JobBook:
    """All jobs; implements ``cluster.core.TaskEvents``."""

    def __init__(self, server_uid: str, workers: WorkerBook, events: EventSink) -> None:
        self.server_uid = server_uid
        self.workers = workers
        self.events = events
        self.next_job_id = JobId(1)
        self.next_gid = GroupId(1)
        self.by_gid: dict[GroupId, Submit] = {}
        self.jobs = JobStore(self.by_gid)
        # Set by the server: drop every unfinished task of these core groups.
        self.cancel_groups: Callable[[Sequence[GroupId], float], None] = lambda gids, now: None

    def _record(self, event: Event) -> None:
        self.apply(event)
        self.events.emit(event)

    # --- requests -------------------------------------------------------------------------

    def _target_job(self, job_id: JobId | None, name: str, max_fails: int | None,
                    submit_dir: str, now: float) -> Job:
        """The open job a submit goes into, or the new job it makes (not in the book yet)."""
        if job_id is not None:
            job = self.jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id=job_id)
            if not job.is_open:
                raise JobNotOpened(job_id=job_id)
            return job
        return Job(self._new_job_id(), name, max_fails, submit_dir, now)

    def _new_job_id(self) -> JobId:
        if self.next_job_id > MAX_JOB_ID:  # a key holds 32 bits of job id
            raise JobIdsExhausted(max_id=MAX_JOB_ID)
        return self.next_job_id

    def submit(self, req: ArraySubmission, now: float) -> tuple[Job, list[NewGroup]]:
        """An array-style submit: one template, many ids (hq submit, job-file [array])."""
        target = self._target_job(req.job_id, req.name, req.max_fails, req.submit_dir, now)
        plan = plan_array(self.jobs.view, target, req, self.next_gid, self.server_uid)
        self._record(JobSubmitted(target.id, target.name, target.max_fails, req.submit_dir,
                                  (plan.submit,), now))
        job = self.jobs[target.id]
        submit = self.by_gid[plan.submit.gid]
        logger.info("Job %d submitted with %d tasks", job.id, len(submit.table))
        if plan.dead:
            # A prerequisite already failed: these tasks can never run (spec/jobs.md §8.2).
            self._record(TasksAborted((), ((job.id, submit.gid),), now))
            return job, []
        return job, [NewGroup(core_group(job.id, submit), None, tuple(plan.after))]

    def submit_graph(self, req: GraphSubmission, now: float) -> tuple[Job, list[NewGroup]]:
        """Individual tasks with dependencies (job files' [[task]]): one group per template."""
        target = self._target_job(req.job_id, req.name, req.max_fails, req.submit_dir, now)
        plan = plan_graph(target, req, self.next_gid, self.server_uid)
        self._record(JobSubmitted(target.id, target.name, target.max_fails, req.submit_dir,
                                  tuple(plan.submits), now))
        job = self.jobs[target.id]
        logger.info("Job %d submitted with %d tasks", job.id, len(req.tasks))
        groups = [NewGroup(core_group(job.id, self.by_gid[s.gid]), plan.deps)
                  for s in plan.submits]
        if plan.dead:
            self.tasks_aborted([task_key(job.id, t) for t in plan.dead], (), now)
        return job, groups

    def open_job(self, name: str, max_fails: int | None, now: float) -> Job:
        job_id = self._new_job_id()
        self._record(JobOpened(job_id, name, max_fails, now))
        return self.jobs[job_id]

    def close(self, job: Job, now: float) -> bool:
        """Close an open job; False if it was closed already."""
        if not job.is_open:
            return False
        self._record(JobClosed(job.id, now))
        return True

    def forget(self, job_ids: Sequence[JobId], states: Iterable[str], now: float
               ) -> tuple[int, int]:
        """Drop completed jobs in these states from memory: (forgotten, ignored)."""
        wanted = {s.upper() for s in states}
        forgotten = []
        for job_id in dict.fromkeys(job_ids):  # a selector may name a job twice
            job = self.jobs.peek(job_id)
            if job is not None and job.completed and job.state in wanted:
                forgotten.append(job_id)
        if forgotten:
            self._record(JobsForgotten(tuple(forgotten), now))
        return len(forgotten), len(job_ids) - len(forgotten)

    def cancel(self, job: Job, reason: str | None, now: float) -> tuple[int, int]:
        """Cancel every unfinished task; returns (canceled, already completed)."""
        canceled = job.unfinished
        gids = _unfinished_gids(job)
        self._record(JobCanceled(job.id, reason, now))
        if gids:
            self.cancel_groups(gids, now)
        return canceled, job.task_count - canceled

    def last_job_id(self) -> JobId | None:
        return max(self.jobs) if self.jobs else None

    # --- TaskEvents -----------------------------------------------------------------------

    def tasks_started(self, worker: WorkerId, started: Sequence[Started], now: float) -> None:
        event = TasksStarted(worker, started, now)
        self._apply_started(event)
        self.events.emit(event)

    def tasks_finished(self, worker: WorkerId, finished: Sequence[Finished],
                       now: float) -> None:
        event = TasksFinished(worker, finished, now)
        self._apply_finished(event)
        self.events.emit(event)

    def tasks_failed(self, worker: WorkerId, failed: Sequence[FailedForGood],
                     now: float) -> None:
        # A failure that takes a job past --max-fails aborts the rest of it before the next
        # report is read (spec/jobs.md §8.1), so the batch is cut there into two events.
        while failed:
            event = TasksFailed(worker, failed, now)
            applied, over = self._apply_failed(event)
            if applied < len(failed):
                event = TasksFailed(worker, failed[:applied], now)
            self.events.emit(event)
            if over is not None:
                self._abort(over, now)
            failed = failed[applied:]

    def tasks_requeued(self, keys: Sequence[TaskKey], instances: Sequence[InstanceId],
                       now: float, crashes: Sequence[int] = ()) -> None:
        self._record(TasksRequeued(keys, instances, now, crashes))

    def tasks_crashed(self, worker: WorkerId, keys: Sequence[TaskKey], crashes: Sequence[int],
                      never_restart: bool, now: float) -> None:
        while keys:  # cut at --max-fails, as tasks_failed does
            event = TasksCrashed(worker, keys, crashes, never_restart, now)
            applied, over = self._apply_crashed(event)
            if applied < len(keys):
                event = TasksCrashed(worker, keys[:applied], crashes[:applied], never_restart,
                                     now)
            self.events.emit(event)
            if over is not None:
                self._abort(over, now)
            keys, crashes = keys[applied:], crashes[applied:]

    def tasks_aborted(self, keys: Sequence[TaskKey], gids: Sequence[GroupId],
                      now: float) -> None:
        """Dependencies failed: these tasks, and whole submits, will never run."""
        submits = tuple((self.by_gid[g].program.job_id, g) for g in gids if g in self.by_gid)
        if keys or submits:
            self._record(TasksAborted(keys, submits, now))

    def tasks_adopted(self, worker: WorkerId, keys: Sequence[TaskKey], now: float) -> None:
        self._record(TasksAdopted(worker, keys, now))

    def task_nodes(self, key: TaskKey, workers: Sequence[WorkerId], now: float) -> None:
        self._record(TaskNodesReserved(key, tuple(workers), now))

    def _abort(self, job: Job, now: float) -> None:
        """More failures than --max-fails: abort the rest of the job, and kill what runs."""
        gids = _unfinished_gids(job)
        self._record(JobAborted(job.id, now))
        self.cancel_groups(gids, now)

    # --- applying events ------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Change the state as the event says: for the book's own events, and for replay."""
        match event:
            case TasksStarted():
                self._apply_started(event)
            case TasksFinished():
                self._apply_finished(event)
            case TasksFailed():
                applied, _ = self._apply_failed(event)
                assert applied == len(event.failed), "a max-fails cut inside one event"
            case TasksCrashed():
                applied, _ = self._apply_crashed(event)
                assert applied == len(event.keys), "a max-fails cut inside one event"
            case TasksRequeued():
                self._apply_requeued(event)
            case TasksAborted():
                self._apply_aborted(event)
            case TaskNodesReserved():
                self._apply_nodes(event)
            case TasksAdopted():
                self._apply_adopted(event)
            case JobSubmitted():
                self._apply_submitted(event)
            case JobOpened():
                self._register(Job(event.job_id, event.name, event.max_fails, "", event.at,
                                   is_open=True))
            case JobClosed():
                job = self.jobs[event.job_id]
                job.is_open = False
                self._after_change(job, event.at)
            case JobCanceled():
                job = self.jobs[event.job_id]
                canceled = self._stop_unfinished(job, TaskState.CANCELED, event.at)
                if canceled and event.reason is not None:
                    job.cancel_reason = event.reason
            case JobAborted():
                self._stop_unfinished(self.jobs[event.job_id], TaskState.ABORTED, event.at)
            case JobsForgotten():
                for job_id in event.job_ids:
                    self.jobs.remove(job_id)
                self.jobs.settle()
            case WorkerConnected() | WorkerLost():
                self.workers.apply(event)

    def _apply_adopted(self, event: TasksAdopted) -> None:
        """Tasks now run on the reconnected node's registration; those whose start the journal
        never had start now (their real start time is the node's, unknown here)."""
        for job, submit, rows, _items in self._locate(np.array(event.keys, dtype=np.uint64)):
            table = submit.table
            rows = rows[unfinished(table.state[rows])]
            waiting = rows[table.state[rows] == TaskState.WAITING]
            table.set_states(waiting, TaskState.RUNNING)
            table.started[waiting] = event.at
            table.worker[rows] = event.worker
            if len(rows):
                job.worker_ids.add(event.worker)

    def _register(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.next_job_id = max(self.next_job_id, JobId(job.id + 1))

    def _apply_submitted(self, event: JobSubmitted) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            job = Job(event.job_id, event.name, event.max_fails, event.submit_dir, event.at)
            self._register(job)
        job.submit_dir = job.submit_dir or event.submit_dir
        job.finished_at = None
        submits = []
        for new in event.submits:
            entries = list(new.entries) if new.entries is not None else None
            submit = Submit(new.gid, new.template, new.program, TaskTable(new.ids), entries,
                            new.batch, new.is_array, dict(new.deps), after=new.after,
                            after_keys=new.after_keys)
            self.by_gid[submit.gid] = submit
            submits.append(submit)
            self.next_gid = max(self.next_gid, GroupId(submit.gid + 1))
        job.add_submits(submits)

    def _find(self, key: TaskKey) -> tuple[Job, Submit, int] | None:
        job_id, task_id = split_key(key)
        job = self.jobs.get(job_id)
        if job is None:
            return None
        found = job.locate(task_id)
        if found is None:
            return None
        return job, found[0], found[1]

    def _apply_started(self, event: TasksStarted) -> None:
        started = event.started
        if len(started) <= FEW_KEYS:
            self._started_few(event.worker, started)
        else:
            keys, instances, times, _variants = (np.array(c) for c in zip(*started,
                                                                         strict=True))
            self.apply_started(event.worker, keys, instances, times)

    def _apply_finished(self, event: TasksFinished) -> None:
        finished = event.finished
        if len(finished) <= FEW_KEYS:
            self._finished_few(event.worker, finished, event.at)
        else:
            keys, instances, starts, ends, _variants = (np.array(c) for c in zip(
                *finished, strict=True))
            self.apply_finished(event.worker, keys, instances, starts, ends, event.at)

    def _started_few(self, worker: WorkerId, started: Sequence[Started]) -> None:
        """``apply_started`` of a short report (most reports of short tasks), task by task
        with scalars: a dozen numpy calls on one-element arrays cost more than the task."""
        last = None
        for key, instance, time, _variant in started:
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            table = submit.table
            if table.state.item(row) != TaskState.WAITING:
                continue
            table.set_state(row, TaskState.RUNNING)
            table.instance[row] = instance
            table.worker[row] = worker
            table.started[row] = time
            job.worker_ids.add(worker)
            last = (job.id, TaskId(table.ids.item(row)), time)
        self._note_last_task(worker, last)

    def _finished_few(self, worker: WorkerId, finished: Sequence[Finished], at: float) -> None:
        """``apply_finished`` of a short report (see ``_started_few``)."""
        last = None
        for key, instance, start, end, _variant in finished:
            found = self._find(key)
            if found is not None and self._end(*found, worker, instance, start, end,
                                               TaskState.FINISHED, at):
                last = (found[0].id, TaskId(found[1].table.ids.item(found[2])), start)
        self._note_last_task(worker, last)

    def apply_started(self, worker: WorkerId, keys: np.ndarray, instances: np.ndarray,
                      times: np.ndarray) -> None:
        """Tasks started, by column: a batch costs a few array operations per submit it
        touches, not Python work per task (the live server and the journal's replay)."""
        last = None
        for job, submit, rows, items in self._locate(keys):
            table = submit.table
            waiting = table.state[rows] == TaskState.WAITING
            rows, items = rows[waiting], items[waiting]
            if not len(rows):
                continue
            table.set_states(rows, TaskState.RUNNING)
            table.instance[rows] = instances[items]
            table.worker[rows] = worker
            table.started[rows] = times[items]
            job.worker_ids.add(worker)
            if last is None or items[-1] > last[0]:
                last = (items[-1], (job.id, table.ids.item(rows[-1]), times.item(items[-1])))
        self._note_last_task(worker, None if last is None else last[1])

    def apply_finished(self, worker: WorkerId, keys: np.ndarray, instances: np.ndarray,
                       starts: np.ndarray, ends: np.ndarray, at: float) -> None:
        """Tasks finished, by column (see ``apply_started``)."""
        last = None
        for job, submit, rows, items in self._locate(keys):
            table = submit.table
            open_ = unfinished(table.state[rows])
            rows, items = rows[open_], items[open_]
            if not len(rows):
                continue  # canceled or aborted meanwhile: the news comes too late
            table.set_states(rows, TaskState.FINISHED)
            table.instance[rows] = instances[items]
            table.worker[rows] = worker
            table.ended[rows] = ends[items]
            never = np.isnan(table.started[rows])
            table.started[rows[never]] = starts[items[never]]
            job.worker_ids.add(worker)
            self._after_change(job, at)
            if last is None or items[-1] > last[0]:
                last = (items[-1], (job.id, table.ids.item(rows[-1]), starts.item(items[-1])))
        self._note_last_task(worker, None if last is None else last[1])

    def _locate(self, keys: np.ndarray) -> Iterator[tuple[Job, Submit, np.ndarray, np.ndarray]]:
        """For each submit that holds some of ``keys``: its job, the rows, and the positions
        of those keys in ``keys`` (ascending). Keys of unknown tasks are left out. Costs
        O(k log k) for k keys, whatever the number of jobs they span or submits those have."""
        if len(keys) <= FEW_KEYS:
            yield from self._locate_few(keys)
            return
        keys = keys.astype(np.uint64, copy=False)
        job_ids = keys >> np.uint64(KEY_SHIFT)
        task_ids = (keys & np.uint64(TASK_MASK)).astype(np.uint32)
        by_job = np.argsort(job_ids, kind="stable")
        present, begins = np.unique(job_ids[by_job], return_index=True)
        ends = np.append(begins[1:], len(keys))
        for job_id, begin, end in zip(present.tolist(), begins.tolist(), ends.tolist(),
                                      strict=True):
            job = self.jobs.get(JobId(job_id))
            if job is None:
                continue
            in_job = by_job[begin:end]
            found, submit, rows = job.index.find(task_ids[in_job])
            items = in_job[found]
            if not len(items):
                continue
            if len(job.submits) == 1:
                yield job, job.submits[0], rows, items
                continue
            by_submit = np.argsort(submit, kind="stable")
            parts, starts = np.unique(submit[by_submit], return_index=True)
            for index, part in zip(parts.tolist(), np.split(by_submit, starts[1:]),
                                   strict=True):
                yield job, job.submits[index], rows[part], items[part]

    def _locate_few(self, keys: np.ndarray
                    ) -> Iterator[tuple[Job, Submit, np.ndarray, np.ndarray]]:
        """``_locate`` of a short batch (most reports of short tasks): key by key."""
        for item, key in enumerate(keys.tolist()):
            found = self._find(TaskKey(key))
            if found is not None:
                job, submit, row = found
                yield job, submit, np.array([row]), np.array([item])

    def _apply_failed(self, event: TasksFailed) -> tuple[int, Job | None]:
        """Fail tasks in order, up to one that takes its job past --max-fails: how many items
        were applied, and that job."""
        for i, (key, instance, start, end, _variant, error) in enumerate(event.failed):
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            if self._end(job, submit, row, event.worker, instance, start, end,
                         TaskState.FAILED, event.at):
                submit.table.errors[row] = error
                if _over_max_fails(job):
                    return i + 1, job
        return len(event.failed), None

    def _apply_crashed(self, event: TasksCrashed) -> tuple[int, Job | None]:
        """Like ``_apply_failed``, for tasks that crashed their worker too often."""
        for i, (key, count) in enumerate(zip(event.keys, event.crashes, strict=False)):
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            table = submit.table
            if table.state.item(row) not in UNFINISHED:
                continue
            table.set_state(row, TaskState.FAILED)
            table.ended[row] = event.at
            table.errors[row] = NEVER_RESTART_ERROR if event.never_restart else crash_error(count)
            self._after_change(job, event.at)
            if _over_max_fails(job):
                return i + 1, job
        return len(event.keys), None

    def _apply_requeued(self, event: TasksRequeued) -> None:
        crashes = event.crashes or itertools.repeat(None)
        for key, instance, count in zip(event.keys, event.instances, crashes, strict=False):
            found = self._find(key)
            if found is None:
                continue
            _job, submit, row = found
            table = submit.table
            if table.state.item(row) in UNFINISHED:
                table.set_state(row, TaskState.WAITING)
                table.instance[row] = instance
                table.started[row] = math.nan
                submit.nodes.pop(row, None)
                if count:
                    submit.crashes[row] = count

    def _apply_aborted(self, event: TasksAborted) -> None:
        touched: set[JobId] = set()
        for key in event.keys:
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            if submit.table.state.item(row) in UNFINISHED:
                submit.table.set_state(row, TaskState.ABORTED)
                submit.table.ended[row] = event.at
                touched.add(job.id)
        for job_id, gid in event.submits:
            whole = self.by_gid.get(gid)
            if whole is None:
                continue
            rows = whole.table.rows_in_states(UNFINISHED)
            whole.table.set_states(rows, TaskState.ABORTED)
            whole.table.ended[rows] = event.at
            touched.add(job_id)
        for job_id in touched:
            if job_id in self.jobs:
                self._after_change(self.jobs[job_id], event.at)

    def _apply_nodes(self, event: TaskNodesReserved) -> None:
        found = self._find(event.key)
        if found is None:
            return
        job, submit, row = found
        submit.nodes[row] = event.workers
        job.worker_ids.update(event.workers)
        # Every node of the task shows it as its last task (HQ's worker info).
        last = (job.id, submit.table.ids.item(row), event.at)
        for worker in event.workers:
            self._note_last_task(worker, last)

    def _end(self, job: Job, submit: Submit, row: int, worker: WorkerId, instance: InstanceId,
             start: float, end: float, state: TaskState, at: float) -> bool:
        table = submit.table
        if table.state.item(row) not in UNFINISHED:
            return False  # canceled or aborted meanwhile: the news comes too late
        table.set_state(row, state)
        table.instance[row] = instance
        table.worker[row] = worker
        table.ended[row] = end
        if math.isnan(table.started[row]):
            table.started[row] = start
        job.worker_ids.add(worker)
        self._after_change(job, at)
        return True

    def _after_change(self, job: Job, at: float) -> None:
        if job.terminated and job.finished_at is None:
            job.finished_at = at
        if job.completed:
            self.jobs.note_completed(job)

    def seal_completed(self) -> int:
        """Pack the jobs completed since the last call (between the server's turns)."""
        return self.jobs.seal_completed()

    def _note_last_task(self, worker: WorkerId,
                        last: tuple[JobId, TaskId, float] | None) -> None:
        if last is not None:
            record = self.workers.workers.get(worker)
            if record is not None:
                record.last_task = last

    def _stop_unfinished(self, job: Job, state: TaskState, at: float) -> int:
        stopped = 0
        for submit in job.submits:
            rows = submit.table.rows_in_states(UNFINISHED)
            if len(rows):
                submit.table.set_states(rows, state)
                submit.table.ended[rows] = at
                stopped += len(rows)
        self._after_change(job, at)
        return stopped


def _unfinished_gids(job: Job) -> list[GroupId]:
    return [s.gid for s in job.submits if s.table.unfinished]


def _over_max_fails(job: Job) -> bool:
    """More than max_fails failed tasks abort the rest of the job (spec/jobs.md §8.1)."""
    return (job.max_fails is not None and job.unfinished > 0
            and job.counts[TaskState.FAILED] > job.max_fails)
