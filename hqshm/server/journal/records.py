"""What a journal record holds: one event of ``server.events``, or a piece of a snapshot.

Events become records column by column: a batch of task reports is a few packed arrays, not an
object per task, so journaling costs little on the hot path. Compaction and ``hq journal
prune`` write snapshots instead (``Counters``, one ``JobSnapshot`` per job, one
``WorkerSnapshot`` per worker), whose columns are delta-coded and compressed: a finished job of
a million tasks is a few megabytes. Every record is a message of one codec registry, so reading
a journal validates it like any message from outside.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import ClassVar

from hqshm.cluster.codec import Registry
from hqshm.cluster.firstuse import np
from hqshm.cluster.frozen import frozen
from hqshm.cluster.ids import GroupId, InstanceId, JobId, TaskId, TaskKey, WorkerId
from hqshm.model.program import decode_program
from hqshm.model.submission import TaskTemplate
from hqshm.model.taskstates import TaskState
from hqshm.model.workerconfig import decode_configuration
from hqshm.server.events import (
    Event,
    JobAborted,
    JobCanceled,
    JobClosed,
    JobOpened,
    JobsForgotten,
    JobSubmitted,
    NewSubmit,
    TaskNodesReserved,
    TasksAborted,
    TasksAdopted,
    TasksCrashed,
    TasksFailed,
    TasksFinished,
    TasksRequeued,
    TasksStarted,
    WorkerConnected,
    WorkerLost,
)
from hqshm.server.journal.frames import PROTOCOL, SERVER_STARTED_TAG

JOURNAL = Registry("journal", PROTOCOL)

_U8, _U32, _U64, _F64, _I64 = "<u1", "<u4", "<u8", "<f8", "<i8"


def pack(values: Sequence[float] | np.ndarray, dtype: str) -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()


def unpack(data: bytes, dtype: str) -> np.ndarray:
    if len(data) % np.dtype(dtype).itemsize:
        raise ValueError("a packed column of the wrong length")
    return np.frombuffer(data, dtype=dtype)


# --- server --------------------------------------------------------------------------------


@JOURNAL.message
@frozen
class ServerStarted:
    TAG: ClassVar[int] = SERVER_STARTED_TAG
    server_uid: str
    at: float


@JOURNAL.message
@frozen
class ServerStopped:
    TAG: ClassVar[int] = 2
    at: float


# --- events --------------------------------------------------------------------------------


@frozen
class SubmitRecord:
    gid: int
    template: TaskTemplate
    program: bytes
    ids: bytes  # uint32
    entries: tuple[bytes, ...] | None
    batch: int
    is_array: bool
    deps: dict[int, tuple[int, ...]]
    after: int
    after_keys: bytes  # uint64


@JOURNAL.message
@frozen
class JobSubmittedRecord:
    TAG: ClassVar[int] = 10
    job_id: int
    name: str
    max_fails: int | None
    submit_dir: str
    submits: tuple[SubmitRecord, ...]
    at: float


@JOURNAL.message
@frozen
class JobOpenedRecord:
    TAG: ClassVar[int] = 11
    job_id: int
    name: str
    max_fails: int | None
    at: float


@JOURNAL.message
@frozen
class JobClosedRecord:
    TAG: ClassVar[int] = 12
    job_id: int
    at: float


@JOURNAL.message
@frozen
class JobCanceledRecord:
    TAG: ClassVar[int] = 13
    job_id: int
    reason: str | None
    at: float


@JOURNAL.message
@frozen
class JobAbortedRecord:
    TAG: ClassVar[int] = 14
    job_id: int
    at: float


@JOURNAL.message
@frozen
class JobsForgottenRecord:
    TAG: ClassVar[int] = 15
    job_ids: tuple[int, ...]
    at: float


@JOURNAL.message
@frozen
class TasksStartedRecord:
    TAG: ClassVar[int] = 20
    worker: int
    keys: bytes  # uint64
    instances: bytes  # uint32
    times: bytes  # float64
    variants: bytes  # uint32
    at: float


@JOURNAL.message
@frozen
class TasksFinishedRecord:
    TAG: ClassVar[int] = 21
    worker: int
    keys: bytes
    instances: bytes
    starts: bytes
    ends: bytes
    variants: bytes
    at: float


@JOURNAL.message
@frozen
class TasksFailedRecord:
    TAG: ClassVar[int] = 22
    worker: int
    keys: bytes
    instances: bytes
    starts: bytes
    ends: bytes
    variants: bytes
    errors: tuple[str, ...]
    at: float


@JOURNAL.message
@frozen
class TasksRequeuedRecord:
    TAG: ClassVar[int] = 23
    keys: bytes
    instances: bytes
    crashes: bytes  # uint32, empty when the event held none
    at: float


@JOURNAL.message
@frozen
class TasksCrashedRecord:
    TAG: ClassVar[int] = 24
    worker: int
    keys: bytes
    crashes: bytes
    never_restart: bool
    at: float


@JOURNAL.message
@frozen
class TasksAbortedRecord:
    TAG: ClassVar[int] = 25
    keys: bytes
    submits: tuple[tuple[int, int], ...]
    at: float


@JOURNAL.message
@frozen
class TaskNodesRecord:
    TAG: ClassVar[int] = 26
    key: int
    workers: tuple[int, ...]
    at: float


@JOURNAL.message
@frozen
class TasksAdoptedRecord:
    TAG: ClassVar[int] = 27
    worker: int
    keys: bytes
    at: float


@JOURNAL.message
@frozen
class WorkerConnectedRecord:
    TAG: ClassVar[int] = 30
    worker: int
    config: bytes  # the worker's own encoding of its configuration
    at: float


@JOURNAL.message
@frozen
class WorkerLostRecord:
    TAG: ClassVar[int] = 31
    worker: int
    reason: str
    at: float


# --- snapshots -----------------------------------------------------------------------------


@JOURNAL.message
@frozen
class Counters:
    TAG: ClassVar[int] = 40
    next_job_id: int
    next_gid: int
    next_worker_id: int


@frozen
class SubmitSnapshot:
    """A submit with its task table; columns compressed (``compress_column``)."""

    gid: int
    n_tasks: int
    template: TaskTemplate
    program: bytes
    ids: bytes
    state: bytes
    instance: bytes
    worker: bytes
    started: bytes
    ended: bytes
    errors: dict[int, str]
    entries: tuple[bytes, ...] | None
    batch: int
    is_array: bool
    deps: dict[int, tuple[int, ...]]
    nodes: dict[int, tuple[int, ...]]
    after: int
    after_keys: bytes
    crashes: dict[int, int]


@JOURNAL.message
@frozen
class JobSnapshot:
    TAG: ClassVar[int] = 41
    job_id: int
    name: str
    max_fails: int | None
    submit_dir: str
    submitted_at: float
    is_open: bool
    cancel_reason: str | None
    finished_at: float | None
    worker_ids: tuple[int, ...]
    submits: tuple[SubmitSnapshot, ...]


@JOURNAL.message
@frozen
class WorkerSnapshot:
    TAG: ClassVar[int] = 42
    worker: int
    config: bytes
    started_at: float
    state: str
    ended_at: float | None
    last_task: tuple[int, int, float] | None


# --- columns of snapshots ------------------------------------------------------------------

_NAN_US = -(2**63)  # np.iinfo(np.int64).min: "never" among times in microseconds


# Columns this short are kept raw: deflating one costs 30 us and saves nothing, and every
# finished job is sealed into a snapshot (server/jobstore.py), most of them of one task.
RAW_COLUMN = 16


def compress_ints(values: np.ndarray, dtype: str) -> bytes:
    """Delta-coded, then deflated: sorted ids and repeated values shrink to almost nothing.
    The last two bytes name the dtype: in lower case (``u4``) after deflated deltas, in upper
    case (``U4``) after the raw values of a short column."""
    code = dtype[-2:]
    if len(values) <= RAW_COLUMN:
        return values.astype("<" + code).tobytes() + code.upper().encode()
    wide = values.astype(np.int64)
    deltas = np.diff(wide, prepend=np.int64(0)) if len(wide) else wide
    return zlib.compress(deltas.astype(_I64).tobytes(), 1) + code.encode()


def decompress_ints(data: bytes, n: int) -> np.ndarray:
    code = data[-2:].decode("ascii")
    if code not in _COLUMN_CODES:
        raise ValueError("a snapshot column of an unknown type")
    if code.isupper():
        values = unpack(data[:-2], "<" + code.lower())
    else:
        values = np.cumsum(unpack(zlib.decompress(data[:-2]), _I64))
    if len(values) != n:
        raise ValueError("a snapshot column of the wrong length")
    return values.astype("<" + code.lower())


_COLUMN_CODES = frozenset(c for k in ("u1", "u4", "u8", "i8") for c in (k, k.upper()))


def state_counts(columns: Iterable[tuple[bytes, int]]) -> np.ndarray:
    """Tasks by state (indexed by ``TaskState``) over compressed state columns of (data, n)
    tasks; ValueError (zlib.error) for a column that does not read or a state out of range."""
    counts = np.zeros(len(TaskState), dtype=np.int64)
    for data, n in columns:
        if data.endswith(b"U1") and len(data) == n + 2:  # a short raw column: a byte a task
            for state in data[:-2]:  # a restore reads 100,000 of these: no numpy per column
                if state >= len(TaskState):
                    raise ValueError("a task state out of range")
                counts[state] += 1
            continue
        states = decompress_ints(data, n)
        if n and int(states.max()) >= len(TaskState):
            raise ValueError("a task state out of range")
        counts += np.bincount(states, minlength=len(TaskState))
    return counts


def compress_times(values: np.ndarray) -> bytes:
    """Epoch seconds kept to the microsecond (what every view shows, and more); a short
    column as raw doubles (``F8``), since converting it costs more than it saves."""
    if len(values) <= RAW_COLUMN:
        return values.astype(_F64).tobytes() + b"F8"
    micros = np.where(np.isnan(values), _NAN_US, np.round(np.nan_to_num(values) * 1e6))
    with np.errstate(over="ignore"):
        return compress_ints(micros.astype(np.int64), _I64)


def decompress_times(data: bytes, n: int) -> np.ndarray:
    if data[-2:] == b"F8":
        values = unpack(data[:-2], _F64)
        if len(values) != n:
            raise ValueError("a snapshot column of the wrong length")
        return values.copy()
    micros = decompress_ints(data, n)
    return np.where(micros == _NAN_US, np.nan, micros / 1e6)


# --- events to records and back ------------------------------------------------------------


def _submit_record(new: NewSubmit) -> SubmitRecord:
    return SubmitRecord(new.gid, new.template, new.program.encode(), pack(new.ids, _U32),
                        tuple(new.entries) if new.entries is not None else None, new.batch,
                        new.is_array, {int(k): tuple(v) for k, v in new.deps.items()},
                        new.after, pack(new.after_keys, _U64))


def _new_submit(rec: SubmitRecord) -> NewSubmit:
    return NewSubmit(GroupId(rec.gid), rec.template, decode_program(rec.program),
                     unpack(rec.ids, _U32).copy(), rec.entries, rec.batch, rec.is_array,
                     {TaskId(k): tuple(TaskId(d) for d in v) for k, v in rec.deps.items()},
                     rec.after,
                     tuple(TaskKey(k) for k in unpack(rec.after_keys, _U64).tolist()))


def _columns(items: Sequence[tuple], *spec: tuple[int, str]) -> list[bytes]:  # type: ignore[type-arg]
    return [pack([item[i] for item in items], dtype) for i, dtype in spec]


def to_record(event: Event) -> object:  # noqa: C901, PLR0911 - one case per event type
    """The journal record of one event."""
    match event:
        case TasksStarted():
            c = _columns(event.started, (0, _U64), (1, _U32), (2, _F64), (3, _U32))
            return TasksStartedRecord(event.worker, c[0], c[1], c[2], c[3], event.at)
        case TasksFinished():
            c = _columns(event.finished, (0, _U64), (1, _U32), (2, _F64), (3, _F64), (4, _U32))
            return TasksFinishedRecord(event.worker, c[0], c[1], c[2], c[3], c[4], event.at)
        case TasksFailed():
            c = _columns(event.failed, (0, _U64), (1, _U32), (2, _F64), (3, _F64), (4, _U32))
            return TasksFailedRecord(event.worker, c[0], c[1], c[2], c[3], c[4],
                                     tuple(item[5] for item in event.failed), event.at)
        case TasksRequeued():
            return TasksRequeuedRecord(pack(event.keys, _U64), pack(event.instances, _U32),
                                       pack(event.crashes, _U32), event.at)
        case TasksCrashed():
            return TasksCrashedRecord(event.worker, pack(event.keys, _U64),
                                      pack(event.crashes, _U32), event.never_restart, event.at)
        case TasksAborted():
            return TasksAbortedRecord(pack(event.keys, _U64),
                                      tuple((int(j), int(g)) for j, g in event.submits),
                                      event.at)
        case TaskNodesReserved():
            return TaskNodesRecord(event.key, tuple(event.workers), event.at)
        case TasksAdopted():
            return TasksAdoptedRecord(event.worker, pack(event.keys, _U64), event.at)
        case JobSubmitted():
            return JobSubmittedRecord(event.job_id, event.name, event.max_fails,
                                      event.submit_dir,
                                      tuple(_submit_record(s) for s in event.submits), event.at)
        case JobOpened():
            return JobOpenedRecord(event.job_id, event.name, event.max_fails, event.at)
        case JobClosed():
            return JobClosedRecord(event.job_id, event.at)
        case JobCanceled():
            return JobCanceledRecord(event.job_id, event.reason, event.at)
        case JobAborted():
            return JobAbortedRecord(event.job_id, event.at)
        case JobsForgotten():
            return JobsForgottenRecord(tuple(event.job_ids), event.at)
        case WorkerConnected():
            return WorkerConnectedRecord(event.worker, event.config.encode(), event.at)
        case WorkerLost():
            return WorkerLostRecord(event.worker, event.reason, event.at)
    raise TypeError(f"no journal record for {type(event).__name__}")


def started_columns(r: TasksStartedRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys, instances and start times of a record, as arrays (replay's fast path)."""
    keys, instances, times = _same_length(unpack(r.keys, _U64), unpack(r.instances, _U32),
                                          unpack(r.times, _F64))
    return keys, instances, times


