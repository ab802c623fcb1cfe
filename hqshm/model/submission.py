"""What a user submits: task templates and the two shapes of a submission.

A submission is the job model's value; the client wraps it in a request of the client link
(hqshm/link/requests.py) and the server's job book takes it as it is. Ids travel as ranges, never
expanded, so a million-task array is a few integers here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

# A template's crash_limit is a count or one of these (re-exported for the submit builder).
from hqshm.cluster.crashlimit import DEFAULT_CRASH_LIMIT
from hqshm.cluster.frozen import field, frozen
from hqshm.cluster.ids import JobId, TaskId
from hqshm.cluster.resources import ResourceRequest
from hqshm.model import limits
from hqshm.model.program import PinMode
from hqshm.model.resourcespec import check_request
from hqshm.model.scanner import U32_MAX
from hqshm.model.selection import Ranges, check_id, check_ranges


def check_optional_text(what: str, value: str | None) -> None:
    if value is not None:
        limits.check_text(what, value)


@frozen
class StdioDesc:
    kind: str  # FILE | NONE | STREAM
    path: str = ""
    rm_if_finished: bool = False

    FILE: ClassVar[str] = "file"
    NONE: ClassVar[str] = "none"
    STREAM: ClassVar[str] = "stream"

    def __post_init__(self) -> None:
        limits.check_choice("output kind", self.kind, (self.FILE, self.NONE, self.STREAM))
        limits.check_text("an output path", self.path)



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

@frozen
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
    function: str = ""  # a function task's callable (`module.name`): views show it, not argv

    def __post_init__(self) -> None:
        """What an executor could not run (empty argv, NUL bytes) or the server not place (no
        variant, amounts of 0) is refused here, before anything is recorded."""
        limits.check_argv(self.args)
        if self.function:
            limits.check_text("the function name", self.function)
        limits.check_env(self.env)
        limits.check_text("the working directory", self.cwd)
        check_request(self.request)
        limits.check_int("the priority", self.priority, limits.I32_MIN, limits.I32_MAX)
        if self.time_limit is not None:
            limits.check_seconds("the time limit", self.time_limit)
        limits.check_int("the crash limit", self.crash_limit, -1, U32_MAX)
        limits.check_choice("pin mode", self.pin, PinMode.ALL)
        limits.check_bytes("the standard input", self.stdin, limits.MAX_STDIN)
        limits.check_int("the number of retries", self.retries, 0, U32_MAX)


@frozen
class TaskRef:
    """Tasks of an earlier job: all of them (``tasks`` None) or the given ids."""

    job_id: JobId
    tasks: Ranges | None = None

    def __post_init__(self) -> None:
        check_id("a job id", self.job_id)
        check_ranges(self.tasks)
        if self.tasks is not None:  # the server expands them
            limits.check_count("tasks named by --after", limits.range_count(self.tasks),
                               limits.MAX_SUBMIT_TASKS)


@frozen
class GraphTask:
    """One task of a job file: its own template, explicit id, dependencies and entry."""

    id: TaskId
    template: TaskTemplate
    deps: tuple[TaskId, ...] = ()
    entry: bytes | None = None

    def __post_init__(self) -> None:
        check_id("a task id", self.id)
        for dep in self.deps:
            check_id("a dependency", dep)
        if self.entry is not None:
            limits.check_bytes("an entry", self.entry, limits.MAX_ARG)


@frozen
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
        check_submission(self.name, self.max_fails, self.submit_dir, self.job_id,
                         self.stream_dir)
        check_ranges(self.ids)
        limits.check_count("tasks in one submission", limits.range_count(self.ids),
                           limits.MAX_SUBMIT_TASKS)
        if self.entries is not None:
            limits.check_count("entries", len(self.entries), limits.MAX_ENTRIES)
            for entry in self.entries:
                limits.check_bytes("an entry", entry, limits.MAX_ARG)
        limits.check_count("--after references", len(self.after), limits.MAX_AFTER)


@frozen
class GraphSubmission:
    """Individual tasks with dependencies between them (`hq job submit-file` with [[task]])."""

    name: str
    max_fails: int | None
    submit_dir: str
    tasks: tuple[GraphTask, ...]
    job_id: JobId | None = None
    stream_dir: str | None = None
    # The packed form (``pack_graph``), in which the tasks travel: each distinct template
    # once, and per task (id, index of its template, deps, entry). Decoding expands it into
    # ``tasks`` sharing those templates, so that a job of a million function tasks costs one
    # template's decode, not a million.
    templates: tuple[TaskTemplate, ...] = ()
    packed: tuple[tuple[TaskId, int, tuple[TaskId, ...], bytes | None], ...] = ()

    def __post_init__(self) -> None:
        check_submission(self.name, self.max_fails, self.submit_dir, self.job_id,
                         self.stream_dir)
        if self.packed or self.templates:
            self._unpack()
        limits.check_count("tasks in one job file", len(self.tasks), limits.MAX_GRAPH_TASKS)
        limits.check_count("dependencies in one job file",
                           sum(len(task.deps) for task in self.tasks), limits.MAX_GRAPH_DEPS)


    def _unpack(self) -> None:
        if self.tasks:
            raise ValueError("a job's tasks come packed or not, not both")
        limits.check_count("tasks in one job file", len(self.packed), limits.MAX_GRAPH_TASKS)
        templates = self.templates
        tasks = []
        for task_id, index, deps, entry in self.packed:
            if not 0 <= index < len(templates):
                raise ValueError(f"task {task_id} names template {index} of {len(templates)}")
            tasks.append(GraphTask(task_id, templates[index], deps, entry))
        object.__setattr__(self, "tasks", tuple(tasks))
        object.__setattr__(self, "templates", ())
        object.__setattr__(self, "packed", ())

    def packed_form(self, keys: Sequence[bytes] | None = None) -> GraphSubmission:
        """The same submission in the packed form; ``keys``: each task's template key
        (``template_key``), when the caller has them already."""
        if keys is None:
            keys = [template_key(task.template) for task in self.tasks]
        index: dict[bytes, int] = {}
        templates: list[TaskTemplate] = []
        packed = []
        for task, key in zip(self.tasks, keys, strict=True):
            at = index.get(key)
            if at is None:
                at = index[key] = len(templates)
                templates.append(task.template)
            packed.append((task.id, at, task.deps, task.entry))
        packed_form = object.__new__(GraphSubmission)  # no unpacking on this side
        for name, value in (("name", self.name), ("max_fails", self.max_fails),
                            ("submit_dir", self.submit_dir), ("tasks", ()),
                            ("job_id", self.job_id), ("stream_dir", self.stream_dir),
                            ("templates", tuple(templates)), ("packed", tuple(packed))):
            object.__setattr__(packed_form, name, value)
        return packed_form


_template_fields: Callable[[TaskTemplate], list[object]] | None = None


def template_key(template: TaskTemplate) -> bytes:
    """16 bytes equal for equal templates (a 128-bit digest of the codec's field lists,
    packed): a client keeps one per task, and a template holds a function's payload."""
    global _template_fields
    import msgpack

    from hqshm.cluster.codec import struct_encoder
    from hqshm.cluster.digests import blake2b_128

    if _template_fields is None:
        _template_fields = struct_encoder(TaskTemplate)
    packed = msgpack.packb(_template_fields(template), use_bin_type=True)
    return blake2b_128(packed)


def check_submission(name: str, max_fails: int | None, submit_dir: str, job_id: JobId | None,
                     stream_dir: str | None) -> None:
    """The fields both shapes of a submission share."""
    limits.check_text("the job name", name)
    if max_fails is not None:
        limits.check_int("max fails", max_fails, 0, U32_MAX)
    limits.check_text("the submit directory", submit_dir)
    if job_id is not None:
        check_id("a job id", job_id)
    check_optional_text("the stream directory", stream_dir)
