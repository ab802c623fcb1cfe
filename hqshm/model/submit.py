"""The one submit builder: typed values in, a checked submission out (cli.md §5, jobs.md §12).

`hq submit` (with its `#HQ` directives), job files and the Python API build their tasks here, so
each check of a submission and its error text exist once. Inputs are plain values: lists, dicts,
numbers, strings, None for a default. Text forms stay with their callers: the CLI parses
`--crash-limit 3`, `--stdout PATH:rm-if-finished` and durations, and a job file checks its TOML
types first and puts `file:line: ` and the key in front of the errors raised here (exception
classes matter: a UsageError exits with 2, another UserError with 1).

Pure: no files, clocks or logging. The client-side warnings of spec/cli.md §5.3 come back as
strings on the result, for the CLI to log.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping, Sequence
from typing import ClassVar

from hqshm.cluster.crashlimit import DEFAULT_CRASH_LIMIT, NEVER_RESTART, UNLIMITED_CRASHES
from hqshm.cluster.frozen import frozen
from hqshm.cluster.ids import JobId
from hqshm.cluster.resources import (
    FRACTIONS,
    Policy,
    RequestVariant,
    ResourceEntry,
    ResourceRequest,
    cpus_request,
)
from hqshm.errors import UserError
from hqshm.model import placeholders
from hqshm.model.program import PinMode
from hqshm.model.resourcespec import (
    CpusRequestedTwice,
    ZeroRequest,
    check_resource_name,
    parse_request_amount,
)
from hqshm.model.scanner import U32_MAX
from hqshm.model.selection import Ranges
from hqshm.model.submission import ArraySubmission, StdioDesc, TaskRef, TaskTemplate

Amount = int | float | str  # whole units, a fraction, or a request text such as "4 compact!"

DEFAULT_CWD = "%{SUBMIT_DIR}"
DEFAULT_JOB_NAME = "job"  # when the command's first word names no file
CRASH_LIMIT_WORDS = {"never-restart": NEVER_RESTART, "unlimited": UNLIMITED_CRASHES}
MANY_FILES = 999  # more output files than this and the client suggests --stream


# -- errors (spec/cli.md §5.1-§5.2, jobs.md §12; texts without a spec section are ours) ------


class OpenJobParameter(UserError):  # spec/cli.md §5.1
    template: ClassVar[str] = (
        "Parameter --{parameter} is not allowed when submitting to an open job."
    )


class InvalidName(UserError):  # spec/cli.md §5.1
    template: ClassVar[str] = "name cannot have a newline or a tab"


class EmptyCommand(UserError):
    template: ClassVar[str] = "the command cannot be empty"


class MultiNodeWithCpusOrPin(UserError):  # spec/cli.md §5.2
    template: ClassVar[str] = "--nodes cannot be combined with --cpus or --pin"


class MultiNodeWithResources(UserError):
    template: ClassVar[str] = "a multi-node request (`n_nodes` > 0) cannot list `resources`"


class InvalidWeight(UserError):  # spec/cli.md §5.2
    template: ClassVar[str] = "Resource weight has to be positive number"


class CrashLimitZero(UserError):  # spec/cli.md §5.2
    template: ClassVar[str] = "Crash limit cannot be 0. Use `never-restart` or `unlimited` instead."


class InvalidCrashLimit(UserError):
    template: ClassVar[str] = (
        "invalid crash limit {value!r}: a positive integer, never-restart or unlimited"
    )


class NegativeRetries(UserError):
    template: ClassVar[str] = "--retries must be 0 or more"


class UnknownPinMode(UserError):
    template: ClassVar[str] = "unknown pin mode {mode!r}: none, taskset or omp"


class AmountTooLarge(UserError):
    template: ClassVar[str] = "the amount {amount} is larger than {limit}"


class NegativeAmount(UserError):
    template: ClassVar[str] = "a resource amount cannot be negative"


class InvalidAmount(UserError):
    """A value of the wrong type: a job file reports its own type error in its place."""

    template: ClassVar[str] = (
        "invalid amount {amount!r} of {name}: an integer, a finite float or a text such as"
        ' "2 compact"'
    )


# -- single values ---------------------------------------------------------------------------


def check_command(command: Sequence[str]) -> None:
    if not command:
        raise EmptyCommand()


def check_name(name: str) -> None:
    """Job names are one field of tab-separated and line-based outputs."""
    if "\n" in name or "\t" in name:
        raise InvalidName()


def job_name(name: str | None, command: Sequence[str]) -> str:
    """The given name, else the file name of the program (`/bin/bash` → `bash`)."""
    if name is None:
        name = posixpath.basename(command[0]) or DEFAULT_JOB_NAME
    check_name(name)
    return name


def resolve_crash_limit(value: int | str | None) -> int:
    """A count of at least 1, `never-restart` or `unlimited` (None: HQ's default, 5)."""
    if value is None:
        return DEFAULT_CRASH_LIMIT
    if isinstance(value, str) and value in CRASH_LIMIT_WORDS:
        return CRASH_LIMIT_WORDS[value]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidCrashLimit(value=value)
    if value == 0:
        raise CrashLimitZero()
    return value


def pin_mode(pin: str | None) -> str:
    if pin is None:
        return PinMode.NONE
    if pin not in PinMode.ALL:
        raise UnknownPinMode(mode=pin)
    return pin


def weight_units(weight: float | None) -> int:
    """The scheduler's weight in fixed point (None: 1.0); a positive weight never becomes 0."""
    if weight is None:
        return FRACTIONS
    if not math.isfinite(weight) or weight <= 0:
        raise InvalidWeight()
    return max(1, round(weight * FRACTIONS))


def resource_entry(name: str, amount: Amount) -> ResourceEntry:
    """An integer or float amount (compact), or a request text such as `"4 compact!"`.

    A float is rounded up to 1/10000 from the decimal the user wrote, so only digits beyond
    the fourth round up (`0.0051` is 51 units; in binary floating point 0.0051 * 10000 is
    51.00000000000001, which would round up to 52).
    """
    check_resource_name(name)
    if isinstance(amount, str):
        return parse_request_amount(amount, name)
    is_int = isinstance(amount, int) and not isinstance(amount, bool)
    if not (is_int or (isinstance(amount, float) and math.isfinite(amount))):
        raise InvalidAmount(amount=amount, name=name)
    if amount > U32_MAX:
        raise AmountTooLarge(amount=amount, limit=U32_MAX)
    if is_int:
        units = amount * FRACTIONS
    else:
        from decimal import Decimal  # only floats need it: `hq submit` starts without it

        units = math.ceil(Decimal(repr(amount)) * FRACTIONS)
    if units < 0:
        raise NegativeAmount()
    if units == 0:
        raise ZeroRequest()
    return ResourceEntry(name, units, Policy.COMPACT)


def resource_entries(
    resources: Mapping[str, Amount] | None = None, cpus: Amount | None = None
) -> tuple[ResourceEntry, ...]:
    """What one task of `hq submit` asks for: `cpus` comes last and, unless given, is 1, as
    in HQ (where every CLI task asks for CPUs, and job details list them last)."""
    entries: list[ResourceEntry] = []
    for name, amount in (resources or {}).items():
        if name == "cpus" and cpus is not None:
            raise CpusRequestedTwice()
        entries.append(resource_entry(name, amount))
    if resources is None or "cpus" not in resources:
        entries.append(resource_entry("cpus", 1 if cpus is None else cpus))
    return tuple(entries)


def check_multi_node(n_nodes: int, entries: Sequence[ResourceEntry]) -> None:
    """A multi-node task takes whole workers, so it cannot also ask for amounts."""
    if n_nodes and entries:
        raise MultiNodeWithResources()


def request_variant(
    entries: Sequence[ResourceEntry],
    *,
    n_nodes: int = 0,
    time_request: float = 0.0,
    weight: float | None = None,
) -> RequestVariant:
    """One alternative of a task's request; `time_request` in seconds."""
    check_multi_node(n_nodes, entries)
    return RequestVariant(tuple(entries), n_nodes, time_request, weight_units(weight))


def stdio(spec: StdioDesc | str | None, default: str, streamed: bool = False) -> StdioDesc:
    """A path or a description; None: the default file, or the job's stream when it streams
    (spec/jobs.md §9: a streamed job streams every channel not redirected explicitly)."""
    if spec is None:
        return StdioDesc(StdioDesc.STREAM) if streamed else StdioDesc(StdioDesc.FILE, default)
    if isinstance(spec, str):
        return StdioDesc(StdioDesc.FILE, spec)
    return spec


# -- task templates and submissions ----------------------------------------------------------


def task_template(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdout: StdioDesc | str | None = None,
    stderr: StdioDesc | str | None = None,
    streamed: bool = False,
    variants: Sequence[RequestVariant] = (),
    priority: int = 0,
    time_limit: float | None = None,
    crash_limit: int | str | None = None,
    pin: str | None = None,
    task_dir: bool = False,
    stdin: bytes | str = b"",
    retries: int = 0,
    function: str = "",
) -> TaskTemplate:
    """One task's template; no variants: `cpus: 1 compact`. Durations are in seconds."""
    check_command(command)
    cwd = DEFAULT_CWD if cwd is None else cwd
    placeholders.check_cwd(cwd)
    if retries < 0:
        raise NegativeRetries()
    return TaskTemplate(
        args=tuple(command),
        env=dict(env) if env is not None else {},
        cwd=cwd,
        stdout=stdio(stdout, placeholders.DEFAULT_STDOUT, streamed),
        stderr=stdio(stderr, placeholders.DEFAULT_STDERR, streamed),
        request=ResourceRequest(tuple(variants)) if variants else cpus_request(),
        priority=priority,
        time_limit=time_limit,
        crash_limit=resolve_crash_limit(crash_limit),
        pin=pin_mode(pin),
        task_dir=task_dir,
        stdin=stdin.encode() if isinstance(stdin, str) else stdin,
        retries=retries,
        function=function,
    )


@frozen
class BuiltArray:
    """A checked submission and what the client should warn about before sending it."""

    submission: ArraySubmission
    warnings: tuple[str, ...] = ()


def array_submission(
    command: Sequence[str],
    *,
    submit_dir: str,
    name: str | None = None,
    max_fails: int | None = None,
    job_id: JobId | None = None,
    ids: Ranges = (),
    entries: Sequence[bytes] | None = None,
    stream_dir: str | None = None,
    after: Sequence[TaskRef] = (),
    cpus: Amount | None = None,
    resources: Mapping[str, Amount] | None = None,
    nodes: int = 0,
    time_request: float = 0.0,
    weight: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdout: StdioDesc | str | None = None,
    stderr: StdioDesc | str | None = None,
    priority: int = 0,
    time_limit: float | None = None,
    crash_limit: int | str | None = None,
    pin: str | None = None,
    task_dir: bool = False,
    stdin: bytes | str = b"",
    retries: int = 0,
) -> BuiltArray:
    """Many tasks of one template, as `hq submit` makes them: `ids` and `entries` as
    `--array` and `--each-line` give them (no ids and no entries: one task, id 0)."""
    if job_id is not None:
        if name is not None:
            raise OpenJobParameter(parameter="name")
        if max_fails is not None:
            raise OpenJobParameter(parameter="max-fails")
    check_command(command)
    name = job_name(name, command)
    if nodes and (cpus is not None or pin not in (None, PinMode.NONE)):
        raise MultiNodeWithCpusOrPin()
    requested = resource_entries(resources, cpus)
    # HQ gives a multi-node task whole workers and drops its other requests.
    variant = request_variant(
        () if nodes else requested, n_nodes=nodes, time_request=time_request, weight=weight
    )
    template = task_template(
        command,
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        streamed=stream_dir is not None,
        variants=(variant,),
        priority=priority,
        time_limit=time_limit,
        crash_limit=crash_limit,
        pin=pin,
        task_dir=task_dir,
        stdin=stdin,
        retries=retries,
    )
    submission = ArraySubmission(
        name=name,
        max_fails=max_fails,
        submit_dir=submit_dir,
        template=template,
        ids=tuple(ids),
        entries=tuple(entries) if entries is not None else None,
        job_id=job_id,
        stream_dir=stream_dir,
        after=tuple(after),
    )
    return BuiltArray(submission, submit_warnings(submission))


def submit_warnings(submission: ArraySubmission) -> tuple[str, ...]:
    """The client-side warnings of spec/cli.md §5.3, in the order HQ prints them."""
    warnings: list[str | None] = []
    if submission.stream_dir is not None:
        warnings.append(placeholders.unknown_placeholder_warning(submission.stream_dir, "log path"))
    template, ids, entries = submission.template, submission.ids, submission.entries
    if ids:
        n_tasks = sum((end - start) // step + 1 for start, end, step in ids)
    else:
        n_tasks = len(entries) if entries is not None else 1
    files = [
        (channel, spec)
        for channel, spec in (("stdout", template.stdout), ("stderr", template.stderr))
        if spec.kind == StdioDesc.FILE
    ]
    if files and n_tasks * len(files) > MANY_FILES:
        warnings.append(
            f"The job will create {n_tasks * len(files)} files for"
            f" {' and '.join(channel for channel, _ in files)}. Consider using the `--stream`"
            " option to stream all outputs into a single file"
        )
    is_array = bool(ids) or entries is not None
    for channel, spec in files:
        warnings.append(placeholders.unknown_placeholder_warning(spec.path, f"{channel} path"))
        if is_array:
            warnings.append(placeholders.missing_task_id_warning(spec.path, channel, template.cwd))
    warnings.append(
        placeholders.unknown_placeholder_warning(template.cwd, "working directory path")
    )
    return tuple(warning for warning in warnings if warning)
