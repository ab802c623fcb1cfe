"""Function tasks' results on the server: kept for clients until the job is forgotten.

Nodes send each result with the task's completion report (``TaskUpdates.results``, before the
ends of those tasks): inline when it is at most the job's ``max_result_size``, else only its
size (the value then stays on its node). The store keeps the blobs of the jobs in the job book,
bounded in total bytes (``HQSHM_RESULT_STORE_BYTES`` at server start, default 2 GiB); a result
past the bound is recorded as dropped, so a client gets a clear error instead of the value.
``JobsForgotten`` events release a job's results (the store is a consumer of the event stream:
the job book is not touched). Results are not journaled: a restarted server reports tasks that
ended before it started as lost.

A client asks with ``TaskResultsRequest`` and gets, per task, its ``ResultStatus`` now; it
asks again for those still pending (hqshm/api/results.py). One answer carries at most
``ANSWER_BYTES`` of blobs; the rest are LATER.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

from hqshm.cluster.ids import InstanceId, JobId, TaskId, TaskKey, WorkerId, split_key, task_key
from hqshm.cluster.protocol import ComputeTasks, ResultItem
from hqshm.link.requests import TaskResultsRequest
from hqshm.link.responses import ResultStatus, TaskResultsResponse
from hqshm.model.taskstates import TaskState
from hqshm.server.events import Event, JobsForgotten
from hqshm.server.jobbook import JobBook

logger = logging.getLogger(__name__)

DEFAULT_STORE_BYTES = 2 << 30
STORE_VARIABLE = "HQSHM_RESULT_STORE_BYTES"
ANSWER_BYTES = 64 << 20  # blobs in one answer (the client link's frame limit is 256 MiB)
ENTRY_COST = 96  # bytes counted per kept result beyond its blob (dict entry and tuple)

_KIND_STATUS = {0: ResultStatus.VALUE, 1: ResultStatus.EXCEPTION, 2: ResultStatus.UNPICKLABLE}
# (kind, size, blob, instance, worker that made it); kind -1: dropped (the store was full)
Kept = tuple[int, int, bytes, InstanceId, WorkerId]
_DROPPED = -1


def store_limit(environ: dict[str, str] | None = None) -> int:
    """The store's bound in bytes, from the environment (a number of bytes)."""
    value = (os.environ if environ is None else environ).get(STORE_VARIABLE, "")
    if value.isdigit():
        return int(value)
    if value:
        logger.warning("Ignoring %s=%r: not a number of bytes", STORE_VARIABLE, value)
    return DEFAULT_STORE_BYTES


