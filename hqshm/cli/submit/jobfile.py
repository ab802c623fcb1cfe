"""Job definition files of `hq job submit-file FILE.toml` (spec/jobs.md §12).

Pure: the file's text in, the submit request out; the command reads the file. Every error names
the file and, where one line is at fault, that line (`job.toml:7: ...`), with HQ's own text after
the location so that scripts matching HQ's messages still find them. tomllib drops positions,
so a small scanner of the raw text (hqshm/cli/submit/tomlkeys.py) maps each key and table
header to its line.

Task IDs not given in the file are assigned in file order from (largest explicit `id` + 1), so
from 1 when no task has an `id`: HQ's implementation does this (its documentation says 0).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from hqshm.cli.submit.tomlkeys import Path, key_lines
from hqshm.cluster.frozen import frozen
from hqshm.cluster.resources import RequestVariant, ResourceEntry
from hqshm.errors import UserError
from hqshm.model import placeholders, submit
from hqshm.model.arrays import IdRange, IdSet, parse_ranges
from hqshm.model.durations import parse_human
from hqshm.model.program import PinMode
from hqshm.model.scanner import U32_MAX
from hqshm.model.submission import (
    ArraySubmission,
    GraphSubmission,
    GraphTask,
    StdioDesc,
    TaskTemplate,
    invalid_dependencies,
    never_ready,
)

I32_MIN, I32_MAX = -(2**31), 2**31 - 1

_T = TypeVar("_T")

TOP_KEYS = ("name", "max_fails", "stream", "task", "array")
TEMPLATE_KEYS = (
    "command", "env", "cwd", "stdout", "stderr", "stdin", "task_dir", "pin", "time_limit",
    "priority", "crash_limit", "request",
)  # fmt: skip
TASK_KEYS = ("id", "deps", *TEMPLATE_KEYS)
ARRAY_KEYS = (*TEMPLATE_KEYS, "ids", "entries")
REQUEST_KEYS = ("resources", "n_nodes", "time_request", "weight")
STDIO_KEYS = ("path", "on_close", "mode")  # `mode` is the name HQ's documentation uses
ON_CLOSE = ("none", "rm-if-finished")


# -- errors (HQ's texts: spec/jobs.md §12) ---------------------------------------------------


class CannotRead(UserError):
    template: ClassVar[str] = "Cannot read {path}: {error}"


class JobFileError(UserError):
    """Anything wrong with the file's content; ``line`` is None when no single line is at
    fault (a TOML error at the end of the text, no tasks at all)."""

    template: ClassVar[str] = "{location}: {message}"

    def __init__(self, path: str, line: int | None, message: str) -> None:
        location = path if line is None else f"{path}:{line}"
        super().__init__(location=location, message=message)
        self.line = line

    @property
    def detail(self) -> str:
        """The text after the location (HQ's text where HQ has one)."""
        return str(self.fields["message"])


MIXED = "Definition of array job and individual task cannot be mixed"
NO_TASKS = "No tasks defined"
IDS_ENTRIES_MISMATCH = "Items 'ids' and 'entries' does not match"
IDS_OR_ENTRIES = "One of attributes of array must be defined: 'ids', 'entries'"


def defined_twice(task_id: int) -> str:
    return f"Task {task_id} is defined multiple times"


# -- the parser ------------------------------------------------------------------------------


def parse_job_file(
    text: str, path: str, submit_dir: str, job_id: int | None = None
) -> ArraySubmission | GraphSubmission:
    """The submission of `hq job submit-file PATH [--job JOB_ID]`; `path` is only for errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, str(exc), text) from None
    doc = _Doc(path, key_lines(text))
    top = _Table(doc, data, (), TOP_KEYS)
    tasks, array = data.get("task"), data.get("array")
    if tasks is not None and array is not None:
        later = max(("task", "array"), key=lambda key: doc.line_of((key,)) or 0)
        raise doc.error((later,), MIXED)
    if array is None and not tasks:
        raise JobFileError(path, None, NO_TASKS)
    name = top.string("name") or ""
    try:
        submit.check_name(name)
    except UserError as exc:
        raise doc.error(("name",), str(exc)) from None
    max_fails = top.integer("max_fails", 0, U32_MAX)
    stream = top.string("stream")
    if array is not None:
        return _array_request(
            top.table("array", ARRAY_KEYS), name, max_fails, stream, submit_dir, job_id
        )
    graph = [_graph_task(t, stream is not None) for t in top.tables("task", TASK_KEYS)]
    return GraphSubmission(
        name=name,
        max_fails=max_fails,
        submit_dir=submit_dir,
        tasks=_number_and_check(graph),
        job_id=job_id,
        stream_dir=stream,
    )


def _syntax_error(path: str, message: str, text: str) -> JobFileError:
    """tomllib's message ends with `(at line N, column M)`, or `(at end of document)` for
    what is still open at the end (the last line, then); the line goes to the front too."""
    marker = message.rfind("(at line ")
    if marker >= 0:
        line = message[marker + len("(at line ") :].split(",", 1)[0]
        if line.isdigit():
            return JobFileError(path, int(line), message)
    if message.endswith("(at end of document)"):
        return JobFileError(path, max(1, len(text.splitlines())), message)
    return JobFileError(path, None, message)


def _array_request(
    t: _Table,
    name: str,
    max_fails: int | None,
    stream: str | None,
    submit_dir: str,
    job_id: int | None,
) -> ArraySubmission | GraphSubmission:
    template = _template(t, stream is not None)
    ids_text = t.string("ids")
    entries = t.strings("entries") or None  # HQ treats `entries = []` as not given
    if ids_text is None and entries is None:
        raise t.error(IDS_OR_ENTRIES)
    ranges = t.wrap("ids", lambda: parse_ranges(ids_text)) if ids_text is not None else ()
    ids = IdSet.from_ranges(ranges)  # refuses overlaps
    by_position = bool(ranges) and entries is not None
    if by_position and len(ids) != len(entries):
        raise t.error(IDS_ENTRIES_MISMATCH, "entries")
    return ArraySubmission(
        name=name,
        max_fails=max_fails,
        submit_dir=submit_dir,
        template=template,
        # With entries, the n-th id in the file's order gets the n-th entry: keep that order.
        ids=_wire_ranges(ranges if by_position else ids.ranges),
        entries=tuple(e.encode() for e in entries) if entries is not None else None,
        job_id=job_id,
        stream_dir=stream,
        entries_by_position=by_position,
    )


def _wire_ranges(ranges: Sequence[IdRange]) -> tuple[tuple[int, int, int], ...]:
    return tuple((r.start, r.end, r.step) for r in ranges)


@frozen
class _Parsed:
    """A `[[task]]` before IDs are assigned; its table says where it was, for errors."""

    table: _Table
    id: int | None
    deps: tuple[int, ...]
    template: TaskTemplate


def _graph_task(t: _Table, streamed: bool) -> _Parsed:
    task_id = t.integer("id", 0, U32_MAX)
    deps = t.integers("deps", 0, U32_MAX) or ()
    return _Parsed(t, task_id, tuple(dict.fromkeys(deps)), _template(t, streamed))


def _number_and_check(parsed: list[_Parsed]) -> tuple[GraphTask, ...]:
    """Assign missing IDs, refuse duplicates, then dependencies outside the file and cycles."""
    next_id = max((p.id for p in parsed if p.id is not None), default=0) + 1
    tasks: list[GraphTask] = []
    where: dict[int, _Table] = {}
    for p in parsed:
        if p.id is None:
            task_id, next_id = next_id, next_id + 1
        else:
            task_id = p.id
            if task_id in where:
                raise p.table.error(defined_twice(task_id), "id")
        where[task_id] = p.table
        tasks.append(GraphTask(task_id, p.template, p.deps))
    for task in tasks:
        if any(dep not in where for dep in task.deps):
            raise where[task.id].error(invalid_dependencies(task.id), "deps")
    blocked = next(iter(never_ready({task.id: task.deps for task in tasks})), None)
    if blocked is not None:
        raise where[blocked].error(invalid_dependencies(blocked), "deps")
    return tuple(tasks)


# -- task templates --------------------------------------------------------------------------


def _template(t: _Table, streamed: bool) -> TaskTemplate:
    command = t.strings("command")
    if command is None:
        raise t.error(f"missing field `{t.name('command')}`")
    t.wrap("command", lambda: submit.check_command(command))
    cwd = t.string("cwd")
    if cwd is not None:
        t.wrap("cwd", lambda: placeholders.check_cwd(cwd))
    time_limit = t.string("time_limit")
    stdin = t.string("stdin")
    variants = tuple(_variant(r) for r in t.tables("request", REQUEST_KEYS))
    # Each value is checked above or here, at its key: the builder finds nothing more to refuse.
    return submit.task_template(
        command,
        env=t.string_table("env"),
        cwd=cwd,
        stdout=_stdio(t, "stdout", placeholders.DEFAULT_STDOUT),
        stderr=_stdio(t, "stderr", placeholders.DEFAULT_STDERR),
        streamed=streamed,
        variants=variants,
        priority=t.integer("priority", I32_MIN, I32_MAX) or 0,
        time_limit=(
            t.wrap("time_limit", lambda: parse_human(time_limit))
            if time_limit is not None
            else None
        ),
        crash_limit=_crash_limit(t),
        pin=t.choice("pin", PinMode.ALL),
        task_dir=bool(t.boolean("task_dir")),
        stdin=stdin if stdin is not None else b"",
    )


def _stdio(t: _Table, key: str, default: str) -> StdioDesc | None:
    """`"none"`, a path, or `{path = ..., on_close = "none" | "rm-if-finished"}`; None when
    absent, for the builder's default."""
    value = t.data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return StdioDesc(StdioDesc.NONE) if value == "none" else StdioDesc(StdioDesc.FILE, value)
    if not isinstance(value, dict):
        raise t.type_error(key, 'a path, "none" or a table {path = ..., on_close = ...}')
    table = _Table(t.doc, value, (*t.where, key), STDIO_KEYS)
    on_close = table.choice("on_close", ON_CLOSE)
    mode = table.choice("mode", ON_CLOSE)
    if on_close is not None and mode is not None:
        raise table.key_error("mode", "give `on_close` or its alias `mode`, not both")
    path = table.string("path")
    rm = (on_close or mode) == "rm-if-finished"
    return StdioDesc(StdioDesc.FILE, path if path is not None else default, rm_if_finished=rm)


def _crash_limit(t: _Table) -> int | str | None:
    """A count (at least 1), `"never-restart"` or `"unlimited"`, as given, checked at its key;
    any other value is a type error in serde's words, as HQ reads a u32 or one of the words."""
    value = t.data.get("crash_limit")
    words = (None, *submit.CRASH_LIMIT_WORDS)
    if not (value in words or (_is_int(value) and 0 <= value <= U32_MAX)):
        raise t.type_error("crash_limit", 'a positive integer, "never-restart" or "unlimited"')
    t.wrap("crash_limit", lambda: submit.resolve_crash_limit(value))
    return value


def _variant(t: _Table) -> RequestVariant:
    entries = tuple(_amount(t, name, value) for name, value in t.sub_table("resources").items())
    n_nodes = t.integer("n_nodes", 0, U32_MAX) or 0
    t.wrap("n_nodes", lambda: submit.check_multi_node(n_nodes, entries))
    time_request = t.string("time_request")
    min_time = (
        t.wrap("time_request", lambda: parse_human(time_request))
        if time_request is not None
        else 0.0
    )
    weight = t.data.get("weight")
    if weight is not None and (
        not (_is_int(weight) or isinstance(weight, float)) or not math.isfinite(weight)
    ):
        raise t.type_error("weight", "a positive number")
    units = t.wrap("weight", lambda: submit.weight_units(weight))
    return RequestVariant(entries, n_nodes, min_time, units)


def _amount(t: _Table, name: str, value: Any) -> ResourceEntry:
    """The builder's entry; a value of another type is a type error in serde's words."""
    key = f"resources.{name}"
    try:
        return submit.resource_entry(name, value)
    except submit.InvalidAmount:
        raise t.type_error(
            key, 'an amount (an integer, a float or a text such as "2 compact")'
        ) from None
    except UserError as exc:
        raise t.key_error(key, str(exc)) from None


# -- typed access with locations -------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: object) -> str:
    """serde's wording of what was found: `integer `5``, `string "x"`, `array`."""
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"float `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date-time"


class _Doc:
    """The file's name and the lines of its keys, for errors."""

    __slots__ = ("path", "lines")

    def __init__(self, path: str, lines: dict[Path, int]) -> None:
        self.path = path
        self.lines = lines

    def line_of(self, where: Path) -> int | None:
        """The line of the key, else of its nearest enclosing key or table that has one."""
        for end in range(len(where), 0, -1):
            line = self.lines.get(where[:end])
            if line is not None:
                return line
        return None

    def error(self, where: Path, message: str) -> JobFileError:
        return JobFileError(self.path, self.line_of(where), message)


class _Table:
    """One TOML table of the schema: refuses unknown keys, reads typed values with errors
    that name the line and the key (`task.request.weight`)."""

    __slots__ = ("doc", "data", "where")

    def __init__(
        self, doc: _Doc, data: dict[str, Any], where: Path, allowed: Sequence[str]
    ) -> None:
        self.doc = doc
        self.data = data
        self.where = where
        for key in data:
            if key not in allowed:
                expected = ", ".join(f"`{k}`" for k in allowed)
                raise doc.error(
                    (*where, key), f"unknown field `{self.name(key)}`, expected one of {expected}"
                )

    def name(self, key: str) -> str:
        return ".".join([*(part for part in self.where if isinstance(part, str)), key])

    def error(self, message: str, key: str | None = None) -> JobFileError:
        """At the table, or at one of its keys (a dotted key is a path: `resources.gpus`)."""
        where = self.where if key is None else (*self.where, *key.split("."))
        return self.doc.error(where, message)

    def key_error(self, key: str, detail: str) -> JobFileError:
        """What is wrong with the value of `key`, named in the text (`task.priority`)."""
        return self.error(f"`{self.name(key)}`: {detail}", key)

    def type_error(self, key: str, expected: str) -> JobFileError:
        value: Any = self.data
        for part in key.split("."):
            value = value.get(part)
        found = _describe(value)
        return self.key_error(key, f"invalid type: {found}, expected {expected}")

    def wrap(self, key: str, parse: Callable[[], _T]) -> _T:
        """Run a parser of the value of `key`; its user error gets the location and key."""
        try:
            return parse()
        except UserError as exc:
            raise self.key_error(key, str(exc)) from None

    def string(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.type_error(key, "a string")
        return value

    def choice(self, key: str, choices: Sequence[str]) -> str | None:
        value = self.string(key)
        if value is not None and value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            raise self.key_error(key, f'unknown value "{value}", expected one of {options}')
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.type_error(key, "a boolean")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not _is_int(value):
            raise self.type_error(key, "an integer")
        if not low <= value <= high:
            raise self.key_error(key, f"{value} is out of range {low}..{high}")
        return value

    def strings(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.type_error(key, "an array of strings")
        return value

    def integers(self, key: str, low: int, high: int) -> list[int] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(_is_int(v) for v in value):
            raise self.type_error(key, "an array of integers")
        for v in value:
            if not low <= v <= high:
                raise self.key_error(key, f"{v} is out of range {low}..{high}")
        return value

    def sub_table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.type_error(key, "a table")
        return value

    def string_table(self, key: str) -> dict[str, str]:
        table = self.sub_table(key)
        for name, value in table.items():
            if not isinstance(value, str):
                raise self.key_error(
                    f"{key}.{name}", f"invalid type: {_describe(value)}, expected a string"
                )
        return dict(table)

    def table(self, key: str, allowed: Sequence[str]) -> _Table:
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.type_error(key, f"a table ([{self.name(key)}])")
        return _Table(self.doc, value, (*self.where, key), allowed)

    def tables(self, key: str, allowed: Sequence[str]) -> list[_Table]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.type_error(key, f"an array of tables ([[{self.name(key)}]])")
        return [_Table(self.doc, v, (*self.where, key, i), allowed) for i, v in enumerate(value)]
