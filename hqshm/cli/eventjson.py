"""Journal records as HQ's event JSON (spec/output.md §6), one object per event.

Some events only make sense against the state they change (a canceled job names the tasks it
canceled), so the renderer keeps its own replayed books and renders each record before
applying it. Batches become one event per task, as HQ writes them; events HQ has no name for
(requeues, multi-node reservations, forgotten jobs; queue pauses, learned worker resources)
are applied but not printed. Automatic allocation has HQ's ``autoalloc-*`` events.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hqshm.cli import formats
from hqshm.cli.layouts import worker_json
from hqshm.cli.resourceview import request_json
from hqshm.cluster.ids import JobId, TaskKey, split_key, task_keys
from hqshm.cluster.protocol import StopReason
from hqshm.link.details import WorkerView
from hqshm.model.allocqueue import QueueParams
from hqshm.model.taskstates import TaskState
from hqshm.model.workerconfig import WorkerConfiguration, decode_configuration
from hqshm.server.autoalloc.state import ENDED, RUNNING
from hqshm.server.events import (
    Event,
    EventStream,
    JobSubmitted,
    TasksAborted,
    TasksCrashed,
    TasksFailed,
    TasksFinished,
    TasksStarted,
)
from hqshm.server.jobbook import UNFINISHED, JobBook
from hqshm.server.jobs import Job, compress_ranges, crash_error
from hqshm.server.journal.allocrecords import (
    AllocQueuedRecord,
    AllocStateRecord,
    QueueCreatedRecord,
    QueueRemovedRecord,
)
from hqshm.server.journal.records import (
    JobAbortedRecord,
    JobCanceledRecord,
    JobClosedRecord,
    JobOpenedRecord,
    JobSnapshot,
    JobSubmittedRecord,
    ServerStarted,
    ServerStopped,
    SubmitRecord,
    TasksAbortedRecord,
    TasksCrashedRecord,
    TasksFailedRecord,
    TasksFinishedRecord,
    TasksStartedRecord,
    WorkerConnectedRecord,
    WorkerLostRecord,
    WorkerSnapshot,
    to_event,
)
from hqshm.server.journal.snapshot import apply_snapshot
from hqshm.server.workers import WorkerBook

LOST_REASONS = {
    StopReason.STOPPED: "Stopped",
    StopReason.IDLE_TIMEOUT: "IdleTimeout",
    StopReason.TIME_LIMIT: "TimeLimitReached",
    StopReason.HEARTBEAT_LOST: "HeartbeatLost",
}
STATE_REASONS = {"STOPPED": "Stopped", "IDLE TIMEOUT": "IdleTimeout",
                 "TIME LIMIT REACHED": "TimeLimitReached", "HEARTBEAT LOST": "HeartbeatLost"}
ENDED_EVENTS = {TaskState.FINISHED: "task-finished", TaskState.FAILED: "task-failed"}


class EventRenderer:
    def __init__(self) -> None:
        events = EventStream()
        self.book = JobBook("", WorkerBook(events), events)

    def render(self, record: object) -> list[dict[str, Any]]:
        """The event objects of one record: an event is rendered against the state before it
        (then applied), a snapshot after it is applied."""
        event = to_event(record)
        if event is None:
            apply_snapshot(self.book, record)
        bodies = list(self._bodies(record, event))
        if event is not None:
            self.book.apply(event)
        return [{"time": formats.format_rfc3339(at), "event": body} for at, body in bodies]

    def _bodies(self, r: object, event: Event | None
                ) -> Iterator[tuple[float, dict[str, Any]]]:  # noqa: C901, PLR0912
        match r:
            case ServerStarted():
                yield r.at, {"type": "server-start", "server_uid": r.server_uid}
            case ServerStopped():
                yield r.at, {"type": "server-stop"}
            case WorkerConnectedRecord():
                yield r.at, _worker_connected(r.worker, decode_configuration(r.config), r.at)
            case WorkerLostRecord():
                yield r.at, {"type": "worker-lost", "id": r.worker,
                             "reason": LOST_REASONS.get(r.reason, "ConnectionLost")}
            case JobOpenedRecord():
                yield r.at, {"type": "job-open", "job_id": r.job_id, "name": r.name,
                             "max_fails": r.max_fails}
            case JobClosedRecord():
                yield r.at, {"type": "job-close", "job_id": r.job_id}
            case JobSubmittedRecord():
                assert isinstance(event, JobSubmitted)
                yield r.at, self._job_created(r, event)
            case JobCanceledRecord():
                yield r.at, {"type": "task-canceled",
                             "tasks": self._unfinished(self.book.jobs.get(JobId(r.job_id)))}
            case JobAbortedRecord():
                yield r.at, {"type": "task-aborted",
                             "tasks": self._unfinished(self.book.jobs.get(JobId(r.job_id)))}
            case TasksAbortedRecord():
                assert isinstance(event, TasksAborted)
                yield r.at, {"type": "task-aborted", "tasks": self._aborted(event)}
            case TasksStartedRecord() | TasksFinishedRecord() | TasksFailedRecord() \
                    | TasksCrashedRecord():
                yield from _task_events(event)
            case JobSnapshot():
                yield from self._job_snapshot(r)
            case QueueCreatedRecord():
                yield r.at, {"type": "autoalloc-queue-created", "queue-id": r.queue_id,
                             "params": queue_params_json(r.params)}
            case QueueRemovedRecord():
                yield r.at, {"type": "autoalloc-queue-removed", "queue-id": r.queue_id}
            case AllocQueuedRecord():
                yield r.at, {"type": "autoalloc-allocation-queued", "queue-id": r.queue_id,
                             "allocation-id": r.allocation_id, "worker-count": r.workers}
            case AllocStateRecord() if r.state == RUNNING or r.state in ENDED:
                kind = "started" if r.state == RUNNING else "finished"
                yield r.at, {"type": f"autoalloc-allocation-{kind}", "queue-id": r.queue_id,
                             "allocation-id": r.allocation_id}
            case WorkerSnapshot():
                config = decode_configuration(r.config)
                yield r.started_at, _worker_connected(r.worker, config, r.started_at)
                if r.ended_at is not None:
                    yield r.ended_at, {"type": "worker-lost", "id": r.worker,
                                       "reason": STATE_REASONS.get(r.state, "ConnectionLost")}

    def _job_created(self, r: JobSubmittedRecord, event: JobSubmitted) -> dict[str, Any]:
        existing = self.book.jobs.get(JobId(r.job_id))
        graph = len(r.submits) != 1 or not r.submits[0].is_array
        task_desc = ({"n_tasks": sum(len(s.ids) for s in event.submits)} if graph
                     else _task_desc(r.submits[0]))
        program = event.submits[0].program
        return {
            "type": "job-created", "job": r.job_id,
            "closed_job": existing is None,
            "job_desc": {"name": r.name, "max_fails": r.max_fails},
            "submit_desc": {"submit_dir": r.submit_dir,
                            "stream_path": program.stream_dir or None,
                            "task_desc": task_desc},
        }

    def _job_snapshot(self, r: JobSnapshot) -> Iterator[tuple[float, dict[str, Any]]]:
        """A compacted job (applied already): created, then where each task ended up."""
        yield r.submitted_at, {
            "type": "job-created", "job": r.job_id, "closed_job": not r.is_open,
            "job_desc": {"name": r.name, "max_fails": r.max_fails},
            "submit_desc": {"submit_dir": r.submit_dir, "stream_path": None,
                            "task_desc": {"n_tasks": sum(s.n_tasks for s in r.submits)}}}
        job = self.book.jobs[JobId(r.job_id)]
        for submit in job.submits:
            table = submit.table
            for row, task in enumerate(table.ids.tolist()):
                state = TaskState(table.state.item(row))
                at = table.ended.item(row)
                at = r.submitted_at if at != at else at  # nan: never ended
                if state in ENDED_EVENTS:
                    body: dict[str, Any] = {"type": ENDED_EVENTS[state], "job": job.id,
                                            "task": task}
                    if state == TaskState.FAILED:
                        body["error"] = table.errors.get(row, "")
                    yield at, body
                elif state in (TaskState.CANCELED, TaskState.ABORTED):
                    yield at, {"type": f"task-{state.name.lower()}",
                               "tasks": [{"job_id": job.id, "job_task_id": task}]}

    def _unfinished(self, job: Job | None) -> list[dict[str, int]]:
        if job is None:
            return []
        tasks = []
        for submit in job.submits:
            rows = submit.table.rows_in_states(UNFINISHED)
            tasks.extend({"job_id": job.id, "job_task_id": t}
                         for t in submit.table.ids[rows].tolist())
        return tasks

    def _aborted(self, event: TasksAborted) -> list[dict[str, int]]:
        keys: list[TaskKey] = list(event.keys)
        for job_id, gid in event.submits:
            submit = self.book.by_gid.get(gid)
            if submit is not None:
                rows = submit.table.rows_in_states(UNFINISHED)
                keys.extend(task_keys(JobId(job_id), submit.table.ids[rows]).tolist())
        return [{"job_id": j, "job_task_id": t} for j, t in map(split_key, keys)]


def _task_events(event: Event | None) -> Iterator[tuple[float, dict[str, Any]]]:
    """One event per task of a batch, as HQ writes them."""
    match event:
        case TasksStarted():
            for key, instance, at, variant in event.started:
                job, task = split_key(key)
                body: dict[str, Any] = {"type": "task-started", "job": job, "task": task,
                                        "instance": instance, "worker": event.worker}
                if variant:
                    body["variant"] = variant
                yield at, body
        case TasksFinished():
            for key, *_rest in event.finished:
                job, task = split_key(key)
                yield event.at, {"type": "task-finished", "job": job, "task": task}
        case TasksFailed():
            for key, *_rest, error in event.failed:
                job, task = split_key(key)
                yield event.at, {"type": "task-failed", "job": job, "task": task,
                                 "error": error}
        case TasksCrashed():
            for key, count in zip(event.keys, event.crashes, strict=True):
                job, task = split_key(key)
                yield event.at, {"type": "task-failed", "job": job, "task": task,
                                 "error": crash_error(count)}


def _task_desc(s: SubmitRecord) -> dict[str, Any]:
    import numpy as np

    ids = np.frombuffer(s.ids, dtype="<u4")
    t = s.template
    return {
        "ids": ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b, _ in compress_ranges(ids)),
        "resources": request_json(t.request),
        "time_limit": t.time_limit,
        "priority": t.priority,
        "crash_limit": t.crash_limit,
    }


def _worker_connected(wid: int, config: WorkerConfiguration, at: float) -> dict[str, Any]:
    view = WorkerView(id=wid, state="RUNNING", config=config, started_at=at, ended_at=None,
                      assigned_tasks=0, running_tasks=0, last_task=None, multinode="")
    return {"type": "worker-connected", "id": wid,
            "configuration": worker_json(view)["configuration"]}


def queue_params_json(p: QueueParams) -> dict[str, Any]:
    """A queue's parameters as HQ's ``AllocationQueueParams`` (durations in seconds)."""
    from hqshm.server.autoalloc.script import worker_args

    return {
        "manager": "PBS" if p.manager == "pbs" else "Slurm", "name": p.name,
        "max_workers_per_alloc": p.max_workers_per_alloc, "backlog": p.backlog,
        "timelimit": float(p.time_limit), "additional_args": list(p.additional_args),
        "worker_start_cmd": p.worker_start_cmd, "worker_stop_cmd": p.worker_stop_cmd,
        "worker_wrap_cmd": p.worker_wrap_cmd, "max_worker_count": p.max_worker_count,
        "idle_timeout": p.idle_timeout, "worker_args": worker_args(p),
    }
