"""The bounds of everything a client may send, and the checks that apply them.

Every list, string and number of a request is bounded, so that no request, however forged,
makes the server spend long or allocate much before it is refused. The numbers sit far above
what legitimate use needs (a job file of 100,000 tasks, a million-task array, a long shell
script as one argument) and at or below what the rest of the system could carry anyway:

- One request frame is at most ``MAX_REQUEST_BYTES`` (the client socket's ZMQ_MAXMSGSIZE) and
  holds at most ``MAX_REQUEST_VALUES`` values, checked while it is decoded, before any field
  is read; the counts below bound what is not (ranges that name many ids, totals over nested
  lists).
- Strings that end up in a task's argv or environment are bounded by Linux's MAX_ARG_STRLEN
  (32 pages, 128 KiB): execve refuses any longer one, so a longer one could only fail later.
- Paths are bounded by PATH_MAX (4096) before placeholders expand; names share that bound.
- A submission names at most ``MAX_SUBMIT_TASKS`` tasks: ten times the benchmark's million-task
  array, and about 300 MB of task tables on the server.

A check failing raises ``LimitError``: a ``ValueError``, which the codec turns into a refused
request on the server, and a ``UserError``, so that the submit builder's callers (`hq submit`,
job files, the API) print its message instead of a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import ClassVar

from hqshm.errors import UserError
from hqshm.model.taskstates import STATE_NAMES

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # one client request frame (ZMQ_MAXMSGSIZE)
# Values (in arrays and maps) one request frame may hold: decoding that many costs at most
# ~100 ms and ~32 MB whatever their shape; selectors of MAX_RANGES ranges fit, and larger
# submissions are packed or sent in parts (hqshm/link/submitting.py).
MAX_REQUEST_VALUES = 500_000
MAX_RANGES = 50_000  # ranges of one id list (a selector, --array, task ids): 4 values each
MAX_SUBMIT_TASKS = 10_000_000  # tasks one submission names (ranges are counted, not expanded)
MAX_GRAPH_TASKS = 1_000_000  # tasks of one job file ([[task]]), each with its own template
MAX_GRAPH_DEPS = 10_000_000  # dependencies of all tasks of one job file together
MAX_AFTER = 10_000  # `--after` references of one submission
MAX_TEXT = 4096  # names, paths, resource names, reasons, environment keys (PATH_MAX)
MAX_ARG = 128 * 1024  # one argv item, environment value or HQ_ENTRY (MAX_ARG_STRLEN)
MAX_ARGS = 100_000  # argv items of one task
MAX_ENV = 10_000  # environment entries of one task
MAX_STDIN = 16 * 1024 * 1024  # bytes given to a task's standard input
MAX_ENTRIES = MAX_SUBMIT_TASKS  # HQ_ENTRY values of one submission (one per task)
MAX_VARIANTS = 64  # alternative resource requests of one task
MAX_RESOURCE_ENTRIES = 256  # resources one request variant names
MAX_STATES = 64  # state names of one filter (there are six)
MAX_MISSING_IDS = 1000  # "not found" ids one answer reports (a range may name billions)
U32_MAX = 2**32 - 1  # ids, counts and whole resource units are u32, as in HQ
I32_MIN, I32_MAX = -(2**31), 2**31 - 1  # priorities are i32, as in HQ


class LimitError(UserError, ValueError):
    """A value past one of the bounds above, or one that cannot be used (NUL in a path)."""

    template: ClassVar[str] = "{message}"


def check_count(what: str, count: int, limit: int) -> None:
    if count > limit:
        raise LimitError(f"too many {what}: {count} (the limit is {limit})")


def check_text(what: str, value: str, limit: int = MAX_TEXT) -> None:
    """A string passed to the OS (path, argument, variable): bounded and without NUL, which
    C strings cannot hold (execve and open would refuse it in the executor)."""
    if len(value) > limit:
        raise LimitError(f"{what} is too long: {len(value)} characters (the limit is {limit})")
    check_no_nul(what, value)


def check_no_nul(what: str, value: str) -> None:
    if "\0" in value:
        raise LimitError(f"{what} contains a NUL character")


def check_bytes(what: str, value: bytes, limit: int) -> None:
    if len(value) > limit:
        raise LimitError(f"{what} is too long: {len(value)} bytes (the limit is {limit})")


def check_int(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise LimitError(f"{what} {value} is out of range ({low} to {high})")


def check_seconds(what: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise LimitError(f"{what} {value} is not a finite number of seconds >= 0")


def check_choice(what: str, value: object, allowed: Iterable[object]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise LimitError(f"invalid {what} {value!r} (expected one of "
                         f"{', '.join(map(str, allowed))})")


def check_argv(args: tuple[str, ...]) -> None:
    """A task's command: at least the program, each item an OS string."""
    if not args:
        raise LimitError("the command cannot be empty")
    check_count("command arguments", len(args), MAX_ARGS)
    for arg in args:
        check_text("a command argument", arg, MAX_ARG)


def check_env(env: Mapping[str, str]) -> None:
    check_count("environment variables", len(env), MAX_ENV)
    for key, value in env.items():
        check_text("an environment variable name", key)
        check_text(f"the value of environment variable {key}", value, MAX_ARG)


def check_states(states: tuple[str, ...]) -> None:
    """A filter's state names: few and short (which names a request accepts is its own)."""
    check_count("states", len(states), MAX_STATES)
    for state in states:
        check_text("a state name", state, 64)


def check_task_states(states: tuple[str, ...]) -> None:
    """Task state names, which the server parses (``taskstates.parse_states``)."""
    check_states(states)
    for state in states:
        check_choice("task state", state.lower(), STATE_NAMES)


def range_count(ranges: Iterable[tuple[int, int, int]]) -> int:
    """How many ids checked ranges name, without expanding them."""
    return sum((end - start) // step + 1 for start, end, step in ranges)
