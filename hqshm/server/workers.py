"""Workers as users see them: configuration, state word, start and end, last task.

The cluster core forgets a worker when it leaves; this book keeps it (offline workers stay
listed with their final state, spec/deployment.md §4.2). Joins and losses are events of the
server's one stream (``server.events``), applied here and then published, like the job book's.
"""

from __future__ import annotations

from hqshm.cluster.frozen import mutable
from hqshm.cluster.ids import JobId, TaskId, WorkerId
from hqshm.cluster.protocol import StopReason
from hqshm.link.details import WorkerView
from hqshm.model.workerconfig import WorkerConfiguration
from hqshm.server.events import EventSink, WorkerConnected, WorkerLost

STATE_OF_REASON = {
    StopReason.STOPPED: "STOPPED",
    StopReason.IDLE_TIMEOUT: "IDLE TIMEOUT",
    StopReason.TIME_LIMIT: "TIME LIMIT REACHED",
    StopReason.CONNECTION_LOST: "CONNECTION LOST",
    StopReason.HEARTBEAT_LOST: "HEARTBEAT LOST",
}


@mutable
class WorkerRecord:
    id: WorkerId
    config: WorkerConfiguration
    started_at: float
    state: str = "RUNNING"
    ended_at: float | None = None
    last_task: tuple[JobId, TaskId, float] | None = None

    @property
    def online(self) -> bool:
        return self.ended_at is None


class WorkerBook:
    def __init__(self, events: EventSink) -> None:
        self.events = events
        self.workers: dict[WorkerId, WorkerRecord] = {}

    def joined(self, wid: WorkerId, config: WorkerConfiguration, now: float) -> WorkerRecord:
        event = WorkerConnected(wid, config, now)
        self.apply(event)
        self.events.emit(event)
        return self.workers[wid]

    def left(self, wid: WorkerId, reason: str, now: float) -> None:
        record = self.workers.get(wid)
        if record is not None and record.online:
            event = WorkerLost(wid, reason, now)
            self.apply(event)
            self.events.emit(event)

    def apply(self, event: WorkerConnected | WorkerLost) -> None:
        if isinstance(event, WorkerConnected):
            self.workers[event.worker] = WorkerRecord(event.worker, event.config, event.at)
            return
        record = self.workers[event.worker]
        record.state = STATE_OF_REASON.get(event.reason, "CONNECTION LOST")
        record.ended_at = event.at

    def hostname(self, wid: WorkerId) -> str:
        record = self.workers.get(wid)
        return record.config.hostname if record is not None else ""

    def view(self, record: WorkerRecord, assigned: int = 0, running: int = 0,
             multinode: str = "") -> WorkerView:
        return WorkerView(
            id=record.id,
            state=record.state,
            config=record.config,
            started_at=record.started_at,
            ended_at=record.ended_at,
            assigned_tasks=assigned,
            running_tasks=running,
            last_task=record.last_task,
            multinode=multinode,
        )
