"""Jobs and their submits as the server keeps them, and the errors and texts about them.

Plain records: the job book changes them (by applying events), views and `hq task explain`
read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hqshm.cluster.core import Group
from hqshm.cluster.ids import GroupId, JobId, TaskId, TaskKey, WorkerId
from hqshm.errors import UserError
from hqshm.link.responses import JobSummary
from hqshm.model.program import ProgramSpec
from hqshm.model.submission import Ranges, TaskTemplate
from hqshm.model.taskstates import job_state
from hqshm.model.tasktable import TaskTable, merge_counts


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


@dataclass(frozen=True, slots=True)
class NewGroup:
    """A core group to add, with the prerequisites it still waits for."""

    group: Group
    deps: dict[TaskKey, list[TaskKey]] | None = None  # key -> unfinished prerequisite keys
    after: tuple[TaskKey, ...] = ()  # unfinished keys the whole group waits for


@dataclass(eq=False)
class Job:
    id: JobId
    name: str
    max_fails: int | None
    submit_dir: str
    submitted_at: float
    is_open: bool = False
    submits: list[Submit] = field(default_factory=list)
    cancel_reason: str | None = None
    finished_at: float | None = None
    worker_ids: set[WorkerId] = field(default_factory=set)

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

    def locate(self, task_id: TaskId) -> tuple[Submit, int] | None:
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
