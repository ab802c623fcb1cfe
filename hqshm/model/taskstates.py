"""Task and job state names and the job-state rule: what clients need, without numpy."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence


class TaskState(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2
    FAILED = 3
    CANCELED = 4
    ABORTED = 5


STATE_NAMES = [s.name.lower() for s in TaskState]
COMPLETED = (TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELED, TaskState.ABORTED)


def parse_states(names: Iterable[str]) -> set[TaskState]:
    return {TaskState[name.upper()] for name in names}


def job_state(counts: Sequence[int], is_open: bool) -> str:
    """The job state word from its task counts (spec/jobs.md §2.2, first match wins)."""
    if counts[TaskState.RUNNING]:
        return "RUNNING"
    if counts[TaskState.WAITING]:
        return "WAITING"
    if counts[TaskState.FAILED]:
        return "FAILED"
    if counts[TaskState.ABORTED]:
        return "ABORTED"
    if counts[TaskState.CANCELED]:
        return "CANCELED"
    if is_open:
        return "OPENED"
    return "FINISHED"
