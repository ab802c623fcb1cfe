"""A journal read back: the books replayed, and the core given every unfinished task again.

Reading never refuses a damaged file: records that fail their checksum or do not decode are
skipped with a warning, and a bad tail is cut off so that appending goes on from good data.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from hqshm.cluster.codec import Registry
from hqshm.cluster.core import Group
from hqshm.cluster.errors import PeerError
from hqshm.cluster.firstuse import np
from hqshm.cluster.frozen import frozen
from hqshm.cluster.ids import (
    MAX_JOB_ID,
    GroupId,
    InstanceId,
    TaskId,
    TaskKey,
    WorkerId,
    split_key,
    task_key,
    task_keys,
)
from hqshm.errors import UserError
from hqshm.model.taskstates import TaskState
from hqshm.server.jobbook import UNFINISHED, JobBook
from hqshm.server.jobs import Job, NewGroup, Submit
from hqshm.server.journal import frames
from hqshm.server.journal.completed import read_completed
from hqshm.server.journal.records import (
    JOURNAL,
    ServerStarted,
    TasksFinishedRecord,
    TasksStartedRecord,
    finished_columns,
    started_columns,
    to_event,
)
from hqshm.server.journal.snapshot import apply_snapshot
from hqshm.server.submits import core_group

logger = logging.getLogger(__name__)

RECONNECT = "reconnect"  # a worker's on_server_lost that outlives its server
TORN_TAIL = "Journal contains not fully written data; they will be removed from the log"


@frozen
class Loaded:
    records: list[object]
    server_uid: str | None  # of the first server that wrote the file


def read_records(path: Path, repair: bool = False, registry: Registry = JOURNAL,
                 sealing: bool = False) -> Loaded:
    """Every readable record of a journal file; with ``repair``, a bad tail is cut off. With
    ``sealing`` (a server restoring) a completed job's snapshot comes as a ``CompletedJob``,
    read only as far as sealing it needs."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"Cannot read journal {path}: {exc.strerror}") from None
    try:
        scan = frames.scan(data)
    except frames.NotAJournal as exc:
        raise UserError(f"File {path} is not a journal: {exc}") from None
    for damage in scan.damage:
        if damage.at_end:
            logger.warning(TORN_TAIL)
        else:
            logger.warning("Journal %s has %d damaged bytes at offset %d; they were skipped",
                           path, damage.length, damage.offset)
    if repair and (scan.valid_end < len(data) or len(data) < len(frames.HEADER)):
        with open(path, "r+b") as f:
            if scan.valid_end < len(frames.HEADER):
                f.seek(0)
                f.write(frames.HEADER)
                f.truncate(len(frames.HEADER))
            else:
                f.truncate(scan.valid_end)
            f.flush()
            os.fsync(f.fileno())
    records: list[object] = []
    server_uid = None
    for offset, payload in zip(scan.offsets, scan.payloads, strict=True):
        if sealing and (completed := read_completed(payload)) is not None:
            records.append(completed)
            continue
        try:
            record = registry.decode(payload)
        except PeerError as exc:
            logger.warning("Journal %s: record at offset %d skipped: %s", path, offset, exc)
            continue
        if server_uid is None and isinstance(record, ServerStarted):
            server_uid = record.server_uid
        records.append(record)
    return Loaded(records, server_uid)


def replay(book: JobBook, records: Iterable[object]) -> WorkerId:
    """Apply every record to fresh books; returns the next worker id."""
    next_worker = 1
    for record in records:
        try:
            if isinstance(record, TasksStartedRecord):  # the bulk of a journal: no tuples
                book.apply_started(WorkerId(record.worker), *started_columns(record))
                next_worker = max(next_worker, record.worker + 1)
                continue
            if isinstance(record, TasksFinishedRecord):
                book.apply_finished(WorkerId(record.worker), *finished_columns(record),
                                    record.at)
                continue
            _check_ids(record)
            event = to_event(record)
            if event is not None:
                book.apply(event)
                next_worker = _after_workers(event, next_worker)
                continue
            counted = apply_snapshot(book, record)
        except (ValueError, KeyError, AssertionError, OverflowError, PeerError,
                zlib.error) as exc:
            logger.warning("Journal record %s could not be applied and was skipped: %s",
                           type(record).__name__, exc)
            continue
        if counted is not None:
            next_worker = max(next_worker, counted)
    known = max(book.workers.workers, default=0)
    return WorkerId(max(next_worker, known + 1))


# Group ids are counted up from 1 and travel as unsigned 64-bit integers: a server never
# makes this many, and from below it the counter cannot run past what a frame holds.
MAX_GID = 1 << 62


def _check_ids(record: object) -> None:
    """A damaged or crafted journal may name any id: a job id that a task key cannot hold
    (32 bits) would break every key made from it, a group id near 2^64 every later submit
    (its successor does not encode), so their record is refused."""
    ids: tuple[int, ...] = getattr(record, "job_ids", ())
    one = getattr(record, "job_id", None)
    after = getattr(record, "next_job_id", None)
    if (one is not None and not 0 < one <= MAX_JOB_ID) or (
            after is not None and not 0 < after <= MAX_JOB_ID + 1) or (
            ids and not 0 < min(ids) <= max(ids) <= MAX_JOB_ID):
        raise ValueError(f"a job id outside 1-{MAX_JOB_ID}")
    gids = [submit.gid for submit in getattr(record, "submits", ())]
    for name in ("gid", "next_gid"):
        if (gid := getattr(record, name, None)) is not None:
            gids.append(gid)
    if gids and not 0 <= min(gids) <= max(gids) <= MAX_GID:
        raise ValueError(f"a group id outside 0-{MAX_GID}")


