"""The API's requests to a server: one connection, one method per operation.

``Client`` adds logging, the progress bar and exceptions on top; HQ's tests use this layer
directly (``ClientConnection(server_dir).stop_server()``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hqshm.api.errors import CannotForget, FailedTaskContext
from hqshm.link import client, serverdir, submitting
from hqshm.link.requests import (
    ForgetJobsRequest,
    JobProgressRequest,
    Selector,
    StopServerRequest,
    TaskListRequest,
    WaitJobsRequest,
)
from hqshm.link.responses import (
    Ack,
    ForgetJobsResponse,
    JobProgressResponse,
    JobSummary,
    WaitJobsResponse,
)
from hqshm.model.submission import GraphSubmission

# How often wait_for_jobs asks for progress while it waits (HQ polls once a second).
PROGRESS_PERIOD = 1.0

Summaries = tuple[JobSummary, ...]
OnProgress = Callable[[Summaries], None]


def job_selector(job_ids: Sequence[int]) -> Selector:
    return Selector("ids", tuple((job_id, job_id, 1) for job_id in job_ids))


class ClientConnection:
    """A connection to the server of ``server_dir`` (None: ``$HQ_SERVER_DIR``, else
    ``~/.hq-server``); the root or an instance directory. Errors are the CLI's messages."""

    def __init__(self, server_dir: str | Path | None = None) -> None:
        arg = None if server_dir is None else os.fspath(server_dir)
        self.server_dir = serverdir.resolve_server_dir(arg, os.environ)
        self._conn: client.ClientConnection | None = client.ClientConnection(self.server_dir)

    def _connection(self) -> client.ClientConnection:
        """The connection, made anew after a wait that did not finish left answers in it."""
        if self._conn is None:
            self._conn = client.ClientConnection(self.server_dir)
        return self._conn

    def submit(self, submission: GraphSubmission) -> int:
        """A large job goes in parts, into one job (hqshm.link.submitting)."""
        return submitting.submit(self._connection(), submission)

    def wait_for_jobs(self, job_ids: Sequence[int], on_progress: OnProgress) -> Summaries:
        """Block until the jobs are done, calling ``on_progress`` about once a second and at
        the end; the jobs' final summaries.

        The server answers the wait request when the last task ends, so the call returns at
        once then; progress requests go out in between. A wait that does not finish (Ctrl-C,
        a lost server) leaves answers in flight: the next request uses a new connection.
        """
        conn = self._connection()
        selector = job_selector(job_ids)
        try:
            conn.send(WaitJobsRequest(selector))
            return _await_wait(conn, selector, on_progress)
        except BaseException:
            self.close()
            raise

    def get_failed_tasks(self, job_id: int) -> dict[int, FailedTaskContext]:
        from hqshm.link.details import TaskListResponse  # only here: start-up time

        request = TaskListRequest(job_selector([job_id]), states=("failed",))
        response = self._connection().request(request, TaskListResponse)
        return {
            view.id: FailedTaskContext(
                error=view.error,
                cwd=view.cwd,
                stdout=view.stdout if view.stdout_kind == "file" else None,
                stderr=view.stderr if view.stderr_kind == "file" else None,
            )
            for _job, views in response.jobs
            for view in views
        }

    def forget(self, job_id: int) -> None:
        response = self._connection().request(ForgetJobsRequest(job_selector([job_id])),
                                              ForgetJobsResponse)
        if not response.forgotten:
            raise CannotForget(job_id=job_id)

    def get_results(self, job_id: int, task_ids: Sequence[int],
                    timeout: float | None = None) -> list[Any]:
        """Function tasks' results in order, waiting for them (hqshm/api/results.py)."""
        from hqshm.api import results

        return results.fetch(self._connection(), job_id, task_ids, timeout)

    def stop_server(self) -> None:
        self._connection().request(StopServerRequest(), Ack)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _await_wait(conn: client.ClientConnection, selector: Selector,
                on_progress: OnProgress) -> Summaries:
    """Receive until the wait's answer has come and no progress answer is left in flight.
    The first progress request goes out at once: it gives a progress bar its total."""
    conn.send(JobProgressRequest(selector))
    progress_pending = True
    final: Summaries | None = None
    while final is None or progress_pending:
        message = conn.receive(None if final is not None else PROGRESS_PERIOD)
        if isinstance(message, WaitJobsResponse):
            final = message.jobs
        elif isinstance(message, JobProgressResponse):
            progress_pending = False
            if final is None:
                on_progress(message.jobs)
        elif message is None and not progress_pending:
            conn.send(JobProgressRequest(selector))
            progress_pending = True
    on_progress(final)
    return final
