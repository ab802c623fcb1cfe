"""Jobs and their submits as the server keeps them, and the errors and texts about them.

Plain records: the job book changes them (by applying events), views and `hq task explain`
read them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from hqshm.cluster.core import Group
from hqshm.cluster.firstuse import np
from hqshm.cluster.frozen import field, frozen, mutable
from hqshm.cluster.ids import GroupId, JobId, TaskId, TaskKey, WorkerId
from hqshm.errors import UserError
from hqshm.link.responses import JobSummary
from hqshm.model.program import ProgramSpec
from hqshm.model.scanner import U32_MAX
from hqshm.model.selection import Ranges
from hqshm.model.submission import TaskTemplate
from hqshm.model.taskstates import TaskState, job_state
from hqshm.model.tasktable import TaskTable


class JobNotFound(UserError):  # spec/cli.md §5.3, server-side submit errors
    template = "Job {job_id} not found."


class JobNotOpened(UserError):
    template = "Job {job_id} is not opened."


class JobIdsExhausted(UserError):
    template = ("This server has used every job id (up to {max_id}). Start a new server "
                "with a fresh journal, or none.")


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


@mutable
class Submit:
    gid: GroupId
    template: TaskTemplate
    program: ProgramSpec
    table: TaskTable
    entries: list[bytes] | None = None  # HQ_ENTRY of each row, raw
    batch: int = 0  # submits made by one request share it (a job file makes several)
    is_array: bool = True  # one template for all its tasks (CLI submit, job-file [array])
    deps: dict[TaskId, tuple[TaskId, ...]] = field(default_factory=dict)  # task id -> its deps
    # row -> multi-node workers
    nodes: dict[int, tuple[WorkerId, ...]] = field(default_factory=dict)
    after: int = 0  # `--after` prerequisite tasks, finished or not (task explain counts them)
    after_keys: tuple[TaskKey, ...] = ()  # those unfinished at submit time
    crashes: dict[int, int] = field(default_factory=dict)  # row -> lost workers it ran on


@frozen
class NewGroup:
    """A core group to add, with the prerequisites it still waits for."""

    group: Group
    deps: dict[TaskKey, list[TaskKey]] | None = None  # key -> unfinished prerequisite keys
    after: tuple[TaskKey, ...] = ()  # unfinished keys the whole group waits for


# Submits a job's index keeps as ranges (``TaskIndex._runs``): a job of more (a template per
# task) is searched as one array; a list of ranges that long would cost more to insert into
# (a job file's ids in any order) than it saves.
MAX_RUNS = 1024


class TaskIndex:
    """Where each task of a job is: one binary search over the job's ids, however many
    submits it has. Job files and Python API jobs make a submit per template (thousands of
    them), and a job file's submits may interleave ids (tasks go to their template's submit),
    so neither searching the submits in turn nor bisecting their first ids would do."""

    __slots__ = ("ids", "where", "starts", "first", "_runs", "_run_firsts")

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.uint32)  # every task id of the job, sorted
        # Each id's position in the submits' ids laid end to end; None while that is the
        # identity: a job of one submit shares its table's ids and costs no memory here.
        self.where: np.ndarray | None = None
        self.starts = np.zeros(0, dtype=np.int64)  # where each submit begins in that layout
        # The first id when the job is one submit of consecutive ids (an array, a single
        # task): a task's row is then its id minus this, with no search (most task reports).
        self.first: int | None = None
        # While every submit's ids are consecutive and no two submits' ranges overlap (a job
        # sent in parts, an array per template): (first id, last id, submit) of each, by first
        # id, and those first ids, which a bisect searches in a fraction of a numpy search.
        self._runs: list[tuple[int, int, int]] | None = []
        self._run_firsts: list[int] = []

    def add(self, parts: Sequence[np.ndarray]) -> None:
        """Index new submits' (sorted) ids: O(the job's tasks) memory copies, no sort of
        the old ones, so a stream of submits into an open job costs no sort each."""
        submit = len(self.starts)
        for part in parts:
            self._add_run(part, submit)
            submit += 1
        self._add(parts)
        ids = self.ids
        dense = (self.where is None and len(self.starts) == 1 and len(ids) > 0
                 and ids.item(-1) - ids.item(0) == len(ids) - 1)
        self.first = ids.item(0) if dense else None

    def _add(self, parts: Sequence[np.ndarray]) -> None:
        total = len(self.ids)
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        self.starts = np.concatenate((self.starts, total + np.cumsum(lengths) - lengths))
        if total == 0 and len(parts) == 1:
            self.ids = parts[0]
            return
        new = np.concatenate(parts)
        order = np.argsort(new, kind="stable")
        where = self.where if self.where is not None else np.arange(total, dtype=np.uint32)
        at = np.searchsorted(self.ids, new[order])
        self.ids = np.insert(self.ids, at, new[order])
        self.where = np.insert(where, at, (order + total).astype(np.uint32))

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions in ``wanted`` (uint32 task ids) of the tasks the job has, with the
        index of each one's submit and its row there."""
        ids = self.ids
        pos = np.searchsorted(ids, wanted)
        hit = pos < len(ids)
        hit[hit] = ids[pos[hit]] == wanted[hit]
        found = np.flatnonzero(hit)
        flat = pos[found] if self.where is None else self.where[pos[found]].astype(np.int64)
        submit = np.searchsorted(self.starts, flat, side="right") - 1
        return found, submit, flat - self.starts[submit]

    def _add_run(self, ids: np.ndarray, submit: int) -> None:
        runs = self._runs
        if runs is None or not len(ids):
            return
        first, last = ids.item(0), ids.item(-1)
        i = bisect.bisect_left(self._run_firsts, first)
        if (last - first != len(ids) - 1 or (i > 0 and runs[i - 1][1] >= first)
                or (i < len(runs) and runs[i][0] <= last) or len(runs) >= MAX_RUNS):
            self._runs = None  # the searches of the whole index from now on
            self._run_firsts = []
            return
        runs.insert(i, (first, last, submit))
        self._run_firsts.insert(i, first)

    def find_one(self, task_id: TaskId) -> tuple[int, int] | None:
        """The index of the task's submit and its row there."""
        first = self.first
        if first is not None:
            row = task_id - first
            return (0, row) if 0 <= row < len(self.ids) else None
        runs = self._runs
        if runs is not None:
            i = bisect.bisect_right(self._run_firsts, task_id) - 1
            if i < 0 or task_id > runs[i][1]:
                return None
            return runs[i][2], task_id - runs[i][0]
        if not 0 <= task_id <= U32_MAX:
            return None
        # Searched as the column's own type (see ``TaskTable.row``).
        i = int(np.searchsorted(self.ids, np.uint32(task_id)))
        if i == len(self.ids) or self.ids.item(i) != task_id:
            return None
        flat = i if self.where is None else self.where.item(i)
        submit = int(np.searchsorted(self.starts, flat, side="right")) - 1
        return submit, flat - self.starts.item(submit)

    def last_id(self) -> int | None:
        return self.ids.item(-1) if len(self.ids) else None


