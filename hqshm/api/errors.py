"""What the API reports to its user: failed tasks, refused operations, a missing package.

Every class is a ``UserError``, so a script sees one clear message (HQ's exact texts where HQ's
tests match them), never a traceback of hqshm's internals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from hqshm.errors import UserError

if TYPE_CHECKING:
    from hqshm.api.job import Job

# How many failed tasks of one job FailedJobsException lists (HQ's number).
SHOWN_FAILED_TASKS = 5


@dataclasses.dataclass(frozen=True)
class FailedTaskContext:
    """Why a task failed and where its files are (fully resolved; None: no file)."""

    error: str
    cwd: str | None
    stdout: str | None
    stderr: str | None


class FailedJobsException(UserError):
    """Tasks of the waited-for jobs failed; the message lists the first few of each job."""

    def __init__(self, failed_tasks: Mapping[int, Mapping[int, FailedTaskContext]],
                 job_map: Mapping[int, Job]) -> None:
        self.failed_tasks = failed_tasks
        self.job_map = job_map
        super().__init__(message=failed_jobs_text(failed_tasks, job_map))


def failed_jobs_text(failed_tasks: Mapping[int, Mapping[int, FailedTaskContext]],
                     job_map: Mapping[int, Job]) -> str:
    """Per job, its first failed tasks: label, error, and the files to look at; a blank line
    after each task."""
    text = ""
    for job_id, tasks in failed_tasks.items():
        job = job_map.get(job_id)
        text += f"The following tasks of job `{job_id}` have failed:\n"
        for task_id, context in list(tasks.items())[:SHOWN_FAILED_TASKS]:
            task = job.task_by_id(task_id) if job is not None else None
            label = task.label if task is not None else str(task_id)
            error = context.error.rstrip("\n")
            text += f"Task {label} (id={task_id}):\n{error}\n"
            files = [(title, path) for title, path in (("Working directory", context.cwd),
                                                       ("Stdout", context.stdout),
                                                       ("Stderr", context.stderr)) if path]
            if files:
                text += "You can find more information here:\n"
                text += "".join(f"{title}: {path}\n" for title, path in files)
            text += "\n"
        if len(tasks) > SHOWN_FAILED_TASKS:
            text += f"... and {len(tasks) - SHOWN_FAILED_TASKS} more failed task(s)\n\n"
    return text.rstrip("\n")


class EmptyJob(UserError):  # HQ's text
    template: ClassVar[str] = "Submitted job must have at least a single task"


class CannotForget(UserError):  # HQ's text
    template: ClassVar[str] = (
        "Cannot forget job {job_id}. It either hasn't been completed yet, or it does not exist"
    )


class ForeignDependency(UserError):
    template: ClassVar[str] = (
        "Task {task_id} depends on a task of another job; dependencies must be tasks of the "
        "same job"
    )


class ClusterStopped(UserError):
    template: ClassVar[str] = "The local cluster has already been stopped"


class ServerAlreadyRunning(UserError):
    template: ClassVar[str] = (
        "A server is already running in {server_dir}; give LocalCluster another server_dir"
    )


class ClusterStartFailed(UserError):
    template: ClassVar[str] = "The local cluster's {what} {problem}:\n{log_tail}\n(full log: {log})"


class Unpicklable(UserError):
    template: ClassVar[str] = (
        "Cannot serialise the function {function} or its arguments with cloudpickle: {error}"
    )


class MissingPackageException(UserError):  # HQ's text
    template: ClassVar[str] = (
        "Unable to import `{package}`. You have to install the `{package}` package."
    )


class NotAResult(UserError):
    template: ClassVar[str] = (
        "{task} is given as an argument, but only function tasks of the same job stand for "
        "their results there"
    )


class ResultError(UserError):
    """A task's result that cannot be given (``SubmittedJob.result``): the message says why."""

    template: ClassVar[str] = "Result of task {task_id} of job {job_id}: {message}"


class TaskFailedError(ResultError):
    """The task failed without an exception to re-raise (a program, a crash, a time limit),
    or it was canceled or aborted; ``error`` is the task's error text."""

    template: ClassVar[str] = "Task {task_id} of job {job_id} did not finish: {message}"


class RemoteTraceback(Exception):
    """The cause attached to a task's exception re-raised by ``result``: the traceback the
    task printed, where it ran."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""
