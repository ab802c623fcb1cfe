"""The live state as records, and back: what compaction and `hq journal prune` write.

A snapshot is ``Counters``, then one ``JobSnapshot`` per job and one ``WorkerSnapshot`` per
worker. Applied to fresh books it gives the same state as the events it replaces, so a journal
is a snapshot followed by the events since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from hqshm.cluster.ids import GroupId, InstanceId, JobId, TaskKey, WorkerId
from hqshm.model.program import decode_program
from hqshm.model.taskstates import TaskState
from hqshm.model.tasktable import TaskTable
from hqshm.model.workerconfig import decode_configuration
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import Job, Submit
from hqshm.server.journal.records import (
    Counters,
    JobSnapshot,
    SubmitSnapshot,
    WorkerSnapshot,
    compress_ints,
    compress_times,
    decompress_ints,
    decompress_times,
    pack,
    unpack,
)
from hqshm.server.workers import WorkerRecord


def snapshot(book: JobBook, next_worker_id: int,
             keep_job: Callable[[Job], bool] = lambda job: True,
             keep_worker: Callable[[WorkerRecord], bool] = lambda w: True) -> Iterator[object]:
    """Records of the whole state (or of the jobs and workers kept)."""
    yield Counters(book.next_job_id, book.next_gid, next_worker_id)
    for job in book.jobs.values():
        if keep_job(job):
            yield job_snapshot(job)
    for record in book.workers.workers.values():
        if keep_worker(record):
            yield WorkerSnapshot(record.id, record.config.encode(), record.started_at,
                                 record.state, record.ended_at, record.last_task)


def job_snapshot(job: Job) -> JobSnapshot:
    return JobSnapshot(job.id, job.name, job.max_fails, job.submit_dir, job.submitted_at,
                       job.is_open, job.cancel_reason, job.finished_at,
                       tuple(sorted(job.worker_ids)),
                       tuple(_submit_snapshot(s) for s in job.submits))


def _submit_snapshot(s: Submit) -> SubmitSnapshot:
    t = s.table
    return SubmitSnapshot(
        s.gid, len(t), s.template, s.program.encode(), compress_ints(t.ids, "u4"),
        compress_ints(t.state, "u1"), compress_ints(t.instance, "u4"),
        compress_ints(t.worker, "u4"), compress_times(t.started), compress_times(t.ended),
        dict(t.errors), tuple(s.entries) if s.entries is not None else None, s.batch,
        s.is_array, {int(k): tuple(v) for k, v in s.deps.items()},
        {int(r): tuple(w) for r, w in s.nodes.items()}, s.after, pack(s.after_keys, "<u8"),
        dict(s.crashes))


def apply_snapshot(book: JobBook, record: object) -> int | None:
    """Apply one snapshot record; returns the next worker id for ``Counters``, else None."""
    match record:
        case Counters():
            book.next_job_id = JobId(max(book.next_job_id, record.next_job_id))
            book.next_gid = GroupId(max(book.next_gid, record.next_gid))
            return record.next_worker_id
        case JobSnapshot():
            _apply_job(book, record)
        case WorkerSnapshot():
            book.workers.workers[WorkerId(record.worker)] = WorkerRecord(
                WorkerId(record.worker), decode_configuration(record.config),
                record.started_at, record.state, record.ended_at,
                None if record.last_task is None else (
                    JobId(record.last_task[0]), record.last_task[1], record.last_task[2]))
    return None


def _apply_job(book: JobBook, rec: JobSnapshot) -> None:
    old = book.jobs.pop(JobId(rec.job_id), None)
    for submit in old.submits if old is not None else ():
        book.by_gid.pop(submit.gid, None)
    submits = []
    for s in rec.submits:
        submit = Submit(GroupId(s.gid), s.template, decode_program(s.program), _table(s),
                        list(s.entries) if s.entries is not None else None, s.batch,
                        s.is_array, dict(s.deps),
                        {r: tuple(WorkerId(w) for w in ws) for r, ws in s.nodes.items()},
                        s.after,
                        tuple(TaskKey(k) for k in unpack(s.after_keys, "<u8").tolist()),
                        dict(s.crashes))
        submits.append(submit)
        book.by_gid[submit.gid] = submit
        book.next_gid = GroupId(max(book.next_gid, submit.gid + 1))
    # The job takes the restored tables with their counts and indexes their ids.
    job = Job(JobId(rec.job_id), rec.name, rec.max_fails, rec.submit_dir, rec.submitted_at,
              rec.is_open, submits, cancel_reason=rec.cancel_reason,
              finished_at=rec.finished_at, worker_ids={WorkerId(w) for w in rec.worker_ids})
    book.jobs[job.id] = job
    book.next_job_id = JobId(max(book.next_job_id, job.id + 1))


def _table(s: SubmitSnapshot) -> TaskTable:
    n = s.n_tasks
    ids = decompress_ints(s.ids, n)
    table = TaskTable(ids)
    table.state[:] = decompress_ints(s.state, n)
    if n and int(table.state.max()) >= len(TaskState):
        raise ValueError("a task state out of range")
    table.instance[:] = decompress_ints(s.instance, n).astype(np.uint32)
    table.worker[:] = decompress_ints(s.worker, n).astype(np.uint32)
    table.started[:] = decompress_times(s.started, n)
    table.ended[:] = decompress_times(s.ended, n)
    table.errors = {int(r): e for r, e in s.errors.items() if 0 <= r < n}
    table.counts = np.bincount(table.state, minlength=len(TaskState)).tolist()
    return table


def running_rows(submit: Submit) -> np.ndarray:
    return submit.table.rows_in_states((TaskState.RUNNING,))


def next_instances(submit: Submit, rows: np.ndarray) -> list[InstanceId]:
    return [InstanceId(i + 1) for i in submit.table.instance[rows].tolist()]