@mutable
class Job:
    id: JobId
    name: str
    max_fails: int | None
    submit_dir: str
    submitted_at: float
    is_open: bool = False
    submits: list[Submit] = field(default_factory=list)  # more come by ``add_submits``
    cancel_reason: str | None = None
    finished_at: float | None = None
    worker_ids: set[WorkerId] = field(default_factory=set)
    # Kept as submits come and tasks change state, so that what the book reads per task
    # event costs the same for a job of one submit and one of thousands.
    index: TaskIndex = field(init=False, repr=False)
    _counts: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        given, self.submits = self.submits, []
        self.index = TaskIndex()
        self._counts = [0] * len(TaskState)
        self.add_submits(given)

    def add_submits(self, submits: Sequence[Submit]) -> None:
        """Take these submits (each with a table of its own) into the job."""
        if not submits:
            return
        for submit in submits:
            table = submit.table
            assert table.totals is None, "a task table belongs to one job"
            table.totals = self._counts
            for state, count in enumerate(table.counts):
                self._counts[state] += count
        self.submits.extend(submits)
        self.index.add([s.table.ids for s in submits])

    @property
    def counts(self) -> tuple[int, int, int, int, int, int]:
        return tuple(self._counts)  # type: ignore[return-value]

    @property
    def task_count(self) -> int:
        return sum(self._counts)

    @property
    def unfinished(self) -> int:
        return self._counts[TaskState.WAITING] + self._counts[TaskState.RUNNING]

    @property
    def terminated(self) -> bool:
        return self.unfinished == 0

    @property
    def completed(self) -> bool:
        return self.terminated and not self.is_open

    @property
    def state(self) -> str:
        return job_state(self.counts, self.is_open)

    def locate(self, task_id: TaskId) -> tuple[Submit, int] | None:
        found = self.index.find_one(task_id)
        if found is None:
            return None
        return self.submits[found[0]], found[1]

    def summary(self) -> JobSummary:
        return JobSummary(
            id=self.id,
            name=self.name,
            is_open=self.is_open,
            cancel_reason=self.cancel_reason,
            task_count=self.task_count,
            counts=self.counts,
        )


