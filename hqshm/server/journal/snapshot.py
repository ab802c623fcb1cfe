"""The live state as records, and back: what compaction and `hq journal prune` write.

A snapshot is ``Counters``, then one ``JobSnapshot`` per job and one ``WorkerSnapshot`` per
worker. Applied to fresh books it gives the same state as the events it replaces, so a journal
is a snapshot followed by the events since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from hqshm.cluster.firstuse import np
from hqshm.cluster.ids import GroupId, InstanceId, JobId, WorkerId
from hqshm.model.taskstates import TaskState
from hqshm.model.workerconfig import decode_configuration
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import Job, Submit
from hqshm.server.jobstore import job_from_snapshot, job_snapshot
from hqshm.server.journal.completed import CompletedJob
from hqshm.server.journal.records import Counters, JobSnapshot, WorkerSnapshot
from hqshm.server.sealedjobs import SealedJob
from hqshm.server.workers import WorkerRecord


def snapshot(book: JobBook, next_worker_id: int,
             keep_job: Callable[[Job | SealedJob], bool] = lambda job: True,
             keep_worker: Callable[[WorkerRecord], bool] = lambda w: True
             ) -> Iterator[object]:
    """Records of the whole state (or of the jobs and workers kept); a sealed job's record
    comes as the bytes it is kept in."""
    yield Counters(book.next_job_id, book.next_gid, next_worker_id)
    for job in book.jobs.everything():
        if keep_job(job):
            yield book.jobs.record(job.id) if isinstance(job, SealedJob) else job_snapshot(job)
    for record in book.workers.workers.values():
        if keep_worker(record):
            yield WorkerSnapshot(record.id, record.config.encode(), record.started_at,
                                 record.state, record.ended_at, record.last_task)


def apply_snapshot(book: JobBook, record: object) -> int | None:
    """Apply one snapshot record; returns the next worker id for ``Counters``, else None."""
    match record:
        case Counters():
            book.next_job_id = JobId(max(book.next_job_id, record.next_job_id))
            book.next_gid = GroupId(max(book.next_gid, record.next_gid))
            return record.next_worker_id
        case JobSnapshot():
            _apply_job(book, record)
        case CompletedJob():
            _seal(book, record)
        case WorkerSnapshot():
            book.workers.workers[WorkerId(record.worker)] = WorkerRecord(
                WorkerId(record.worker), decode_configuration(record.config),
                record.started_at, record.state, record.ended_at,
                None if record.last_task is None else (
                    JobId(record.last_task[0]), record.last_task[1], record.last_task[2]))
    return None


def _apply_job(book: JobBook, rec: JobSnapshot) -> None:
    book.jobs.remove(JobId(rec.job_id))
    job = job_from_snapshot(rec)
    for submit in job.submits:
        book.by_gid[submit.gid] = submit
        book.next_gid = GroupId(max(book.next_gid, submit.gid + 1))
    book.jobs[job.id] = job
    book.next_job_id = JobId(max(book.next_job_id, job.id + 1))
    if job.completed:
        book.jobs.note_completed(job)


def _seal(book: JobBook, job: CompletedJob) -> None:
    """A completed job kept as its record's bytes (a restoring server's ``read_records``):
    never built only to be sealed again (a server restoring 100,000 finished jobs spent most
    of a minute doing that)."""
    if job.job_id in book.jobs.live:  # a sealed one is replaced by ``add``
        book.jobs.remove(JobId(job.job_id))
    book.jobs.sealed.add(JobId(job.job_id), job.name, job.cancel_reason, job.counts,
                         job.finished_at, job.record)
    book.next_gid = GroupId(max(book.next_gid, job.next_gid))
    book.next_job_id = JobId(max(book.next_job_id, job.job_id + 1))


def running_rows(submit: Submit) -> np.ndarray:
    return submit.table.rows_in_states((TaskState.RUNNING,))


def next_instances(submit: Submit, rows: np.ndarray) -> list[InstanceId]:
    return [InstanceId(i + 1) for i in submit.table.instance[rows].tolist()]
