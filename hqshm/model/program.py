"""The program of a task as nodes receive it: one body per submit, sent once per node.

The server resolves what it can at submit time (spec/jobs.md §5 stage 1); the executor that
runs a task resolves the rest (task id, instance id, ``%{CWD}``) just before spawning, so the
node's loop never formats paths or environments per task.
"""

from __future__ import annotations

from typing import ClassVar

from hqshm.cluster.codec import Registry
from hqshm.cluster.frozen import field, frozen
from hqshm.cluster.ids import JobId
from hqshm.model import limits

PROGRAM = Registry("program", 1)


class PinMode:
    NONE = "none"
    TASKSET = "taskset"
    OMP = "omp"
    ALL = (NONE, TASKSET, OMP)


@frozen
class Stdio:
    """Where one output channel goes: a path template, nothing, or the job's stream."""

    kind: str  # "file" | "none" | "stream"
    path: str = ""
    rm_if_finished: bool = False

    FILE: ClassVar[str] = "file"
    NONE: ClassVar[str] = "none"
    STREAM: ClassVar[str] = "stream"

    def __post_init__(self) -> None:
        limits.check_choice("output kind", self.kind, (self.FILE, self.NONE, self.STREAM))
        limits.check_no_nul("an output path", self.path)  # resolved: may pass MAX_TEXT


@PROGRAM.message
@frozen
class ProgramSpec:
    TAG: ClassVar[int] = 1
    args: tuple[str, ...]
    env: dict[str, str] = field(repr=False)  # may hold tokens: never logged
    cwd: str
    stdout: Stdio
    stderr: Stdio
    job_id: JobId
    submit_dir: str
    server_uid: str
    stdin: bytes = field(default=b"", repr=False)
    task_dir: bool = False
    pin: str = PinMode.NONE
    time_limit: float | None = None
    stream_dir: str = ""

    def __post_init__(self) -> None:
        """A backstop for the executor, which cannot spawn an empty argv or a NUL byte (the
        server builds programs only from templates that passed the same checks)."""
        limits.check_argv(self.args)
        limits.check_env(self.env)
        limits.check_no_nul("the working directory", self.cwd)

    def encode(self) -> bytes:
        return PROGRAM.encode(self)


def decode_program(body: bytes) -> ProgramSpec:
    spec = PROGRAM.decode(body)
    if not isinstance(spec, ProgramSpec):
        raise ValueError("not a program body")
    return spec
