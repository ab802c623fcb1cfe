"""The tasks of a ``Job``: what a script gave for each one, kept as given until the submit.

``Task`` holds what every task has; ``ExternalProgram`` and ``PythonFunction`` add their
command. ``hqshm.api.build`` turns them into the job model's templates.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hqshm.api.function import PayloadBuilder, PythonEnv
from hqshm.api.output import Stdio, StdioDef, as_stdio_def
from hqshm.api.resources import ResourceRequest

Resources = ResourceRequest | Sequence[ResourceRequest] | None


class Task(abc.ABC):
    """What every task has: id, dependencies, placement, environment, paths, name."""

    def __init__(self, task_id: int, *, dependencies: Iterable[Task] = (), priority: int = 0,
                 resources: Resources = None, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None, stdout: Stdio = None, stderr: Stdio = None,
                 name: str | None = None, crash_limit: int | None = None) -> None:
        self.task_id = task_id
        self.dependencies = list(dependencies)
        self.priority = priority
        self.resources = resources
        self.env = dict(env or {})
        self.cwd = cwd
        self.stdout: StdioDef | None = as_stdio_def(stdout)
        self.stderr: StdioDef | None = as_stdio_def(stderr)
        self.name = name
        self.crash_limit = crash_limit

    @property
    def label(self) -> str:
        """How messages and graphs name the task: its name, else its id."""
        return self.name if self.name is not None else str(self.task_id)

    @abc.abstractmethod
    def command(self, python_env: PythonEnv, payloads: PayloadBuilder
                ) -> tuple[list[str], bytes, str | None]:
        """The argv, the stdin and the HQ_ENTRY (None: none) of the task's program."""

    @property
    @abc.abstractmethod
    def needs_task_dir(self) -> bool:
        """Whether the task gets a task directory (HQ_TASK_DIR, HQ_ERROR_FILENAME)."""

    @property
    def function_name(self) -> str:
        """The callable a function task calls, as `hq job info` shows it ("": a program)."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task_id={self.task_id}, label={self.label!r})"


class ExternalProgram(Task):
    """A program with its arguments (a single string is one argument, never split)."""

    def __init__(self, task_id: int, *, args: str | Sequence[str | Path], task_dir: bool = False,
                 stdin: str | bytes | None = None, **common: Any) -> None:
        super().__init__(task_id, **common)
        self.args = [args] if isinstance(args, str) else [str(arg) for arg in args]
        self.task_dir = task_dir
        self.stdin = stdin.encode() if isinstance(stdin, str) else stdin

    def command(self, python_env: PythonEnv, payloads: PayloadBuilder
                ) -> tuple[list[str], bytes, str | None]:
        return self.args, self.stdin or b"", None

    @property
    def needs_task_dir(self) -> bool:
        return self.task_dir


class PythonFunction(Task):
    """A Python function called with ``args`` and ``kwargs`` in the task's interpreter. Its
    return value is the task's result (``SubmittedJob.result``); given as an argument of
    another function task of the job, it stands for that result there."""

    def __init__(self, task_id: int, *, fn: Callable[..., Any], args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, **common: Any) -> None:
        super().__init__(task_id, **common)
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})

    def command(self, python_env: PythonEnv, payloads: PayloadBuilder
                ) -> tuple[list[str], bytes, str | None]:
        stdin, entry = payloads.payload_of(self.task_id, self.fn, self.args, self.kwargs)
        return python_env.command(), stdin, entry

    @property
    def needs_task_dir(self) -> bool:
        return True  # the traceback goes to $HQ_ERROR_FILENAME, which lives there

    @property
    def function_name(self) -> str:
        fn = self.fn
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__  # a partial, say
        module = getattr(fn, "__module__", None)
        return name if module in (None, "__main__") else f"{module}.{name}"
