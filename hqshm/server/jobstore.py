"""Jobs as the book keeps them: live ones as objects, completed ones sealed into bytes.

A server keeps every finished job until it is forgotten, and users leave one running for days
with 100,000 of them. As objects (the job, its submits, six numpy columns, the template and
the program) a single-task job holds about 3 KB; sealed into its journal snapshot record (the
very bytes compaction writes) it holds a few hundred. A sealed job answers what listings and
waits read (name, state counts, finish time) without unpacking; a request that reads more
unpacks a copy (``view``), and anything that changes a job thaws it back into the book
(``get``), to be sealed again by the next ``seal_completed``.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Iterator

from hqshm.cluster.firstuse import np
from hqshm.cluster.ids import GroupId, JobId, TaskId, TaskKey, WorkerId
from hqshm.model.program import decode_program
from hqshm.model.taskstates import TaskState
from hqshm.model.tasktable import TaskTable
from hqshm.server.jobs import Job, Submit
from hqshm.server.journal.records import (
    JOURNAL,
    JobSnapshot,
    SubmitSnapshot,
    compress_ints,
    compress_times,
    decompress_ints,
    decompress_times,
    pack,
    unpack,
)
from hqshm.server.sealedjobs import SealedJob, SealedJobs

_BY_ID = operator.attrgetter("id")


class JobStore:
    """Every job of the book by id, live or sealed.

    ``get`` and ``[]`` return the live job, thawing a sealed one: callers change what they
    get. Read-only requests use ``view`` (a sealed job's copy, left sealed) and ``peek``
    (what a summary needs, no unpacking).
    """

    def __init__(self, by_gid: dict[GroupId, Submit]) -> None:
        self.live: dict[JobId, Job] = {}
        self.sealed = SealedJobs()
        self.by_gid = by_gid  # the book's: a sealed job's submits leave it, and come back
        self._completed: list[JobId] = []  # live jobs that may be completed now

    # --- the mapping the book and its requests use ----------------------------------------

    def get(self, job_id: JobId) -> Job | None:
        job = self.live.get(job_id)
        if job is None and job_id in self.sealed:
            job = self._thaw(job_id)
        return job

    def __getitem__(self, job_id: JobId) -> Job:
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def __setitem__(self, job_id: JobId, job: Job) -> None:
        self.sealed.pop(job_id)
        self.live[job_id] = job

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.live or job_id in self.sealed

    def __len__(self) -> int:
        return len(self.live) + len(self.sealed)

    def __iter__(self) -> Iterator[JobId]:
        yield from self.live
        yield from self.sealed

    def settle(self) -> None:
        """After removing jobs: give back the memory they held."""
        self.sealed.settle()

    def remove(self, job_id: JobId) -> None:
        """Drop a job, live or sealed, and its submits' groups."""
        if self.sealed.pop(job_id) is not None:
            return
        job = self.live.pop(job_id, None)
        for submit in job.submits if job is not None else ():
            self.by_gid.pop(submit.gid, None)

    # --- read-only ------------------------------------------------------------------------

    def peek(self, job_id: JobId) -> Job | SealedJob | None:
        """The job as it is kept: enough for ``summary``, ``state`` and ``finished_at``."""
        job = self.live.get(job_id)
        return job if job is not None else self.sealed.get(job_id)

    def view(self, job_id: JobId) -> Job | None:
        """The whole job to read; a sealed one is unpacked into a copy that stays apart."""
        job = self.live.get(job_id)
        if job is None and (record := self.sealed.record(job_id)) is not None:
            job = job_from_snapshot(JOURNAL.decode(record))
        return job

    def everything(self) -> Iterator[Job | SealedJob]:
        yield from self.live.values()
        yield from self.sealed.values()

    def ascending(self, after: int = 0) -> Iterator[Job | SealedJob]:
        """Jobs of ids above ``after`` by id, lazily: a page of `hq job list --all` costs its
        own rows (and the live jobs'), not a pass over 100,000 sealed ones."""
        live = sorted((j for j in self.live.values() if j.id > after), key=_BY_ID)
        return heapq.merge(live, self.sealed.values(after), key=_BY_ID)

    def record(self, job_id: JobId) -> bytes | None:
        """A sealed job's snapshot record, encoded: what compaction writes as it is."""
        return self.sealed.record(job_id)

    # --- sealing --------------------------------------------------------------------------

    def note_completed(self, job: Job) -> None:
        """The job's tasks all ended and it is closed: seal it at the next safe point."""
        self._completed.append(job.id)

    def seal_completed(self) -> int:
        """Seal the jobs completed since the last call (called between the server's turns,
        when no handler holds a job); returns how many."""
        sealed = 0
        candidates, self._completed = self._completed, []
        for job_id in candidates:
            job = self.live.get(job_id)
            if job is not None and job.completed:
                self._seal(job)
                sealed += 1
        return sealed

    def _seal(self, job: Job) -> None:
        record = JOURNAL.encode(job_snapshot(job))
        for submit in job.submits:
            self.by_gid.pop(submit.gid, None)
        del self.live[job.id]
        self.sealed.add(job.id, job.name, job.cancel_reason, job.counts, job.finished_at,
                        record)

    def _thaw(self, job_id: JobId) -> Job:
        record = self.sealed.pop(job_id)
        assert record is not None
        job = job_from_snapshot(JOURNAL.decode(record))
        for submit in job.submits:
            self.by_gid[submit.gid] = submit
        self.live[job_id] = job
        self._completed.append(job_id)
        return job


# --- jobs as snapshot records, and back ----------------------------------------------------


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


def job_from_snapshot(rec: JobSnapshot) -> Job:
    """The job a snapshot record describes, with its own submits and tables."""
    submits = [
        Submit(GroupId(s.gid), s.template, decode_program(s.program), _table(s),
               list(s.entries) if s.entries is not None else None, s.batch, s.is_array,
               {TaskId(k): tuple(TaskId(d) for d in v) for k, v in s.deps.items()},
               {r: tuple(WorkerId(w) for w in ws) for r, ws in s.nodes.items()},
               s.after, tuple(TaskKey(k) for k in unpack(s.after_keys, "<u8").tolist()),
               dict(s.crashes))
        for s in rec.submits
    ]
    # The job takes the tables with their counts and indexes their ids.
    return Job(JobId(rec.job_id), rec.name, rec.max_fails, rec.submit_dir, rec.submitted_at,
               rec.is_open, submits, cancel_reason=rec.cancel_reason,
               finished_at=rec.finished_at, worker_ids={WorkerId(w) for w in rec.worker_ids})


def _table(s: SubmitSnapshot) -> TaskTable:
    n = s.n_tasks
    table = TaskTable(decompress_ints(s.ids, n))
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
