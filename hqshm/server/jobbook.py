"""Jobs: what users submitted, and every task's history, kept by column.

The book is the product's side of the cluster core: it turns submits into core groups and
implements ``TaskEvents`` to record what the core reports. It knows nothing of sockets; the
server loop sets ``now`` before each batch of work and sends what the book decides.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cluster.core import Group
from cluster.protocol import Failed, Finished, Started, split_key
from hqshm import placeholders
from hqshm.errors import UserError
from hqshm.jobstate import TaskState, TaskTable, job_state, merge_counts
from hqshm.program import ProgramSpec, Stdio
from hqshm.requests import (
    JobDetail,
    JobSummary,
    Ranges,
    StdioDesc,
    SubmitRequest,
    SubmitView,
    TaskTemplate,
    TaskView,
)
from hqshm.server.workers import WorkerBook

logger = logging.getLogger(__name__)

MAX_FAILED_SHOWN = 5


class JobNotFound(UserError):  # spec/cli.md §5.3, server-side submit errors
    template = "Job {job_id} not found."


class JobNotOpened(UserError):
    template = "Job {job_id} is not opened."


class TaskExists(UserError):
    template = "Task {task_id} already exists in job {job_id}."


class TaskDefinedTwice(UserError):
    template = "Task {task_id} is defined more than once."


def crash_error(count: int) -> str:  # spec/jobs.md §16
    return (
        "Task was running on a worker that was lost; the task has occurred "
        f"{count} times in this situation and limit was reached."
    )


NEVER_RESTART_ERROR = "Task was running on a lost worker while never restart flag was set."


@dataclass(eq=False)
class Submit:
    gid: int
    template: TaskTemplate
    program: ProgramSpec
    table: TaskTable
    entries: list[str] | None = None


@dataclass(eq=False)
class Job:
    id: int
    name: str
    max_fails: int | None
    submit_dir: str
    submitted_at: float
    is_open: bool = False
    submits: list[Submit] = field(default_factory=list)
    cancel_reason: str | None = None
    finished_at: float | None = None
    worker_ids: set[int] = field(default_factory=set)

    @property
    def counts(self) -> tuple[int, int, int, int, int, int]:
        return merge_counts(s.table for s in self.submits)

    @property
    def task_count(self) -> int:
        return sum(len(s.table) for s in self.submits)

    @property
    def unfinished(self) -> int:
        return sum(s.table.unfinished for s in self.submits)

    @property
    def terminated(self) -> bool:
        return self.unfinished == 0

    @property
    def completed(self) -> bool:
        return self.terminated and not self.is_open

    @property
    def state(self) -> str:
        return job_state(self.counts, self.is_open)

    def locate(self, task_id: int) -> tuple[Submit, int] | None:
        for submit in self.submits:
            ids = submit.table.ids
            if len(ids) and int(ids[0]) <= task_id <= int(ids[-1]):
                row = submit.table.row(task_id)
                if row is not None:
                    return submit, row
        return None

    def summary(self) -> JobSummary:
        return JobSummary(
            id=self.id,
            name=self.name,
            is_open=self.is_open,
            cancel_reason=self.cancel_reason,
            task_count=self.task_count,
            counts=self.counts,
        )


def expand_ranges(ranges: Ranges) -> np.ndarray:
    parts = [np.arange(s, e + 1, st, dtype=np.uint32) for s, e, st in ranges]
    if not parts:
        return np.zeros(0, dtype=np.uint32)
    return np.concatenate(parts)


def compress_ranges(ids: np.ndarray) -> Ranges:
    """Consecutive runs of sorted ids, as (start, end, 1) triples."""
    if len(ids) == 0:
        return ()
    ids = ids.astype(np.int64)
    breaks = np.nonzero(np.diff(ids) != 1)[0]
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(ids) - 1]))
    return tuple((int(ids[s]), int(ids[e]), 1) for s, e in zip(starts, ends, strict=False))


class JobBook:
    """All jobs; implements ``cluster.core.TaskEvents``."""

    def __init__(self, server_uid: str, workers: WorkerBook) -> None:
        self.server_uid = server_uid
        self.workers = workers
        self.jobs: dict[int, Job] = {}
        self.next_job_id = 1
        self.next_gid = 1
        self.now = 0.0
        self.changed: set[int] = set()  # jobs whose counts changed since the loop last looked
        # Set by the server: drop every unfinished task of these core groups.
        self.cancel_groups: Callable[[Iterable[int]], None] = lambda gids: None

    # --- submit ---------------------------------------------------------------------------

    def submit(self, req: SubmitRequest) -> tuple[Job, Group]:
        if req.job_id is not None:
            job = self.jobs.get(req.job_id)
            if job is None:
                raise JobNotFound(job_id=req.job_id)
            if not job.is_open:
                raise JobNotOpened(job_id=req.job_id)
        else:
            job = Job(self.next_job_id, req.name, req.max_fails, req.submit_dir, self.now)
        ids, entries = self._task_ids(job, req)
        if len(ids) == 0:
            raise UserError("The submission contains no tasks.")
        if job.id not in self.jobs:
            self.jobs[job.id] = job
            self.next_job_id += 1
        program = self._program(job.id, req)
        table = TaskTable(ids)
        submit = Submit(self.next_gid, req.template, program, table, entries)
        self.next_gid += 1
        job.submits.append(submit)
        job.finished_at = None
        keys = (np.uint64(job.id) << np.uint64(32)) | ids.astype(np.uint64)
        group = Group(
            gid=submit.gid,
            job_id=job.id,
            request=req.template.request,
            priority=req.template.priority,
            body=program.encode(),
            keys=keys,
            crash_limit=req.template.crash_limit,
            entries=[e.encode() for e in entries] if entries is not None else None,
        )
        self.changed.add(job.id)
        logger.info("Job %d submitted with %d tasks", job.id, len(ids))
        return job, group

    def _task_ids(self, job: Job, req: SubmitRequest) -> tuple[np.ndarray, list[str] | None]:
        explicit = expand_ranges(req.ids) if req.ids else None
        if explicit is not None and len(explicit) > 1:
            order = np.argsort(explicit, kind="stable")
            explicit = explicit[order]
            dup = np.nonzero(np.diff(explicit.astype(np.int64)) == 0)[0]
            if len(dup):
                raise TaskDefinedTwice(task_id=int(explicit[dup[0]]))
        first_free = 0
        if job.submits:
            first_free = max(int(s.table.ids[-1]) for s in job.submits if len(s.table)) + 1
        entries: list[str] | None = None
        if req.entries is not None:
            n = len(req.entries)
            if explicit is not None:
                ids = explicit[explicit < n]
                entries = [req.entries[i] for i in ids.tolist()]
                if job.submits:
                    ids = ids + np.uint32(first_free)
            else:
                ids = np.arange(first_free, first_free + n, dtype=np.uint32)
                entries = list(req.entries)
        elif explicit is not None:
            ids = explicit
        else:
            ids = np.array([first_free], dtype=np.uint32)
        for submit in job.submits:
            clash = np.intersect1d(submit.table.ids, ids)
            if len(clash):
                raise TaskExists(task_id=int(clash[0]), job_id=job.id)
        return ids, entries

    def _program(self, job_id: int, req: SubmitRequest) -> ProgramSpec:
        t = req.template
        paths = placeholders.resolve_at_submit(
            t.cwd,
            _stdio_path(t.stdout),
            _stdio_path(t.stderr),
            req.stream_dir,
            job_id=job_id,
            submit_dir=req.submit_dir,
            server_uid=self.server_uid,
        )
        return ProgramSpec(
            args=t.args,
            env=t.env,
            cwd=paths.cwd,
            stdout=_stdio(t.stdout, paths.stdout),
            stderr=_stdio(t.stderr, paths.stderr),
            job_id=job_id,
            submit_dir=req.submit_dir,
            server_uid=self.server_uid,
            stdin=t.stdin,
            task_dir=t.task_dir,
            pin=t.pin,
            time_limit=t.time_limit,
            stream_dir=paths.stream or "",
        )

    # --- TaskEvents -----------------------------------------------------------------------

    def _find(self, key: int) -> tuple[Job, Submit, int] | None:
        job_id, task_id = split_key(key)
        job = self.jobs.get(job_id)
        if job is None:
            return None
        found = job.locate(task_id)
        if found is None:
            return None
        return job, found[0], found[1]

    def tasks_started(self, worker: int, started: Sequence[Started]) -> None:
        last = None
        for key, instance, at, _variant in started:
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            table = submit.table
            if table.state[row] != TaskState.WAITING:
                continue
            table.set_state(row, TaskState.RUNNING)
            table.instance[row] = instance
            table.worker[row] = worker
            table.started[row] = at
            job.worker_ids.add(worker)
            self.changed.add(job.id)
            last = (job.id, int(table.ids[row]), at)
        self._note_last_task(worker, last)

    def tasks_finished(self, worker: int, finished: Sequence[Finished]) -> None:
        last = None
        for key, instance, start, end, _variant in finished:
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            if not self._end(job, submit, row, worker, instance, start, end, TaskState.FINISHED):
                continue
            if math.isnan(submit.table.started[row]):
                submit.table.started[row] = start
            last = (job.id, int(submit.table.ids[row]), start)
        self._note_last_task(worker, last)

    def tasks_failed(self, worker: int, failed: Sequence[Failed]) -> None:
        for key, instance, start, end, _variant, error in failed:
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            if self._end(job, submit, row, worker, instance, start, end, TaskState.FAILED):
                submit.table.errors[row] = error
                self._check_max_fails(job)

    def tasks_requeued(self, keys: Sequence[int], instances: Sequence[int]) -> None:
        for key, instance in zip(keys, instances, strict=False):
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            table = submit.table
            if table.state[row] in (TaskState.WAITING, TaskState.RUNNING):
                table.set_state(row, TaskState.WAITING)
                table.instance[row] = instance
                table.started[row] = np.nan
                self.changed.add(job.id)

    def tasks_crashed(self, worker: int, keys: Sequence[int], crashes: Sequence[int],
                      never_restart: bool) -> None:
        for key, count in zip(keys, crashes, strict=False):
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            table = submit.table
            if table.state[row] not in (TaskState.WAITING, TaskState.RUNNING):
                continue
            table.set_state(row, TaskState.FAILED)
            table.ended[row] = self.now
            table.errors[row] = NEVER_RESTART_ERROR if never_restart else crash_error(count)
            self._after_change(job)
            self._check_max_fails(job)

    def _end(self, job: Job, submit: Submit, row: int, worker: int, instance: int,
             start: float, end: float, state: TaskState) -> bool:
        table = submit.table
        if table.state[row] not in (TaskState.WAITING, TaskState.RUNNING):
            return False  # canceled or aborted meanwhile: the news comes too late
        table.set_state(row, state)
        table.instance[row] = instance
        table.worker[row] = worker
        table.ended[row] = end
        if math.isnan(table.started[row]):
            table.started[row] = start
        job.worker_ids.add(worker)
        self._after_change(job)
        return True

    def _after_change(self, job: Job) -> None:
        self.changed.add(job.id)
        if job.terminated and job.finished_at is None:
            job.finished_at = self.now

    def _note_last_task(self, worker: int, last: tuple[int, int, float] | None) -> None:
        if last is not None:
            record = self.workers.workers.get(worker)
            if record is not None:
                record.last_task = last

    def _check_max_fails(self, job: Job) -> None:
        """More than max_fails failed tasks abort the rest of the job (spec/jobs.md §8.1)."""
        if job.max_fails is None or job.counts[TaskState.FAILED] <= job.max_fails:
            return
        self._stop_unfinished(job, TaskState.ABORTED)

    # --- cancel ---------------------------------------------------------------------------

    def cancel(self, job: Job, reason: str | None) -> tuple[int, int]:
        """Cancel every unfinished task; returns (canceled, already completed)."""
        n = self._stop_unfinished(job, TaskState.CANCELED)
        if n and reason is not None:
            job.cancel_reason = reason
        return n, job.task_count - n

    def _stop_unfinished(self, job: Job, state: TaskState) -> int:
        n = 0
        gids = []
        for submit in job.submits:
            rows = submit.table.rows_in_states((TaskState.WAITING, TaskState.RUNNING))
            if len(rows):
                submit.table.set_states(rows, state)
                submit.table.ended[rows] = self.now
                n += len(rows)
                gids.append(submit.gid)
        if gids:
            self.cancel_groups(gids)
        self._after_change(job)
        return n

    # --- views ----------------------------------------------------------------------------

    def task_view(self, job: Job, submit: Submit, row: int, index: int) -> TaskView:
        table = submit.table
        state = TaskState(int(table.state[row]))
        wid = int(table.worker[row])
        started = float(table.started[row])
        ended = float(table.ended[row])
        cwd = stdout = stderr = None
        task_id = int(table.ids[row])
        if not math.isnan(started) or wid:
            paths = placeholders.resolve_at_start(
                placeholders.SubmitPaths(
                    submit.program.cwd,
                    _template_path(submit.program.stdout),
                    _template_path(submit.program.stderr),
                ),
                task_id=task_id,
                instance_id=int(table.instance[row]),
                job_id=job.id,
                submit_dir=job.submit_dir,
                server_uid=self.server_uid,
            )
            cwd, stdout, stderr = paths.cwd, paths.stdout, paths.stderr
        return TaskView(
            id=task_id,
            state=state.name,
            instance=int(table.instance[row]),
            worker_ids=(wid,) if wid else (),
            hostnames=(self.workers.hostname(wid),) if wid else (),
            started_at=None if math.isnan(started) else started,
            ended_at=None if math.isnan(ended) or state == TaskState.WAITING else ended,
            error=table.errors.get(row, ""),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdout_kind=submit.program.stdout.kind,
            stderr_kind=submit.program.stderr.kind,
            submit_index=index,
        )

    def submit_view(self, submit: Submit) -> SubmitView:
        program = submit.program
        return SubmitView(
            template=submit.template,
            stdout=_display_path(program.stdout),
            stderr=_display_path(program.stderr),
            cwd=program.cwd,
            ids=compress_ranges(submit.table.ids),
        )

    def detail(self, job: Job, include_tasks: bool) -> JobDetail:
        failed: list[TaskView] = []
        n_failed = 0
        tasks: list[TaskView] = []
        for index, submit in enumerate(job.submits):
            table = submit.table
            rows = np.nonzero(table.state == TaskState.FAILED)[0]
            n_failed += len(rows)
            for row in rows[: max(0, MAX_FAILED_SHOWN - len(failed))].tolist():
                failed.append(self.task_view(job, submit, row, index))
            if include_tasks:
                tasks.extend(self.task_view(job, submit, r, index) for r in range(len(table)))
        all_ids = np.sort(np.concatenate([s.table.ids for s in job.submits])) if job.submits \
            else np.zeros(0, dtype=np.uint32)
        worker_ids = sorted(job.worker_ids)
        return JobDetail(
            summary=job.summary(),
            max_fails=job.max_fails,
            submitted_at=job.submitted_at,
            finished_at=job.finished_at if job.completed else None,
            submit_dir=job.submit_dir,
            submits=tuple(self.submit_view(s) for s in job.submits),
            task_ids=compress_ranges(all_ids),
            workers=tuple(self.workers.hostname(w) for w in worker_ids[:2]),
            n_workers=len(worker_ids),
            failed=tuple(failed),
            n_failed=n_failed,
            tasks=tuple(tasks),
        )

    def last_job_id(self) -> int | None:
        return max(self.jobs) if self.jobs else None


def _stdio_path(desc: StdioDesc) -> str | None:
    return desc.path if desc.kind == Stdio.FILE else None


def _stdio(desc: StdioDesc, resolved: str | None) -> Stdio:
    if desc.kind == Stdio.FILE:
        return Stdio(Stdio.FILE, resolved or desc.path, desc.rm_if_finished)
    return Stdio(desc.kind, "", desc.rm_if_finished)


def _template_path(stdio: Stdio) -> str | None:
    return stdio.path if stdio.kind == Stdio.FILE else None


def _display_path(stdio: Stdio) -> str | None:
    if stdio.kind == Stdio.FILE:
        return stdio.path
    if stdio.kind == Stdio.STREAM:
        return "<Stream>"
    return None