def finished_columns(r: TasksFinishedRecord
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keys, instances, start and end times of a record, as arrays."""
    keys, instances, starts, ends = _same_length(unpack(r.keys, _U64), unpack(r.instances, _U32),
                                                 unpack(r.starts, _F64), unpack(r.ends, _F64))
    return keys, instances, starts, ends


def _same_length(*columns: np.ndarray) -> tuple[np.ndarray, ...]:
    if len({len(c) for c in columns}) > 1:
        raise ValueError("columns of different lengths")
    return columns


def _keys(data: bytes) -> list[TaskKey]:
    return unpack(data, _U64).tolist()  # type: ignore[no-any-return]


def _rows(*columns: tuple[bytes, str]) -> list[tuple]:  # type: ignore[type-arg]
    arrays = [unpack(data, dtype).tolist() for data, dtype in columns]
    if len({len(a) for a in arrays}) > 1:
        raise ValueError("columns of different lengths")
    return list(zip(*arrays, strict=True))


def to_event(record: object) -> Event | None:  # noqa: C901, PLR0911 - one case per record type
    """The event of a record (None for records that are not events: server and snapshots)."""
    match record:
        case TasksStartedRecord():
            return TasksStarted(WorkerId(record.worker), _rows(
                (record.keys, _U64), (record.instances, _U32), (record.times, _F64),
                (record.variants, _U32)), record.at)
        case TasksFinishedRecord():
            return TasksFinished(WorkerId(record.worker), _rows(
                (record.keys, _U64), (record.instances, _U32), (record.starts, _F64),
                (record.ends, _F64), (record.variants, _U32)), record.at)
        case TasksFailedRecord():
            rows = _rows((record.keys, _U64), (record.instances, _U32), (record.starts, _F64),
                         (record.ends, _F64), (record.variants, _U32))
            if len(rows) != len(record.errors):
                raise ValueError("columns of different lengths")
            return TasksFailed(WorkerId(record.worker),
                               [(*row, error) for row, error in zip(rows, record.errors,
                                                                    strict=True)], record.at)
        case TasksRequeuedRecord():
            keys = _keys(record.keys)
            instances = [InstanceId(i) for i in unpack(record.instances, _U32).tolist()]
            crashes = unpack(record.crashes, _U32).tolist()
            if len(instances) != len(keys) or (crashes and len(crashes) != len(keys)):
                raise ValueError("columns of different lengths")
            return TasksRequeued(keys, instances, record.at, crashes)
        case TasksCrashedRecord():
            keys = _keys(record.keys)
            crashes = unpack(record.crashes, _U32).tolist()
            if len(crashes) != len(keys):
                raise ValueError("columns of different lengths")
            return TasksCrashed(WorkerId(record.worker), keys, crashes, record.never_restart,
                                record.at)
        case TasksAbortedRecord():
            return TasksAborted(_keys(record.keys),
                                tuple((JobId(j), GroupId(g)) for j, g in record.submits),
                                record.at)
        case TasksAdoptedRecord():
            return TasksAdopted(WorkerId(record.worker), _keys(record.keys), record.at)
        case TaskNodesRecord():
            return TaskNodesReserved(TaskKey(record.key),
                                     tuple(WorkerId(w) for w in record.workers), record.at)
        case JobSubmittedRecord():
            return JobSubmitted(JobId(record.job_id), record.name, record.max_fails,
                                record.submit_dir,
                                tuple(_new_submit(s) for s in record.submits), record.at)
        case JobOpenedRecord():
            return JobOpened(JobId(record.job_id), record.name, record.max_fails, record.at)
        case JobClosedRecord():
            return JobClosed(JobId(record.job_id), record.at)
        case JobCanceledRecord():
            return JobCanceled(JobId(record.job_id), record.reason, record.at)
        case JobAbortedRecord():
            return JobAborted(JobId(record.job_id), record.at)
        case JobsForgottenRecord():
            return JobsForgotten(tuple(JobId(j) for j in record.job_ids), record.at)
        case WorkerConnectedRecord():
            return WorkerConnected(WorkerId(record.worker), decode_configuration(record.config),
                                   record.at)
        case WorkerLostRecord():
            return WorkerLost(WorkerId(record.worker), record.reason, record.at)
    return None


# Automatic allocation's records share the registry; imported here so that every reader of a
# journal knows them (the module needs ``JOURNAL`` above).
from hqshm.server.journal import allocrecords as _allocrecords  # noqa: E402, F401
