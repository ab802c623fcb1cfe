"""What a user submits: task templates and the two shapes of a submission.

A submission is the job model's value; the client wraps it in a request of the client link
(hqshm/link/requests.py) and the server's job book takes it as it is. Ids travel as ranges, never
expanded, so a million-task array is a few integers here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

# A template's crash_limit is a count or one of these (re-exported for the submit builder).
from hqshm.cluster.crashlimit import DEFAULT_CRASH_LIMIT
from hqshm.cluster.ids import JobId, TaskId
from hqshm.cluster.resources import ResourceRequest
from hqshm.model.program import PinMode
from hqshm.model.scanner import U32_MAX

Ranges = tuple[tuple[int, int, int], ...]  # (start, end inclusive, step)


def check_ranges(ranges: Ranges | None) -> None:
    """Ranges as a peer sent them: ids 0..2^32-1, start <= end, a step of at least 1; anything
    else raises ValueError, which the codec turns into a refused message (never a crash in the
    code that walks them). Nothing is expanded here, whatever the ranges span."""
    for start, end, step in ranges or ():
        if step < 1 or not 0 <= start <= end <= U32_MAX:
            raise ValueError(f"invalid id range {start}-{end}:{step} (ids are 0 to {U32_MAX}, "
                             "the start not after the end, the step at least 1)")


@dataclass(frozen=True, slots=True)
class StdioDesc:
    kind: str  # FILE | NONE | STREAM
    path: str = ""
    rm_if_finished: bool = False

    FILE: ClassVar[str] = "file"
    NONE: ClassVar[str] = "none"
    STREAM: ClassVar[str] = "stream"



def invalid_dependencies(task_id: int) -> str:
    """HQ's text for a task that can never start (spec/jobs.md §12); scripts match it."""
    return f"Task {task_id} is part of dependency cycle or has an invalid dependencies"


def never_ready(deps: Mapping[TaskId, Sequence[TaskId]]) -> list[TaskId]:
    """Tasks of ``deps`` (in its order) that can never start: on a dependency cycle, behind
    one, or waiting for a task that ``deps`` does not hold. Kahn's algorithm."""
    waiting = {task: len(prerequisites) for task, prerequisites in deps.items()}
    dependants: dict[TaskId, list[TaskId]] = {}
    for task, prerequisites in deps.items():
        for prerequisite in prerequisites:
            dependants.setdefault(prerequisite, []).append(task)
    ready = [task for task, count in waiting.items() if count == 0]
    while ready:
        for dependant in dependants.get(ready.pop(), ()):
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                ready.append(dependant)
    return [task for task, count in waiting.items() if count > 0]

@dataclass(frozen=True, slots=True)
class TaskTemplate:
    """What a user asked to run, before the server resolves placeholders."""

    args: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    cwd: str
    stdout: StdioDesc
    stderr: StdioDesc
    request: ResourceRequest
    priority: int = 0
    time_limit: float | None = None
    crash_limit: int = DEFAULT_CRASH_LIMIT  # or UNLIMITED_CRASHES, NEVER_RESTART
    pin: str = PinMode.NONE
    task_dir: bool = False
    stdin: bytes = field(default=b"", repr=False)
    retries: int = 0  # beyond HQ: re-run a task that exits non-zero up to this many times


@dataclass(frozen=True, slots=True)
class TaskRef:
    """Tasks of an earlier job: all of them (``tasks`` None) or the given ids."""

    job_id: JobId
    tasks: Ranges | None = None

    def __post_init__(self) -> None:
        check_ranges(self.tasks)


@dataclass(frozen=True, slots=True)
class GraphTask:
    """One task of a job file: its own template, explicit id, dependencies and entry."""

    id: TaskId
    template: TaskTemplate
    deps: tuple[TaskId, ...] = ()
    entry: bytes | None = None


@dataclass(frozen=True, slots=True)
class ArraySubmission:
    """Many tasks of one template (`hq submit`, a job file's `[array]`), ids as ranges."""

    name: str
    max_fails: int | None
    submit_dir: str
    template: TaskTemplate
    ids: Ranges  # explicit task ids; with entries, selects which entries become tasks
    entries: tuple[bytes, ...] | None = None  # raw: --each-line passes bytes (HQ_ENTRY)
    job_id: JobId | None = None  # submit into an open job
    stream_dir: str | None = None  # --stream DIR (placeholders unresolved)
    after: tuple[TaskRef, ...] = ()  # beyond HQ: start only once these tasks finished
    # Job files' [array] pairs ids[i] with entries[i] and keeps the ids as given; `hq submit`
    # selects entries by index and numbers them on from the open job's tasks.
    entries_by_position: bool = False

    def __post_init__(self) -> None:
        check_ranges(self.ids)


@dataclass(frozen=True, slots=True)
class GraphSubmission:
    """Individual tasks with dependencies between them (`hq job submit-file` with [[task]])."""

    name: str
    max_fails: int | None
    submit_dir: str
    tasks: tuple[GraphTask, ...]
    job_id: JobId | None = None
    stream_dir: str | None = None
