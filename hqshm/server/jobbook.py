"""Jobs: what users submitted, and every task's history, kept by column.

The book is the product's side of the cluster core: it turns submits into core groups and
implements ``TaskEvents`` to record what the core reports. It knows nothing of sockets; the
server loop sets ``now`` before each batch of work and sends what the book decides.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgpack
import numpy as np

from hqshm.cluster.core import Group
from hqshm.cluster.protocol import Failed, Finished, Started, split_key
from hqshm.errors import UserError
from hqshm.link.responses import JobDetail, JobSummary, SubmitView, TaskView
from hqshm.model import placeholders
from hqshm.model.program import ProgramSpec, Stdio
from hqshm.model.submission import (
    ArraySubmission,
    GraphSubmission,
    GraphTask,
    Ranges,
    StdioDesc,
    TaskRef,
    TaskTemplate,
)
from hqshm.model.tasktable import TaskState, TaskTable, job_state, merge_counts
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
    entries: list[bytes] | None = None  # HQ_ENTRY of each row, raw
    batch: int = 0  # submits made by one request share it (a job file makes several)
    is_array: bool = True  # one template for all its tasks (CLI submit, job-file [array])
    deps: dict[int, tuple[int, ...]] = field(default_factory=dict)  # task id -> its deps
    nodes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # row -> multi-node workers
    attempts: dict[int, int] = field(default_factory=dict)  # row -> retries used
    after: int = 0  # `--after` prerequisite tasks, finished or not (task explain counts them)


@dataclass(frozen=True, slots=True)
class NewGroup:
    """A core group to add, with the prerequisites it still waits for."""

    group: Group
    deps: dict[int, list[int]] | None = None  # key -> unfinished prerequisite keys
    after: tuple[int, ...] = ()  # unfinished keys the whole group waits for


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


def _template_key(template: TaskTemplate) -> bytes:
    """Tasks with equal templates share a core group (and are sent to nodes once)."""
    return msgpack.packb(dataclasses.astuple(template), use_bin_type=True)


def _check_acyclic(deps: dict[int, tuple[int, ...]]) -> None:
    """Kahn's algorithm over the submitted tasks; the text is HQ's (spec/jobs.md §12)."""
    indegree = {task: sum(1 for d in ds if d in deps) for task, ds in deps.items()}
    users: dict[int, list[int]] = {}
    for task, ds in deps.items():
        for d in ds:
            if d in deps:
                users.setdefault(d, []).append(task)
    ready = [t for t, n in indegree.items() if n == 0]
    while ready:
        for user in users.get(ready.pop(), ()):
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    stuck = sorted(t for t, n in indegree.items() if n > 0)
    if stuck:
        raise UserError(f"Task {stuck[0]} is part of dependency cycle or has an invalid "
                        "dependencies")


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
        self.by_gid: dict[int, Submit] = {}
        # Set by the server: drop every unfinished task of these core groups.
        self.cancel_groups: Callable[[Iterable[int]], None] = lambda gids: None

    # --- submit ---------------------------------------------------------------------------

    def _target_job(self, job_id: int | None, name: str, max_fails: int | None,
                    submit_dir: str) -> Job:
        if job_id is not None:
            job = self.jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id=job_id)
            if not job.is_open:
                raise JobNotOpened(job_id=job_id)
            return job
        return Job(self.next_job_id, name, max_fails, submit_dir, self.now)

    def _register(self, job: Job) -> None:
        if job.id not in self.jobs:
            self.jobs[job.id] = job
            self.next_job_id += 1
        job.finished_at = None
        self.changed.add(job.id)

    def _new_submit(self, job: Job, template: TaskTemplate, program: ProgramSpec,
                    ids: np.ndarray, entries: list[bytes] | None, batch: int,
                    is_array: bool) -> Submit:
        submit = Submit(self.next_gid, template, program, TaskTable(ids), entries, batch,
                        is_array)
        self.next_gid += 1
        self.by_gid[submit.gid] = submit
        job.submits.append(submit)
        return submit

    def _group(self, job: Job, submit: Submit, ids: np.ndarray) -> Group:
        template = submit.template
        keys = (np.uint64(job.id) << np.uint64(32)) | ids.astype(np.uint64)
        entries = None
        if submit.entries is not None:
            rows = np.searchsorted(submit.table.ids, ids)
            entries = [submit.entries[r] for r in rows.tolist()]
        return Group(
            gid=submit.gid,
            job_id=job.id,
            request=template.request,
            priority=template.priority,
            body=submit.program.encode(),
            keys=keys,
            crash_limit=template.crash_limit,
            retries=template.retries,
            entries=entries,
        )

    def submit(self, req: ArraySubmission) -> tuple[Job, list[NewGroup]]:
        """An array-style submit: one template, many ids (hq submit, job-file [array])."""
        job = self._target_job(req.job_id, req.name, req.max_fails, req.submit_dir)
        job.submit_dir = job.submit_dir or req.submit_dir
        ids, entries = self._task_ids(job, req)
        if len(ids) == 0:
            raise UserError("The submission contains no tasks.")
        after, dead, n_after = self._prerequisites(job, req.after)
        self._register(job)
        batch = self.next_gid
        submit = self._new_submit(job, req.template, self._program(job.id, req.template,
                                                                   req.submit_dir,
                                                                   req.stream_dir),
                                  ids, entries, batch, True)
        submit.after = n_after
        logger.info("Job %d submitted with %d tasks", job.id, len(ids))
        if dead:
            # A prerequisite already failed: these tasks can never run (spec/jobs.md §8.2).
            submit.table.set_states(np.arange(len(ids)), TaskState.ABORTED)
            submit.table.ended[:] = self.now
            self._after_change(job)
            return job, []
        return job, [NewGroup(self._group(job, submit, ids), None, tuple(after))]

    def _prerequisites(self, job: Job, refs: Sequence[TaskRef]
                       ) -> tuple[list[int], bool, int]:
        """Unfinished keys of `--after` tasks, whether one of them already failed, and how
        many tasks they name."""
        unfinished: list[int] = []
        dead = False
        named = 0
        for ref in refs:
            target = job if ref.job_id == job.id else self.jobs.get(ref.job_id)
            if target is None:
                raise JobNotFound(job_id=ref.job_id)
            wanted = expand_ranges(ref.tasks) if ref.tasks is not None else None
            for submit in target.submits:
                table = submit.table
                rows = np.arange(len(table)) if wanted is None else \
                    np.nonzero(np.isin(table.ids, wanted))[0]
                states = table.state[rows]
                named += len(rows)
                dead |= bool(np.isin(states, (TaskState.FAILED, TaskState.CANCELED,
                                              TaskState.ABORTED)).any())
                pending = rows[np.isin(states, (TaskState.WAITING, TaskState.RUNNING))]
                base = target.id << 32
                unfinished.extend(base | int(i) for i in table.ids[pending].tolist())
            if wanted is not None:
                known = np.concatenate([s.table.ids for s in target.submits]) \
                    if target.submits else np.zeros(0, dtype=np.uint32)
                missing = np.setdiff1d(wanted, known)
                if len(missing):
                    raise UserError(f"Invalid dependency on task {int(missing[0])} of job "
                                    f"{target.id}: the job has no such task")
        return unfinished, dead, named

    def submit_graph(self, req: GraphSubmission) -> tuple[Job, list[NewGroup]]:
        """Individual tasks with dependencies (job files' [[task]]): one group per template."""
        job = self._target_job(req.job_id, req.name, req.max_fails, req.submit_dir)
        job.submit_dir = job.submit_dir or req.submit_dir
        ids = [t.id for t in req.tasks]
        if not ids:
            raise UserError("No tasks defined")
        seen: set[int] = set()
        for task_id in ids:
            if task_id in seen:
                raise TaskDefinedTwice(task_id=task_id)
            seen.add(task_id)
        existing = {int(i): s for s in job.submits for i in s.table.ids.tolist()}
        for task_id in ids:
            if task_id in existing:
                raise TaskExists(task_id=task_id, job_id=job.id)
        for task in req.tasks:
            for dep in task.deps:
                if dep not in seen and dep not in existing:
                    raise UserError(f"Invalid dependency on {dep}")
        _check_acyclic({t.id: t.deps for t in req.tasks})
        self._register(job)
        batch = self.next_gid
        by_template: dict[bytes, list[GraphTask]] = {}
        for task in req.tasks:
            by_template.setdefault(_template_key(task.template), []).append(task)
        created: list[tuple[Submit, np.ndarray]] = []
        for tasks in by_template.values():
            tasks.sort(key=lambda t: t.id)
            group_ids = np.array([t.id for t in tasks], dtype=np.uint32)
            entries = [t.entry or b"" for t in tasks] if any(t.entry is not None
                                                             for t in tasks) else None
            program = self._program(job.id, tasks[0].template, req.submit_dir, req.stream_dir)
            submit = self._new_submit(job, tasks[0].template, program, group_ids, entries,
                                      batch, False)
            submit.deps = {t.id: t.deps for t in tasks if t.deps}
            created.append((submit, group_ids))
        base = job.id << 32
        dead: set[int] = set()
        deps: dict[int, list[int]] = {}
        for task in req.tasks:
            unfinished = []
            for dep in task.deps:
                if dep in seen:
                    unfinished.append(base | dep)
                    continue
                located = job.locate(dep)
                assert located is not None
                state = TaskState(int(located[0].table.state[located[1]]))
                if state in (TaskState.WAITING, TaskState.RUNNING):
                    unfinished.append(base | dep)
                elif state != TaskState.FINISHED:
                    dead.add(task.id)
            if unfinished:
                deps[base | task.id] = unfinished
        logger.info("Job %d submitted with %d tasks", job.id, len(ids))
        groups = [NewGroup(self._group(job, submit, group_ids), deps) for submit, group_ids
                  in created]
        if dead:
            self.tasks_aborted([base | t for t in dead], ())
        return job, groups

    def _task_ids(self, job: Job, req: ArraySubmission) -> tuple[np.ndarray, list[str] | None]:
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
        entries: list[bytes] | None = None
        if req.entries is not None and req.entries_by_position:
            given = expand_ranges(req.ids)
            if explicit is None or len(given) != len(req.entries):
                raise UserError("Items 'ids' and 'entries' does not match")
            order = np.argsort(given, kind="stable")
            ids = given[order]
            entries = [req.entries[i] for i in order.tolist()]
        elif req.entries is not None:
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

    def _program(self, job_id: int, t: TaskTemplate, submit_dir: str,
                 stream_dir: str | None) -> ProgramSpec:
        paths = placeholders.resolve_at_submit(
            t.cwd,
            _stdio_path(t.stdout),
            _stdio_path(t.stderr),
            stream_dir,
            job_id=job_id,
            submit_dir=submit_dir,
            server_uid=self.server_uid,
        )
        return ProgramSpec(
            args=t.args,
            env=t.env,
            cwd=paths.cwd,
            stdout=_stdio(t.stdout, paths.stdout),
            stderr=_stdio(t.stderr, paths.stderr),
            job_id=job_id,
            submit_dir=submit_dir,
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
                submit.nodes.pop(row, None)
                self.changed.add(job.id)

    def task_nodes(self, key: int, workers: Sequence[int]) -> None:
        found = self._find(key)
        if found is not None:
            job, submit, row = found
            submit.nodes[row] = tuple(workers)
            job.worker_ids.update(workers)
            # Every node of the task shows it as its last task (HQ's worker info).
            last = (job.id, int(submit.table.ids[row]), self.now)
            for worker in workers:
                self._note_last_task(worker, last)

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

    def tasks_aborted(self, keys: Sequence[int], gids: Sequence[int]) -> None:
        """Dependencies failed: these tasks, and whole submits, will never run."""
        touched: set[int] = set()
        for key in keys:
            found = self._find(key)
            if found is None:
                continue
            job, submit, row = found
            if submit.table.state[row] in (TaskState.WAITING, TaskState.RUNNING):
                submit.table.set_state(row, TaskState.ABORTED)
                submit.table.ended[row] = self.now
                touched.add(job.id)
        for gid in gids:
            submit = self.by_gid.get(gid)
            if submit is None:
                continue
            rows = submit.table.rows_in_states((TaskState.WAITING, TaskState.RUNNING))
            submit.table.set_states(rows, TaskState.ABORTED)
            submit.table.ended[rows] = self.now
            touched.add(submit.program.job_id)
        for job_id in touched:
            job = self.jobs.get(job_id)
            if job is not None:
                self._after_change(job)

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

    # --- job management -------------------------------------------------------------------

    def open_job(self, name: str, max_fails: int | None) -> Job:
        job = Job(self.next_job_id, name, max_fails, "", self.now, is_open=True)
        self._register(job)
        return job

    def close(self, job: Job) -> bool:
        """Close an open job; False if it was closed already."""
        if not job.is_open:
            return False
        job.is_open = False
        self._after_change(job)
        return True

    def forget(self, job_ids: Sequence[int], states: Iterable[str]) -> tuple[int, int]:
        """Drop completed jobs in these states from memory: (forgotten, ignored)."""
        wanted = {s.upper() for s in states}
        forgotten = 0
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or not job.completed or job.state not in wanted:
                continue
            for submit in job.submits:
                self.by_gid.pop(submit.gid, None)
            del self.jobs[job_id]
            forgotten += 1
        return forgotten, len(job_ids) - forgotten

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(("RUNNING", "WAITING", "FINISHED", "FAILED", "ABORTED",
                                "CANCELED"), 0)
        for job in self.jobs.values():
            state = job.state
            counts[state] = counts.get(state, 0) + 1
        return counts

    def task_ids(self, job: Job, states: set[TaskState] | None) -> Ranges:
        parts = []
        for submit in job.submits:
            table = submit.table
            rows = np.arange(len(table)) if states is None else table.rows_in_states(states)
            parts.append(table.ids[rows])
        ids = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint32)
        return compress_ranges(ids)

    def resubmit(self, job: Job, states: set[TaskState], submit_dir: str
                 ) -> ArraySubmission | GraphSubmission:
        """The tasks of a job in these states, as a new submit of the same programs.

        Array submits keep their template and ids; job-file tasks keep their own template and
        the dependencies among the tasks that are submitted again.
        """
        arrays: list[ArraySubmission] = []
        graph: list[GraphTask] = []
        for submit in job.submits:
            rows = submit.table.rows_in_states(states)
            if not len(rows):
                continue
            ids = submit.table.ids[rows]
            entries = None if submit.entries is None else tuple(
                submit.entries[r] for r in rows.tolist())
            if submit.is_array:
                arrays.append(ArraySubmission(job.name, job.max_fails, submit_dir,
                                            submit.template, compress_ranges(ids), entries))
            else:
                for i, task_id in enumerate(ids.tolist()):
                    graph.append(GraphTask(task_id, submit.template, submit.deps.get(task_id, ()),
                                           entries[i] if entries else None))
        if not arrays and not graph:
            raise UserError(f"Job {job.id} has no tasks in the given states")
        if graph or len(arrays) > 1:
            chosen = {t.id for t in graph}
            for request in arrays:
                rows = expand_ranges(request.ids).tolist()
                chosen.update(rows)
                for i, task_id in enumerate(rows):
                    graph.append(GraphTask(task_id, request.template, (),
                                           request.entries[i] if request.entries else None))
            graph = [dataclasses.replace(t, deps=tuple(d for d in t.deps if d in chosen))
                     for t in graph]
            return GraphSubmission(job.name, job.max_fails, submit_dir, tuple(graph))
        request = arrays[0]
        if request.entries is not None:
            # The rows' entries, in the order of their (sorted) ids: pair them by position.
            return dataclasses.replace(request, entries_by_position=True)
        return request

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
        workers = submit.nodes.get(row) or ((wid,) if wid else ())
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
            worker_ids=workers,
            hostnames=tuple(self.workers.hostname(w) for w in workers),
            started_at=None if math.isnan(started) else started,
            ended_at=None if math.isnan(ended) or state == TaskState.WAITING else ended,
            error=table.errors.get(row, ""),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdout_kind=submit.program.stdout.kind,
            stderr_kind=submit.program.stderr.kind,
            submit_index=index,
            deps=submit.deps.get(task_id, ()),
        )

    def submit_view(self, submit: Submit) -> SubmitView:
        program = submit.program
        return SubmitView(
            template=submit.template,
            stdout=_display_path(program.stdout),
            stderr=_display_path(program.stderr),
            cwd=program.cwd,
            ids=compress_ranges(submit.table.ids),
            is_array=submit.is_array,
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
            batches=len({s.batch for s in job.submits}),
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