class ResultStore:
    """Results by job and task; ``emit`` takes the event stream (forgotten jobs)."""

    def __init__(self, book: JobBook, limit: int, started_at: float) -> None:
        self.book = book
        self.limit = limit
        self.started_at = started_at  # tasks that ended before have no result here
        self.jobs: dict[JobId, dict[TaskId, Kept]] = {}
        self.total = 0
        self.warned = False
        # Tells the nodes which jobs' results to drop (the loop's outbox, from process.py).
        self.on_release: Callable[[tuple[JobId, ...]], None] | None = None

    # -- in ------------------------------------------------------------------------------

    def add(self, worker: WorkerId, items: tuple[ResultItem, ...]) -> None:
        """Keep the results of tasks that this instance is running (or just finished)."""
        jobs = self.book.jobs
        for key, instance, kind, size, blob in items:
            job_id, task_id = split_key(key)
            job = jobs.view(job_id)
            found = None if job is None else job.locate(task_id)
            if found is None:
                continue
            submit, row = found
            table = submit.table
            if instance < table.instance.item(row):
                continue  # an instance that was given back meanwhile
            kept = self.jobs.setdefault(job_id, {})
            old = kept.pop(task_id, None)
            if old is not None:
                self.total -= len(old[2]) + ENTRY_COST
            cost = len(blob) + ENTRY_COST
            if self.total + cost > self.limit:
                if not self.warned:
                    logger.warning("The result store is full (%d bytes, %s); results are "
                                   "dropped until jobs are forgotten", self.limit,
                                   STORE_VARIABLE)
                    self.warned = True
                kept[task_id] = (_DROPPED, size, b"", instance, worker)
                continue
            kept[task_id] = (kind, size, blob, instance, worker)
            self.total += cost

    def emit(self, event: Event) -> None:
        if isinstance(event, JobsForgotten):
            released = tuple(job_id for job_id in event.job_ids if self._release(job_id))
            if released and self.on_release is not None:
                self.on_release(released)

    def _release(self, job_id: JobId) -> bool:
        """Drop a job's results; whether it had any (nodes may keep some then: a node keeps a
        result only when it also sends it)."""
        kept = self.jobs.pop(job_id, None)
        if kept:
            self.total -= sum(len(k[2]) + ENTRY_COST for k in kept.values()
                              if k[0] != _DROPPED)
            self.warned = False
        return bool(kept)

    # -- to nodes ------------------------------------------------------------------------

    def attach(self, worker: WorkerId, message: ComputeTasks) -> ComputeTasks:
        """Add to ``message`` the results that its tasks' dependencies made on other workers
        (a task may take them as arguments: hqshm/taskresult.py); costs nothing for jobs
        without results."""
        if not self.jobs:
            return message
        attached: dict[TaskKey, tuple[TaskKey, int, bytes]] = {}
        for key in message.keys:
            job_id, task_id = split_key(key)
            kept = self.jobs.get(job_id)
            job = self.book.jobs.view(job_id) if kept else None
            found = None if job is None else job.locate(task_id)
            if found is None:
                continue
            for dep in found[0].deps.get(task_id, ()):
                result = kept.get(dep)  # type: ignore[union-attr]
                if (result is not None and result[4] != worker and result[2]
                        and result[0] in (0, 1)):
                    dep_key = task_key(job_id, dep)
                    attached[dep_key] = (dep_key, result[0], result[2])
        if not attached:
            return message
        return dataclasses.replace(message, results=tuple(attached.values()))

    # -- out -----------------------------------------------------------------------------

    def handlers(self) -> dict[type, Callable[[object, float], object]]:
        return {TaskResultsRequest: self.answer}  # type: ignore[dict-item]

    def answer(self, request: TaskResultsRequest, now: float) -> TaskResultsResponse:
        job = self.book.jobs.view(request.job_id)
        if job is None:
            error = f"Job {request.job_id} not found"
            return TaskResultsResponse(tuple((t, ResultStatus.UNKNOWN, 0, b"", error)
                                             for t in request.task_ids))
        kept = self.jobs.get(request.job_id, {})
        budget = ANSWER_BYTES
        items = []
        for task_id in request.task_ids:
            item = self._status(job, kept, task_id)
            if item[3]:
                if len(item[3]) > budget and len(items) > 0:
                    item = (task_id, ResultStatus.LATER, item[2], b"", "")
                budget -= len(item[3])
            items.append(item)
        return TaskResultsResponse(tuple(items))

    def _status(self, job: object, kept: dict[TaskId, Kept],
                task_id: TaskId) -> tuple[int, int, int, bytes, str]:
        found = job.locate(task_id)  # type: ignore[attr-defined]
        if found is None:
            return task_id, ResultStatus.UNKNOWN, 0, b"", f"Task {task_id} not found"
        submit, row = found
        table = submit.table
        state = table.state.item(row)
        if state in (TaskState.WAITING, TaskState.RUNNING):
            return task_id, ResultStatus.PENDING, 0, b"", ""
        error = table.errors.get(row, "")
        if state in (TaskState.CANCELED, TaskState.ABORTED):
            word = "canceled" if state == TaskState.CANCELED else "aborted"
            text = f"Task {task_id} was {word}" + (f": {error}" if error else "")
            return task_id, ResultStatus.CANCELED, 0, b"", text
        result = kept.get(task_id)
        if result is None:
            if table.ended.item(row) < self.started_at:
                return task_id, ResultStatus.LOST, 0, b"", ""
            status = ResultStatus.NONE if state == TaskState.FINISHED else ResultStatus.FAILED
            return task_id, status, 0, b"", error
        kind, size, blob, _instance, _worker = result
        if kind == _DROPPED:
            return task_id, ResultStatus.DROPPED, size, b"", ""
        status = _KIND_STATUS.get(kind, ResultStatus.UNPICKLABLE)
        if status == ResultStatus.UNPICKLABLE:
            return task_id, status, size, b"", blob.decode("utf-8", "replace")
        if not blob:
            return task_id, ResultStatus.TOO_LARGE, size, b"", error
        return task_id, status, size, blob, error