def _after_workers(event: object, next_worker: int) -> int:
    worker = getattr(event, "worker", None)
    return max(next_worker, worker + 1) if isinstance(worker, int) else next_worker


@frozen
class Running:
    """Tasks that were running when the server went away."""

    requeued: list[TaskKey]  # run again, under these instances
    instances: list[InstanceId]
    # On nodes that reconnect (--on-server-lost reconnect): (key, gid, instance), kept for them
    orphans: list[tuple[TaskKey, GroupId, InstanceId]]
    reconnecting: int = 0  # such nodes, online when the server went away


def running_tasks(book: JobBook) -> Running:
    reconnecting = {w.id for w in book.workers.workers.values()
                    if w.online and w.config.on_server_lost == RECONNECT}
    found = Running([], [], [], len(reconnecting))
    for job in book.jobs.live.values():  # a sealed job has nothing running
        for submit in job.submits:
            table = submit.table
            rows = table.rows_in_states((TaskState.RUNNING,))
            if not len(rows) or submit.nodes:
                keep = np.zeros(len(rows), dtype=bool)  # multi-node tasks always run again
            else:
                keep = np.isin(table.worker[rows], np.array(sorted(reconnecting), dtype=np.uint32))
            keys = task_keys(job.id, table.ids[rows])
            for key, instance in zip(keys[keep].tolist(), table.instance[rows[keep]].tolist(),
                                     strict=True):
                found.orphans.append((key, submit.gid, InstanceId(instance)))
            found.requeued.extend(keys[~keep].tolist())
            found.instances.extend(InstanceId(i + 1)
                                   for i in table.instance[rows[~keep]].tolist())
    return found


def core_groups(book: JobBook, orphans: Iterable[TaskKey] = ()) -> list[NewGroup]:
    """Core groups of every task still waiting (and counting the orphans, which are not
    pending), with what each still waits for."""
    held = set(orphans)
    groups = []
    for job in book.jobs.live.values():  # a sealed job has nothing waiting
        for submit in job.submits:
            if submit.table.unfinished:
                groups.append(_group(book, job, submit, held))
    return groups


def _group(book: JobBook, job: Job, submit: Submit, orphans: set[TaskKey]) -> NewGroup:
    table = submit.table
    rows = table.rows_in_states(UNFINISHED)
    whole = core_group(job.id, submit)
    n_orphans = 0
    if orphans:
        held = np.isin(whole.keys[rows], np.array(sorted(orphans), dtype=np.uint64))
        n_orphans = int(held.sum())
        rows = rows[~held]
    keys = whole.keys[rows]
    group = Group(gid=whole.gid, job_id=job.id, request=whole.request, priority=whole.priority,
                  body=whole.body, keys=keys, crash_limit=whole.crash_limit,
                  retries=whole.retries,
                  entries=[submit.entries[r] for r in rows.tolist()]
                  if submit.entries is not None else None)
    # Both are sparse: a million waiting tasks cost no Python loop here.
    rerun = np.flatnonzero(table.instance[rows])
    for key, instance in zip(keys[rerun].tolist(), table.instance[rows[rerun]].tolist(),
                             strict=True):
        group.instances[key] = InstanceId(instance)
    kept = np.zeros(len(table), dtype=bool)
    kept[rows] = True
    for row, count in submit.crashes.items():
        if count and kept[row]:
            group.crashes[whole.keys.item(row)] = count
    group.active += n_orphans
    deps = _waiting_deps(job, submit, rows) if not submit.is_array else None
    after = tuple(k for k in submit.after_keys if _unfinished(book, k))
    return NewGroup(group, deps, after)


def _waiting_deps(job: Job, submit: Submit, rows: np.ndarray) -> dict[TaskKey, list[TaskKey]]:
    deps: dict[TaskKey, list[TaskKey]] = {}
    for task_id in submit.table.ids[rows].tolist():
        waiting = [task_key(job.id, d) for d in submit.deps.get(task_id, ())
                   if _task_unfinished(job, d)]
        if waiting:
            deps[task_key(job.id, task_id)] = waiting
    return deps


def _task_unfinished(job: Job, task_id: TaskId) -> bool:
    found = job.locate(task_id)
    return found is not None and found[0].table.state.item(found[1]) in UNFINISHED


def _unfinished(book: JobBook, key: TaskKey) -> bool:
    job_id, task_id = split_key(key)
    job = book.jobs.live.get(job_id)  # a sealed job has nothing unfinished
    return job is not None and _task_unfinished(job, task_id)


def online_workers(book: JobBook) -> Sequence[WorkerId]:
    return [w.id for w in book.workers.workers.values() if w.online]