def match_ranges(ids: np.ndarray, ranges: Ranges) -> tuple[np.ndarray, np.ndarray]:
    """Positions in sorted ``ids`` that ``ranges`` name, and the index of the range naming
    each, in the ranges' order. The cost follows ``len(ids)`` and the number of ranges, never
    what the ranges span (0-4000000000 is two integers); ranges that overlap (requests refuse
    them) may name a position more than once."""
    if not ranges or len(ids) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    starts, ends, steps = np.asarray(ranges, dtype=np.int64).reshape(-1, 3).T
    lo = np.searchsorted(ids, starts, side="left")
    counts = np.searchsorted(ids, ends, side="right") - lo
    which = np.repeat(np.arange(len(starts)), counts)
    first = np.cumsum(counts) - counts  # where each range's positions begin in the output
    positions = np.repeat(lo - first, counts) + np.arange(int(counts.sum()))
    on_step = (ids[positions].astype(np.int64) - starts[which]) % steps[which] == 0
    return positions[on_step], which[on_step]


def missing_in_ranges(ranges: Ranges, found: np.ndarray, which: np.ndarray,
                      limit: int) -> list[int]:
    """The first ``limit`` ids that ``ranges`` name and ``found`` lacks, in the ranges' order;
    ``which`` (ascending) gives the range of each found id. Costs O(ranges + found + limit),
    so a range of billions answers with its first few missing ids, not with all of them."""
    if not ranges:
        return []
    starts, ends, steps = np.asarray(ranges, dtype=np.int64).reshape(-1, 3).T
    bounds = np.searchsorted(which, np.arange(len(starts) + 1))
    short = np.nonzero((ends - starts) // steps + 1 > np.diff(bounds))[0]
    missing: list[int] = []
    for index in short[:limit].tolist():  # each of them lacks one id at least
        room = limit - len(missing)
        if room <= 0:
            break
        start, end, step = ranges[index]
        taken = (np.asarray(found[bounds[index]:bounds[index + 1]], dtype=np.int64)
                 - start) // step
        candidates = np.arange(min((end - start) // step + 1, room + len(taken)))
        absent = np.setdiff1d(candidates, taken, assume_unique=True)[:room]
        missing.extend((start + absent * step).tolist())
    return missing


def expand_ranges(ranges: Ranges) -> np.ndarray:
    """Every id the ranges name, in their order: only for ranges whose count the model
    bounded (a submission's, ``limits.MAX_SUBMIT_TASKS``); selectors use ``match_ranges``.
    Many ranges are expanded at once: one ``arange`` each costs 0.2 s for 100,000 ranges."""
    if len(ranges) > 64:
        return _expand_many(ranges)
    parts = [np.arange(s, e + 1, st, dtype=np.uint32) for s, e, st in ranges]
    if not parts:
        return np.zeros(0, dtype=np.uint32)
    return np.concatenate(parts)


def _expand_many(ranges: Ranges) -> np.ndarray:
    """``start + k * step`` for every k of every range, in uint32: no term exceeds the end."""
    starts, ends, steps = np.asarray(ranges, dtype=np.int64).reshape(-1, 3).T
    counts = (ends - starts) // steps + 1
    first = (np.cumsum(counts) - counts).astype(np.uint32)
    k: np.ndarray = np.arange(int(counts.sum()), dtype=np.uint32) - np.repeat(first, counts)
    k *= np.repeat(steps.astype(np.uint32), counts)
    k += np.repeat(starts.astype(np.uint32), counts)
    return k


def compress_ranges(ids: np.ndarray) -> Ranges:
    """Consecutive runs of sorted ids, as (start, end, 1) triples."""
    if len(ids) == 0:
        return ()
    ids = ids.astype(np.int64)
    breaks = np.nonzero(np.diff(ids) != 1)[0]
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(ids) - 1]))
    return tuple((int(ids[s]), int(ids[e]), 1) for s, e in zip(starts, ends, strict=False))
