"""A ``Job`` as the job model's ``GraphSubmission``, built through the one submit builder.

Every task becomes a template of ``hqshm.model.submit.task_template``, so its checks and error
texts are those of `hq submit` and job files; an error names the task it is about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hqshm.api.errors import EmptyJob, ForeignDependency
from hqshm.api.function import PayloadBuilder, PythonEnv
from hqshm.api.job import Job
from hqshm.api.output import DEFAULT_STDERR, DEFAULT_STDOUT, stdio_desc
from hqshm.api.resources import request_variants
from hqshm.api.tasks import Task
from hqshm.cluster.ids import TaskId
from hqshm.errors import UserError
from hqshm.model import limits, submit
from hqshm.model.submission import (
    GraphSubmission,
    GraphTask,
    TaskTemplate,
    invalid_dependencies,
    never_ready,
)

PYAPI_JOB_NAME = "PyAPI job"  # HQ's name for a job of the Python API that names none

# HQ's names of what a submitted job is made of (hyperqueue.ffi.protocol).
JobDescription = GraphSubmission
TaskDescription = GraphTask


class InvalidTask(UserError):
    template: ClassVar[str] = "Task {label} (id={task_id}): {message}"


def build_submission(job: Job, python_env: PythonEnv, submit_dir: str) -> GraphSubmission:
    """``submit_dir`` is the client's current directory: the default working directory of
    tasks when the job has no ``default_workdir``."""
    if not job.tasks:
        raise EmptyJob()
    name = PYAPI_JOB_NAME if job.name is None else job.name
    submit.check_name(name)
    default_cwd = submit_dir if job.default_workdir is None else str(job.default_workdir)
    payloads = PayloadBuilder(job.initializer, job.max_result_size)
    # Function tasks given as arguments: their results are the arguments, and dependencies.
    refs = payloads.prepare(job.tasks, lambda task: job.task_by_id(task.task_id) is task)
    made: dict[tuple[Any, ...], TaskTemplate] = {}
    tasks = tuple(
        GraphTask(TaskId(task.task_id), template, _dependencies(task, job,
                                                                refs.get(task.task_id, ())),
                  entry)
        for task in job.tasks
        for template, entry in (_template(task, job, default_cwd, python_env, payloads,
                                          made),)
    )
    blocked = next(iter(never_ready({task.id: task.deps for task in tasks})), None)
    if blocked is not None:  # only when a script edited `dependencies` into a cycle
        raise UserError(invalid_dependencies(blocked))
    return GraphSubmission(name=name, max_fails=job.max_fails, submit_dir=submit_dir,
                           tasks=tasks)


def _dependencies(task: Task, job: Job, refs: Sequence[int]) -> tuple[TaskId, ...]:
    for dep in task.dependencies:
        if job.task_by_id(dep.task_id) is not dep:
            raise ForeignDependency(task_id=task.task_id)
    ids = [dep.task_id for dep in task.dependencies]
    return tuple(dict.fromkeys(TaskId(i) for i in (*ids, *refs)))


def _template(task: Task, job: Job, default_cwd: str, python_env: PythonEnv,
              payloads: PayloadBuilder, made: dict[tuple[Any, ...], TaskTemplate]
              ) -> tuple[TaskTemplate, bytes | None]:
    """The task's template, and its HQ_ENTRY (a function task's arguments). Tasks made
    alike (a function's tasks, whose arguments are in their entries) share one template,
    built and checked once (``made``, by what the template is made of)."""
    try:
        env = {**job.default_env, **task.env}
        _check_types(env, task.priority)
        args, stdin, entry = task.command(python_env, payloads)
        encoded = None if entry is None else entry.encode()
        key = (tuple(args), tuple(env.items()), task.cwd, _stdio_key(task.stdout),
               _stdio_key(task.stderr), id(task.resources), task.priority, task.crash_limit,
               task.needs_task_dir, task.function_name, id(stdin))
        template = made.get(key)
        if template is not None and template.stdin is stdin:
            return template, encoded
        if task.function_name and len(stdin) > limits.MAX_STDIN:
            raise UserError(
                f"the function and its arguments pickle to {len(stdin)} bytes, more than a "
                f"task may carry ({limits.MAX_STDIN}); pass large data in a file, or as the "
                "result of another task (a task given as an argument)")
        template = made[key] = submit.task_template(
            args,
            env=env,
            cwd=default_cwd if task.cwd is None else str(task.cwd),
            stdout=stdio_desc(task.stdout, DEFAULT_STDOUT),
            stderr=stdio_desc(task.stderr, DEFAULT_STDERR),
            variants=request_variants(task.resources),
            priority=task.priority,
            crash_limit=task.crash_limit,
            task_dir=task.needs_task_dir,
            function=task.function_name,
            stdin=stdin,
        )
        return template, encoded
    except UserError as exc:
        raise InvalidTask(label=task.label, task_id=task.task_id, message=str(exc)) from None


def _stdio_key(stdio: Any) -> tuple[Any, ...] | None:
    return None if stdio is None else (stdio.path, stdio.on_close)


def _check_types(env: Mapping[Any, Any], priority: object) -> None:
    """What the builder takes as given (its callers parse text into these types)."""
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UserError(f"environment variables must be strings: {key!r}={value!r}")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise UserError(f"the priority must be an integer, not {priority!r}")
