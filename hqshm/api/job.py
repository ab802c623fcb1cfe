"""``Job``: a graph of tasks built in a script, numbered from 0 in creation order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hqshm.api.output import DEFAULT_STDERR, DEFAULT_STDOUT, Stdio
from hqshm.api.tasks import ExternalProgram, PythonFunction, Resources, Task
from hqshm.errors import UserError
from hqshm.taskresult import MAX_RESULT_LIMIT

JobId = int
TaskId = int
T = TypeVar("T", bound=Task)


class Job:
    """Tasks of one job and the defaults they share.

    ``max_fails`` is 1 by default (the CLI's is unlimited): the job is canceled after its
    first failed task. ``default_env`` lies under each task's own ``env``. ``initializer``
    (beyond HQ): a function without arguments that runs before the job's first function task in
    each interpreter that runs its tasks; they get its result from ``hqshm.api.worker_state()``.
    ``max_result_size`` (beyond HQ): the cap, the largest pickled result of a function task
    that ``SubmittedJob.result`` can get (default 16 MiB, at most 64 MiB). Results up to 64 KiB
    ride on the task's completion report to the server; larger ones up to the cap stay on their
    worker until the job is forgotten and are fetched from it when asked for. A result above
    the cap raises ``ResultError`` naming it; it stays on its worker only for the job's tasks
    there that take it as an argument.
    """

    def __init__(self, default_workdir: str | Path | None = None, max_fails: int | None = 1,
                 default_env: Mapping[str, str] | None = None, name: str | None = None, *,
                 initializer: Callable[[], Any] | None = None,
                 max_result_size: int | None = None) -> None:
        self.default_workdir = (Path(default_workdir).resolve()
                                if default_workdir is not None else None)
        self.max_fails = max_fails
        self.default_env = dict(default_env or {})
        self.name = name
        if initializer is not None and not callable(initializer):
            raise UserError(f"The initializer must be a function, not {initializer!r}")
        self.initializer = initializer
        if max_result_size is not None and not (
                isinstance(max_result_size, int) and 0 <= max_result_size <= MAX_RESULT_LIMIT):
            raise UserError(f"max_result_size must be a number of bytes from 0 to "
                            f"{MAX_RESULT_LIMIT}, not {max_result_size!r}")
        self.max_result_size = max_result_size
        self.tasks: list[Task] = []

    def task_by_id(self, task_id: TaskId) -> Task | None:
        """Ids are positions in ``tasks`` (``_next_id``): no index of its own, which cost a
        job of a million tasks some 80 MB."""
        if type(task_id) is int and 0 <= task_id < len(self.tasks):
            task = self.tasks[task_id]
            if task.task_id == task_id:
                return task
        return next((task for task in self.tasks if task.task_id == task_id), None)

    def program(self, args: str | Sequence[str | Path], *, env: Mapping[str, str] | None = None,
                cwd: str | Path | None = None, stdout: Stdio = DEFAULT_STDOUT,
                stderr: Stdio = DEFAULT_STDERR, stdin: str | bytes | None = None,
                deps: Iterable[Task] = (), name: str | None = None, task_dir: bool = False,
                priority: int = 0, resources: Resources = None,
                crash_limit: int | None = None) -> ExternalProgram:
        task = ExternalProgram(
            self._next_id(), args=args, task_dir=task_dir, stdin=stdin, dependencies=deps,
            priority=priority, resources=resources, env=env, cwd=cwd, stdout=stdout,
            stderr=stderr, name=name, crash_limit=crash_limit)
        return self._add(task)

    def function(self, fn: Callable[..., Any], *, args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None, stdout: Stdio = DEFAULT_STDOUT,
                 stderr: Stdio = DEFAULT_STDERR, deps: Iterable[Task] = (),
                 name: str | None = None, priority: int = 0, resources: Resources = None,
                 crash_limit: int | None = None) -> PythonFunction:
        task_id = self._next_id()
        if name is None:
            name = f"{getattr(fn, '__name__', type(fn).__name__)}/{task_id}"
        task = PythonFunction(
            task_id, fn=fn, args=args, kwargs=kwargs, dependencies=deps,
            priority=priority, resources=resources, env=env, cwd=cwd, stdout=stdout,
            stderr=stderr, name=name, crash_limit=crash_limit)
        return self._add(task)

    def _next_id(self) -> TaskId:
        return len(self.tasks)

    def _add(self, task: T) -> T:
        self.tasks.append(task)
        return task


@dataclasses.dataclass
class SubmittedJob:
    """A job the server took. ``result``, ``results`` and their ``_async`` forms (beyond HQ)
    need the client that submitted it (``Client.submit`` sets it)."""

    job: Job
    id: JobId
    client: Any = dataclasses.field(default=None, repr=False, compare=False)

    def result(self, task: Task | TaskId, timeout: float | None = None) -> Any:
        """The value the function task returned, once it ended; raises the exception it
        raised (its remote traceback as the cause), or ``ResultError`` naming why there is
        no value (failed, canceled, too large...). ``timeout``: TimeoutError after it."""
        return self._client().get_result(self, task, timeout)

    def results(self, tasks: Iterable[Task | TaskId] | None = None,
                timeout: float | None = None) -> list[Any]:
        """``result`` of several tasks (None: all the job's), in their order."""
        return self._client().get_results(self, tasks, timeout)

    async def result_async(self, task: Task | TaskId, timeout: float | None = None) -> Any:
        return await self._client().get_result_async(self, task, timeout)

    async def results_async(self, tasks: Iterable[Task | TaskId] | None = None,
                            timeout: float | None = None) -> list[Any]:
        return await self._client().get_results_async(self, tasks, timeout)

    def _client(self) -> Any:
        if self.client is None:
            raise UserError("this SubmittedJob has no client: use the one Client.submit "
                            "returned, or client.get_result(job, task)")
        return self.client


def get_job_id(job: SubmittedJob | JobId) -> JobId:
    return job.id if isinstance(job, SubmittedJob) else job
