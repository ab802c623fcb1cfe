"""What happens to jobs, tasks and workers, as one stream of events.

The job book and the worker book change their state only by applying these events, and
publish each one after applying it, in order; so a fresh pair of books fed the same events
reaches the same state (the journal's replay), and every consumer (waiting clients, the
journal, `hq journal stream`, a dashboard) reads one stream.

Events are compact because ten thousand tasks a second pass through here: a batch of task
reports is one event that holds the core's own batch (``Started``/``Finished``/``FailedForGood``
tuples, keyed by ``TaskKey``, so one event may span jobs), and a submit holds its ids as one
numpy array. The sequences inside an event are never changed after it is built. Times are epoch
seconds, passed in by whoever read the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Protocol

from hqshm.cluster.core import FailedForGood
from hqshm.cluster.firstuse import np
from hqshm.cluster.frozen import frozen
from hqshm.cluster.ids import (
    GroupId,
    InstanceId,
    JobId,
    TaskId,
    TaskKey,
    WorkerId,
    job_of,
    jobs_of,
)
from hqshm.cluster.protocol import Finished, Started
from hqshm.model.program import ProgramSpec
from hqshm.model.submission import TaskTemplate
from hqshm.model.workerconfig import WorkerConfiguration

_key_of = itemgetter(0)  # of a task report; map() with it makes no Python call per task


# --- jobs -----------------------------------------------------------------------------------


@frozen
class NewSubmit:
    """One submit of a ``JobSubmitted``: ids (uint32, sorted), template and resolved program.

    Compared by identity: it holds a numpy array, which has no single truth value.
    """

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    gid: GroupId  # also the id of its core group
    template: TaskTemplate
    program: ProgramSpec
    ids: np.ndarray
    entries: Sequence[bytes] | None  # HQ_ENTRY of each id, raw
    batch: int  # submits made by one request share it (a job file makes several)
    is_array: bool  # one template for all its tasks (CLI submit, job-file [array])
    deps: Mapping[TaskId, tuple[TaskId, ...]]  # task id -> its prerequisites (job files)
    after: int  # `--after` prerequisite tasks, finished or not
    # Those of them that had not finished at submit time: a restored server waits for them.
    after_keys: tuple[TaskKey, ...] = ()


@frozen
class JobOpened:
    """`hq job open`: a job that takes submits until it is closed."""

    job_id: JobId
    name: str
    max_fails: int | None
    at: float

    def jobs(self) -> Iterable[JobId]:
        return (self.job_id,)


@frozen
class JobSubmitted:
    """A new job, or more tasks for an open one; its tasks start WAITING."""

    job_id: JobId
    name: str
    max_fails: int | None
    submit_dir: str
    submits: tuple[NewSubmit, ...]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return (self.job_id,)


@frozen
class JobClosed:
    job_id: JobId
    at: float

    def jobs(self) -> Iterable[JobId]:
        return (self.job_id,)


@frozen
class JobCanceled:
    """`hq job cancel`: every unfinished task of the job is CANCELED."""

    job_id: JobId
    reason: str | None
    at: float

    def jobs(self) -> Iterable[JobId]:
        return (self.job_id,)


@frozen
class JobAborted:
    """More failures than --max-fails: every unfinished task of the job is ABORTED."""

    job_id: JobId
    at: float

    def jobs(self) -> Iterable[JobId]:
        return (self.job_id,)


@frozen
class JobsForgotten:
    """`hq job forget`: completed jobs dropped from memory."""

    job_ids: tuple[JobId, ...]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return self.job_ids


# --- tasks ----------------------------------------------------------------------------------


@frozen
class TasksStarted:
    worker: WorkerId
    started: Sequence[Started]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return jobs_of(map(_key_of, self.started))


@frozen
class TasksFinished:
    worker: WorkerId
    finished: Sequence[Finished]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return jobs_of(map(_key_of, self.finished))


@frozen
class TasksFailed:
    """Failures for good (retries spent); the items' ``retryable`` flag is left out."""

    worker: WorkerId
    failed: Sequence[FailedForGood]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return jobs_of(map(_key_of, self.failed))


@frozen
class TasksRequeued:
    """Tasks to run again under these new instance ids (lost worker, retry)."""

    keys: Sequence[TaskKey]
    instances: Sequence[InstanceId]
    at: float
    crashes: Sequence[int] = ()  # lost workers each ran on so far (empty: unchanged)

    def jobs(self) -> Iterable[JobId]:
        return jobs_of(self.keys)


@frozen
class TasksCrashed:
    """Tasks that were running on a lost worker once too often: FAILED."""

    worker: WorkerId
    keys: Sequence[TaskKey]
    crashes: Sequence[int]
    never_restart: bool
    at: float

    def jobs(self) -> Iterable[JobId]:
        return jobs_of(self.keys)


@frozen
class TasksAborted:
    """Tasks that lost a prerequisite, and whole submits ((job id, gid) pairs) that did."""

    keys: Sequence[TaskKey]
    submits: Sequence[tuple[JobId, GroupId]]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return jobs_of(self.keys) | {job for job, _gid in self.submits}


@frozen
class TasksAdopted:
    """A node that outlived its server registered again and took back these running tasks:
    they run on its new registration (a restored server shows them there)."""

    worker: WorkerId
    keys: Sequence[TaskKey]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return jobs_of(self.keys)


@frozen
class TaskNodesReserved:
    """A multi-node task was given these workers; the first one runs it."""

    key: TaskKey
    workers: tuple[WorkerId, ...]
    at: float

    def jobs(self) -> Iterable[JobId]:
        return (job_of(self.key),)


# --- workers --------------------------------------------------------------------------------


@frozen
class WorkerConnected:
    worker: WorkerId
    config: WorkerConfiguration
    at: float

    def jobs(self) -> Iterable[JobId]:
        return ()


@frozen
class WorkerLost:
    """A worker left; ``reason`` is a ``cluster.protocol.StopReason``."""

    worker: WorkerId
    reason: str
    at: float

    def jobs(self) -> Iterable[JobId]:
        return ()


Event = (JobOpened | JobSubmitted | JobClosed | JobCanceled | JobAborted | JobsForgotten
         | TasksStarted | TasksFinished | TasksFailed | TasksRequeued | TasksCrashed
         | TasksAborted | TasksAdopted | TaskNodesReserved | WorkerConnected | WorkerLost)


class EventSink(Protocol):
    """Where events go: the stream, and each of its consumers."""

    def emit(self, event: Event) -> None: ...


class EventStream:
    """Hands every event to each consumer, in the order they subscribed."""

    def __init__(self) -> None:
        self._consumers: list[EventSink] = []

    def subscribe(self, consumer: EventSink) -> None:
        self._consumers.append(consumer)

    def emit(self, event: Event) -> None:
        for consumer in self._consumers:
            consumer.emit(event)
