"""Function tasks' results on the client: ask the server, wait for those pending, decode.

The server answers a ``TaskResultsRequest`` with what it knows of each task now
(hqshm/server/results.py); tasks still running are asked for again, sooner at first (a result
wanted right after its task ends comes within milliseconds) and then at most every
``MAX_POLL`` seconds. A result kept on its worker (larger than the inline threshold, within
the job's ``max_result_size``) comes the same way: the server answers LATER while it fetches
it from the worker, then the blob. A value is unpickled from its blob (hqshm/taskresult.py); an exception the
task raised is raised again with the traceback the task printed as its cause.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hqshm import taskresult
from hqshm.api.errors import RemoteTraceback, ResultError, TaskFailedError
from hqshm.link import client
from hqshm.link.requests import MAX_RESULT_IDS, TaskResultsRequest
from hqshm.link.responses import ResultStatus, TaskResultsResponse

FIRST_POLL = 0.002
MAX_POLL = 0.25
LATER_POLL = 0.01  # the most between asks while the server has a result on its way (LATER)

_MISSING = object()


def fetch(conn: client.ClientConnection, job_id: int, task_ids: Sequence[int],
          timeout: float | None) -> list[Any]:
    """The results of ``task_ids`` in order, waiting for them; raises the first task's error
    (in the order given) as ``value`` does."""
    deadline = None if timeout is None else time.monotonic() + timeout
    items: dict[int, tuple[int, int, int, bytes, str]] = {}
    wanted = list(dict.fromkeys(task_ids))
    delay = FIRST_POLL
    while True:
        pending = [t for t in wanted if t not in items]
        later = False
        for at in range(0, len(pending), MAX_RESULT_IDS):
            part = tuple(pending[at:at + MAX_RESULT_IDS])
            answer = conn.request(TaskResultsRequest(job_id, part), TaskResultsResponse)
            for item in answer.items:
                if item[1] == ResultStatus.LATER:
                    later = True  # ended: its blob comes in a later answer (or is fetched)
                elif item[1] != ResultStatus.PENDING:
                    items[item[0]] = item
        if all(t in items for t in wanted):
            break
        if deadline is not None and time.monotonic() >= deadline:
            waiting = len([t for t in wanted if t not in items])
            raise TimeoutError(f"{waiting} task(s) of job {job_id} did not end within "
                               f"{timeout} s")
        if any(t not in items and t in pending for t in wanted):
            if later:
                delay = min(delay, LATER_POLL)
            time.sleep(delay if deadline is None
                       else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, LATER_POLL if later else MAX_POLL)
    return [value(job_id, items[t]) for t in task_ids]


def value(job_id: int, item: tuple[int, int, int, bytes, str]) -> Any:
    """The value of one answered task, or its error raised."""
    task_id, status, size, blob, error = item
    if status == ResultStatus.VALUE:
        return _decode(job_id, task_id, blob)
    if status == ResultStatus.NONE:
        return None
    if status == ResultStatus.EXCEPTION:
        exc = _decode(job_id, task_id, blob)
        if isinstance(exc, BaseException):
            raise exc from RemoteTraceback(error)
        raise TaskFailedError(task_id=task_id, job_id=job_id, message=error)
    if status in (ResultStatus.FAILED, ResultStatus.CANCELED):
        raise TaskFailedError(task_id=task_id, job_id=job_id, message=error)
    raise ResultError(task_id=task_id, job_id=job_id, message=_why(status, size, error))


def _why(status: int, size: int, error: str) -> str:
    if status == ResultStatus.TOO_LARGE:
        cap = f"{error} bytes" if error.isdigit() else "its cap"
        return (f"{size} bytes, above the job's max_result_size ({cap}: the largest result "
                f"kept; default {taskresult.DEFAULT_MAX_RESULT}, at most "
                f"{taskresult.MAX_RESULT_LIMIT}); raise it with Job(max_result_size=...). "
                "Tasks of the job on its worker can still take it as an argument")
    if status == ResultStatus.NOT_FETCHED:
        return f"the result ({size} bytes) could not be fetched: {error}"
    if status == ResultStatus.DROPPED:
        return ("the server's result store was full when it came (HQSHM_RESULT_STORE_BYTES "
                "of `hq server start`); forget finished jobs to free it")
    if status == ResultStatus.UNPICKLABLE:
        return f"the returned value could not be pickled: {error}"
    if status == ResultStatus.NOT_KEPT:
        return f"the result ({size} bytes) could not be kept on its worker: {error}"
    if status == ResultStatus.LOST:
        return "the task ended before the server restarted; results are not journaled"
    if status == ResultStatus.UNKNOWN:
        return error or "no such task"
    return f"unexpected answer {status}"


def _decode(job_id: int, task_id: int, blob: bytes) -> Any:
    try:
        return taskresult.decode(blob)
    except taskresult.ResultError as exc:
        raise ResultError(task_id=task_id, job_id=job_id, message=str(exc)) from None
