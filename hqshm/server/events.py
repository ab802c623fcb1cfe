"""What happens to jobs, tasks and workers, as one stream of events.

The job book and the worker book change their state only by applying these events, and
publish each one after applying it, in order; so a fresh pair of books fed the same events
reaches the same state (the journal's replay), and every consumer (waiting clients, the
journal, `hq journal stream`, a dashboard) reads one stream.

Events are compact because ten thousand tasks a second pass through here: a batch of task
reports is one event that holds the core's own batch (``Started``/``Finished``/``Failed`` tuples,
keys of ``job << 32 | task``, so one event may span jobs), and a submit holds its ids as one
numpy array. The sequences inside an event are never changed after it is built. Times are epoch
seconds, passed in by whoever read the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hqshm.cluster.protocol import Failed, Finished, Started
from hqshm.model.program import ProgramSpec
from hqshm.model.submission import TaskTemplate
from hqshm.model.workerconfig import WorkerConfiguration

JOB_SHIFT = 32  # a task key is job id << 32 | task id (cluster.protocol.task_key)


# --- jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class NewSubmit:
    """One submit of a ``JobSubmitted``: ids (uint32, sorted), template and resolved program.

    Compared by identity: it holds a numpy array, which has no single truth value.
    """

    gid: int  # also the id of its core group
    template: TaskTemplate
    program: ProgramSpec
    ids: np.ndarray
    entries: Sequence[bytes] | None  # HQ_ENTRY of each id, raw
    batch: int  # submits made by one request share it (a job file makes several)
    is_array: bool  # one template for all its tasks (CLI submit, job-file [array])
    deps: Mapping[int, tuple[int, ...]]  # task id -> its prerequisites (job files)
    after: int  # `--after` prerequisite tasks, finished or not


@dataclass(frozen=True, slots=True)
class JobOpened:
    """`hq job open`: a job that takes submits until it is closed."""

    job_id: int
    name: str
    max_fails: int | None
    at: float

    def jobs(self) -> Iterable[int]:
        return (self.job_id,)


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    """A new job, or more tasks for an open one; its tasks start WAITING."""

    job_id: int
    name: str
    max_fails: int | None
    submit_dir: str
    submits: tuple[NewSubmit, ...]
    at: float

    def jobs(self) -> Iterable[int]:
        return (self.job_id,)


@dataclass(frozen=True, slots=True)
class JobClosed:
    job_id: int
    at: float

    def jobs(self) -> Iterable[int]:
        return (self.job_id,)


@dataclass(frozen=True, slots=True)
class JobCanceled:
    """`hq job cancel`: every unfinished task of the job is CANCELED."""

    job_id: int
    reason: str | None
    at: float

    def jobs(self) -> Iterable[int]:
        return (self.job_id,)


@dataclass(frozen=True, slots=True)
class JobAborted:
    """More failures than --max-fails: every unfinished task of the job is ABORTED."""

    job_id: int
    at: float

    def jobs(self) -> Iterable[int]:
        return (self.job_id,)


@dataclass(frozen=True, slots=True)
class JobsForgotten:
    """`hq job forget`: completed jobs dropped from memory."""

    job_ids: tuple[int, ...]
    at: float

    def jobs(self) -> Iterable[int]:
        return self.job_ids


# --- tasks ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TasksStarted:
    worker: int
    started: Sequence[Started]
    at: float

    def jobs(self) -> Iterable[int]:
        return {item[0] >> JOB_SHIFT for item in self.started}


@dataclass(frozen=True, slots=True)
class TasksFinished:
    worker: int
    finished: Sequence[Finished]
    at: float

    def jobs(self) -> Iterable[int]:
        return {item[0] >> JOB_SHIFT for item in self.finished}


@dataclass(frozen=True, slots=True)
class TasksFailed:
    """Failures for good (retries spent); the items' ``retryable`` flag is left out."""

    worker: int
    failed: Sequence[Failed]
    at: float

    def jobs(self) -> Iterable[int]:
        return {item[0] >> JOB_SHIFT for item in self.failed}


@dataclass(frozen=True, slots=True)
class TasksRequeued:
    """Tasks to run again under these new instance ids (lost worker, retry)."""

    keys: Sequence[int]
    instances: Sequence[int]
    at: float

    def jobs(self) -> Iterable[int]:
        return {key >> JOB_SHIFT for key in self.keys}


@dataclass(frozen=True, slots=True)
class TasksCrashed:
    """Tasks that were running on a lost worker once too often: FAILED."""

    worker: int
    keys: Sequence[int]
    crashes: Sequence[int]
    never_restart: bool
    at: float

    def jobs(self) -> Iterable[int]:
        return {key >> JOB_SHIFT for key in self.keys}


@dataclass(frozen=True, slots=True)
class TasksAborted:
    """Tasks that lost a prerequisite, and whole submits ((job id, gid) pairs) that did."""

    keys: Sequence[int]
    submits: Sequence[tuple[int, int]]
    at: float

    def jobs(self) -> Iterable[int]:
        return {key >> JOB_SHIFT for key in self.keys} | {job for job, _gid in self.submits}


@dataclass(frozen=True, slots=True)
class TaskNodesReserved:
    """A multi-node task was given these workers; the first one runs it."""

    key: int
    workers: tuple[int, ...]
    at: float

    def jobs(self) -> Iterable[int]:
        return (self.key >> JOB_SHIFT,)


# --- workers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerConnected:
    worker: int
    config: WorkerConfiguration
    at: float

    def jobs(self) -> Iterable[int]:
        return ()


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """A worker left; ``reason`` is a ``cluster.protocol.StopReason``."""

    worker: int
    reason: str
    at: float

    def jobs(self) -> Iterable[int]:
        return ()


Event = (JobOpened | JobSubmitted | JobClosed | JobCanceled | JobAborted | JobsForgotten
         | TasksStarted | TasksFinished | TasksFailed | TasksRequeued | TasksCrashed
         | TasksAborted | TaskNodesReserved | WorkerConnected | WorkerLost)


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
