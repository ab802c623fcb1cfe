"""``Client``: submit jobs to a running server, wait for them, read their failures."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hqshm.api.build import build_submission
from hqshm.api.connection import ClientConnection, Summaries
from hqshm.api.errors import FailedJobsException, FailedTaskContext
from hqshm.api.function import PythonEnv
from hqshm.api.job import Job, JobId, SubmittedJob, TaskId, get_job_id
from hqshm.api.tasks import Task
from hqshm.errors import UserError
from hqshm.model.taskstates import TaskState

logger = logging.getLogger(__name__)

_DONE = (TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELED, TaskState.ABORTED)
_UNSUCCESSFUL = (TaskState.FAILED, TaskState.CANCELED, TaskState.ABORTED)


class Client:
    """Connects at once to the server of ``server_dir`` (None: ``$HQ_SERVER_DIR``, else
    ``~/.hq-server``); ``python_env`` runs its function tasks."""

    def __init__(self, server_dir: str | Path | None = None,
                 python_env: PythonEnv | None = None) -> None:
        self.connection = ClientConnection(server_dir)
        self.python_env = python_env if python_env is not None else PythonEnv()

    def submit(self, job: Job) -> SubmittedJob:
        submission = build_submission(job, self.python_env, os.getcwd())
        job_id = self.connection.submit(submission)
        logger.info("Submitted job %d with %d task(s)", job_id, len(job.tasks))
        return SubmittedJob(job=job, id=job_id, client=self)

    def wait_for_jobs(self, jobs: Sequence[SubmittedJob], raise_on_error: bool = True) -> bool:
        """Block until the jobs end; True when none of their tasks failed, was canceled or
        aborted. Failed tasks raise FailedJobsException when ``raise_on_error``."""
        if not jobs:
            return True
        ids = [job.id for job in jobs]
        shown = str(ids[0]) if len(ids) == 1 else "{" + ",".join(map(str, ids)) + "}"
        logger.info("Waiting for job(s) %s to finish", shown)
        with _ProgressBar(len(ids)) as bar:
            final = self.connection.wait_for_jobs(ids, bar.update)
        failed = [job.id for job in final if job.counts[TaskState.FAILED]]
        if failed and raise_on_error:
            job_map = {job.id: job.job for job in jobs}
            raise FailedJobsException({job_id: self.connection.get_failed_tasks(job_id)
                                       for job_id in failed}, job_map)
        return not any(job.counts[state] for job in final for state in _UNSUCCESSFUL)

    async def wait_for_jobs_async(self, jobs: Sequence[SubmittedJob],
                                  raise_on_error: bool = True) -> bool:
        """``wait_for_jobs`` for asyncio (beyond HQ): the wait runs in a thread with a
        connection of its own, without a progress bar, so the event loop runs meanwhile."""
        import asyncio

        return await asyncio.to_thread(self._own_connection, _wait_quietly, jobs,
                                       raise_on_error)

    def get_result(self, job: SubmittedJob | JobId, task: Task | TaskId,
                   timeout: float | None = None) -> Any:
        """The value function task ``task`` of ``job`` returned, waiting until it ended
        (beyond HQ; ``SubmittedJob.result`` says more)."""
        return self.connection.get_results(get_job_id(job), [_task_id(task)], timeout)[0]

    def get_results(self, job: SubmittedJob | JobId,
                    tasks: Iterable[Task | TaskId] | None = None,
                    timeout: float | None = None) -> list[Any]:
        """``get_result`` of several tasks in their order (None: every task of the job)."""
        return self.connection.get_results(get_job_id(job), _task_ids(job, tasks), timeout)

    async def get_result_async(self, job: SubmittedJob | JobId, task: Task | TaskId,
                               timeout: float | None = None) -> Any:
        return (await self.get_results_async(job, [task], timeout))[0]

    async def get_results_async(self, job: SubmittedJob | JobId,
                                tasks: Iterable[Task | TaskId] | None = None,
                                timeout: float | None = None) -> list[Any]:
        """``get_results`` for asyncio: polls in a thread with a connection of its own."""
        import asyncio

        ids = _task_ids(job, tasks)
        return await asyncio.to_thread(
            self._own_connection,
            lambda conn: conn.get_results(get_job_id(job), ids, timeout))

    def _own_connection(self, action: Any, *args: Any) -> Any:
        """``action(connection, *args)`` on a connection of its own (a thread's: ZeroMQ
        sockets are not shared between threads)."""
        conn = ClientConnection(self.connection.server_dir)
        try:
            return action(conn, *args)
        finally:
            conn.close()

    def get_failed_tasks(self, job: SubmittedJob) -> dict[TaskId, FailedTaskContext]:
        return self.connection.get_failed_tasks(job.id)

    def forget(self, job: SubmittedJob | JobId) -> None:
        """Drop a completed job from the server's memory."""
        job_id = get_job_id(job)
        self.connection.forget(job_id)
        logger.info("Forgotten job %d", job_id)


def _task_id(task: Task | TaskId) -> TaskId:
    return task.task_id if isinstance(task, Task) else task


def _task_ids(job: SubmittedJob | JobId, tasks: Iterable[Task | TaskId] | None) -> list[TaskId]:
    if tasks is None:
        if not isinstance(job, SubmittedJob):
            raise UserError("the tasks to give results of are needed with a job id")
        return [task.task_id for task in job.job.tasks]
    return [_task_id(task) for task in tasks]


def _wait_quietly(conn: ClientConnection, jobs: Sequence[SubmittedJob],
                  raise_on_error: bool) -> bool:
    """``Client.wait_for_jobs`` on ``conn``, without a progress bar."""
    if not jobs:
        return True
    final = conn.wait_for_jobs([job.id for job in jobs], lambda summaries: None)
    failed = [job.id for job in final if job.counts[TaskState.FAILED]]
    if failed and raise_on_error:
        job_map = {job.id: job.job for job in jobs}
        raise FailedJobsException({job_id: conn.get_failed_tasks(job_id)
                                   for job_id in failed}, job_map)
    return not any(job.counts[state] for job in final for state in _UNSUCCESSFUL)


class _ProgressBar:
    """tqdm's bar of the tasks done, made at the first progress report (which has the
    total), with the number of jobs completed after it."""

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = n_jobs
        self.bar: Any = None

    def update(self, summaries: Summaries) -> None:
        total = sum(job.task_count for job in summaries)
        done = sum(job.counts[state] for job in summaries for state in _DONE)
        if self.bar is None:
            from tqdm import tqdm  # its import takes a while: only scripts that wait pay it

            # What was done before the bar starts is its start, not a step: as a step taken
            # within microseconds, it showed millions of tasks a second.
            self.bar = tqdm(total=total, unit="task", initial=done)
        self.bar.total = total
        completed = sum(1 for job in summaries
                        if job.counts[TaskState.WAITING] + job.counts[TaskState.RUNNING] == 0)
        self.bar.set_postfix_str(f"{completed}/{self.n_jobs} job(s) completed", refresh=False)
        self.bar.update(done - self.bar.n)  # by steps, so that tqdm's rate is right
        self.bar.refresh()

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
