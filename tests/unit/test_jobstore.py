"""Completed jobs sealed into their snapshot bytes: every view the same as before, late news
still handled, compaction writing the sealed bytes as they are, and the memory it saves."""

from __future__ import annotations

import dataclasses
import gc
import logging
import tracemalloc
from pathlib import Path

import msgpack
import pytest
from hqshm.cluster.frozen import replace
from hqshm.cluster.ids import MAX_JOB_ID, JobId
from test_job_events import Cluster, Replica, array, play_everything, snapshot
from test_jobbook import Book, key, request, state_of

from hqshm.link.requests import Selector
from hqshm.model.submission import ArraySubmission, TaskRef
from hqshm.model.taskstates import TaskState
from hqshm.server.journal import frames
from hqshm.server.journal.completed import CompletedJob, read_completed
from hqshm.server.journal.records import JOURNAL, Counters, JobSnapshot
from hqshm.server.journal.restore import read_records, replay
from hqshm.server.journal.snapshot import snapshot as state_records
from hqshm.server.sealedjobs import _FIRST_ROWS, SEGMENT, SealedJob, SealedJobs

NOW = 100.0


def test_only_completed_jobs_are_sealed_and_every_view_stays_the_same() -> None:
    c = Cluster()
    play_everything(c)
    c.submit(array(((0, 2, 1),), name="waiting"))
    before = snapshot(c.book)
    completed = sorted(j.id for j in c.book.jobs.live.values() if j.completed)
    unfinished = sorted(j.id for j in c.book.jobs.live.values() if not j.completed)
    assert completed and unfinished
    assert c.book.seal_completed() == len(completed)
    assert sorted(c.book.jobs.sealed) == completed
    assert sorted(c.book.jobs.live) == unfinished
    assert snapshot(c.book) == before
    # What listings read comes without unpacking, and says what the live job said.
    for job_id in completed:
        sealed = c.book.jobs.peek(job_id)
        assert isinstance(sealed, SealedJob)
        view = c.book.jobs.view(job_id)
        assert view is not None and sealed.summary() == view.summary()
        assert sealed.state == view.state and sealed.finished_at == view.finished_at
    # A sealed job's groups leave the book's index, and nothing else does.
    assert all(s.gid in c.book.by_gid for j in c.book.jobs.live.values() for s in j.submits)
    assert len(c.book.by_gid) == sum(len(j.submits) for j in c.book.jobs.live.values())
    assert c.book.seal_completed() == 0


def test_news_of_a_sealed_job_thaws_it_and_is_ignored_as_before() -> None:
    b = Book()
    job, _ = b.submit(((0, 1, 1),))
    b.start(job, 0, 1)
    b.book.cancel(job, None, NOW)
    assert b.book.seal_completed() == 1 and job.id in b.book.jobs.sealed
    b.finish(job, 0)  # the node's report comes after the cancel: too late
    live = b.book.jobs.live[job.id]
    assert state_of(live, 0) == TaskState.CANCELED
    assert b.book.seal_completed() == 1
    assert job.id in b.book.jobs.sealed and job.id not in b.book.jobs.live


def test_an_array_after_a_sealed_job_sees_its_finished_and_failed_tasks() -> None:
    b = Book()
    done, _ = b.submit(((0, 1, 1),))
    b.start(done, 0, 1)
    b.finish(done, 0)
    b.fail(done, 1)
    b.book.seal_completed()
    assert done.id in b.book.jobs.sealed

    def after(task_id: int) -> ArraySubmission:
        return dataclasses.replace(request(), after=(TaskRef(done.id, ((task_id, task_id, 1),)),))

    ok, groups = b.book.submit(after(0), NOW)
    assert groups[0].after == () and ok.counts[TaskState.WAITING] == 1
    dead, _ = b.book.submit(after(1), NOW)
    assert dead.counts[TaskState.WAITING] == 0  # its prerequisite failed: it never runs
    assert done.id in b.book.jobs.sealed  # read, not thawed


def test_jobs_are_walked_by_id_from_a_page_start_whatever_is_sealed() -> None:
    c = Cluster()
    play_everything(c)
    for _ in range(3):
        c.submit(array(((0, 2, 1),), name="waiting"))
    c.book.seal_completed()
    sealed, live = sorted(c.book.jobs.sealed), sorted(c.book.jobs.live)
    assert sealed and live and max(live) > min(sealed)
    every = sorted(sealed + live)
    assert [j.id for j in c.book.jobs.ascending()] == every
    for after in (0, every[0], every[len(every) // 2], every[-1], every[-1] + 5):
        assert [j.id for j in c.book.jobs.ascending(after)] == [i for i in every if i > after]
    # A thawed job is live again, out of insertion order; the walk still goes by id.
    c.book.jobs.get(sealed[0])
    assert [j.id for j in c.book.jobs.ascending()] == every


def test_forgetting_a_sealed_job_drops_it() -> None:
    b = Book()
    job, _ = b.submit()
    b.start(job, 0)
    b.finish(job, 0)
    b.book.seal_completed()
    assert b.book.forget([job.id], ("FINISHED",), NOW) == (1, 0)
    assert job.id not in b.book.jobs and len(b.book.jobs) == 0 and not b.book.by_gid


def test_compaction_writes_a_sealed_job_as_its_bytes_and_restores_it() -> None:
    c = Cluster()
    play_everything(c)
    c.book.seal_completed()
    records = list(state_records(c.book, 7))
    sealed = [r for r in records if isinstance(r, bytes)]
    assert len(sealed) == len(c.book.jobs.sealed)
    assert all(isinstance(JOURNAL.decode(r), JobSnapshot) for r in sealed)
    fresh = Replica()
    replay(fresh.book, [JOURNAL.decode(r if isinstance(r, bytes) else JOURNAL.encode(r))
                        for r in records])
    assert snapshot(fresh.book) == snapshot(c.book)
    # A restored book seals what is completed at its first turn.
    assert fresh.book.seal_completed() == len(c.book.jobs.sealed)


def test_a_journal_restores_completed_jobs_sealed_from_the_bytes_it_read(tmp_path: Path) -> None:
    """A restoring server reads a completed job's record only as far as sealing it needs,
    and keeps the very bytes it read; the job read whole later is the job that was kept."""
    c = Cluster()
    play_everything(c)
    c.submit(array(((0, 2, 1),), name="waiting"))
    c.book.seal_completed()
    encoded = [r if isinstance(r, bytes) else JOURNAL.encode(r)
               for r in state_records(c.book, 7)]
    path = tmp_path / "journal"
    path.write_bytes(frames.HEADER + frames.frame_all(encoded))
    loaded = read_records(path, sealing=True)
    completed = [r for r in loaded.records if isinstance(r, CompletedJob)]
    assert sorted(r.job_id for r in completed) == sorted(c.book.jobs.sealed)
    assert not any(isinstance(r, JobSnapshot) and r.job_id in c.book.jobs.sealed
                   for r in loaded.records)
    fresh = Replica()
    replay(fresh.book, loaded.records)
    assert snapshot(fresh.book) == snapshot(c.book)
    assert sorted(fresh.book.jobs.sealed) == sorted(c.book.jobs.sealed)
    assert sorted(fresh.book.jobs.live) == sorted(c.book.jobs.live)
    assert all(fresh.book.jobs.record(i) == c.book.jobs.record(i) for i in c.book.jobs.sealed)
    assert fresh.book.next_job_id == c.book.next_job_id and fresh.book.next_gid == c.book.next_gid
    some = min(c.book.jobs.sealed)
    view = c.book.jobs.view(some)
    assert view is not None and fresh.book.jobs[some].summary() == view.summary()
    # Without ``sealing`` (`hq journal` commands) every record is decoded whole.
    assert not any(isinstance(r, CompletedJob) for r in read_records(path).records)


@pytest.mark.expect_log
def test_a_completed_job_at_any_id_a_key_holds_is_sealed_in_a_page_and_beyond_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A journal may name any id: the last one a task key holds seals into one small page
    of the index (not an array up to it), and one beyond is refused, not applied."""
    c = Cluster()
    play_everything(c)
    c.book.seal_completed()
    some = min(c.book.jobs.sealed)
    snap = JOURNAL.decode(c.book.jobs.record(some))
    records = [JOURNAL.encode(replace(snap, job_id=job_id))
               for job_id in (MAX_JOB_ID, MAX_JOB_ID + 1, 0)]
    path = tmp_path / "journal"
    path.write_bytes(frames.HEADER + frames.frame_all(records))
    loaded = read_records(path, sealing=True)
    assert [r.job_id for r in loaded.records] == [MAX_JOB_ID, MAX_JOB_ID + 1, 0]
    fresh = Replica()
    with caplog.at_level(logging.WARNING):
        replay(fresh.book, loaded.records)
    assert list(fresh.book.jobs.sealed) == [MAX_JOB_ID]
    assert fresh.book.next_job_id == MAX_JOB_ID + 1
    assert caplog.text.count("a job id outside 1-4294967295") == 2
    pages = fresh.book.jobs.sealed._row_of._pages  # noqa: SLF001 - the point of the test
    assert sum(page.nbytes for page in pages.values()) <= 1024


def test_a_record_that_does_not_read_plainly_is_left_to_the_full_decoder() -> None:
    c = Cluster()
    play_everything(c)
    c.book.seal_completed()
    job_id = min(c.book.jobs.sealed)
    good = c.book.jobs.record(job_id)
    assert good is not None and read_completed(good) is not None
    fields = msgpack.unpackb(good, raw=False, strict_map_key=False)
    assert read_completed(msgpack.packb([*fields, 1], use_bin_type=True)) is None
    broken = list(fields)
    broken[-1] = [[*s[:5], b"\x00\x01garbage", *s[6:]] for s in fields[-1]]  # state column
    assert read_completed(msgpack.packb(broken, use_bin_type=True)) is None
    opened = list(fields)
    opened[7] = True  # is_open
    assert read_completed(msgpack.packb(opened, use_bin_type=True)) is None
    assert read_completed(b"\xc1") is None  # not msgpack
    assert read_completed(JOURNAL.encode(Counters(1, 1, 1))) is None


def test_a_sealed_single_task_job_holds_well_under_a_kibibyte() -> None:
    """The server keeps 100,000 finished jobs for days (issue 9: at most 1 KiB each)."""
    b = Book()
    jobs = 2_000

    def run_one() -> None:
        job, _ = b.submit()
        b.book.tasks_started(1, [(key(job, 0), 0, 10.0, 0)], NOW)
        b.book.tasks_finished(1, [(key(job, 0), 0, 10.0, 12.0, 0)], NOW)
        b.book.seal_completed()

    for _ in range(50):
        run_one()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(jobs):
            run_one()
        gc.collect()
        grown = sum(s.size_diff for s in
                    tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown / jobs < 700


def test_a_selector_of_sealed_jobs_resolves_without_unpacking_them() -> None:
    from hqshm.server.rpc import resolve_ids

    b = Book()
    for _ in range(3):
        job, _ = b.submit()
        b.start(job, 0)
        b.finish(job, 0)
    b.book.seal_completed()
    assert resolve_ids(Selector("all"), b.book.jobs) == ([1, 2, 3], [])
    assert len(b.book.jobs.live) == 0


@pytest.mark.parametrize("state", ["FINISHED", "FAILED"])
def test_a_sealed_job_keeps_its_errors_and_times(state: str) -> None:
    b = Book()
    job, _ = b.submit()
    b.start(job, 0)
    (b.finish if state == "FINISHED" else b.fail)(job, 0)
    live = b.book.jobs.view(job.id)
    assert live is not None
    table = live.submits[0].table
    b.book.seal_completed()
    view = b.book.jobs.view(job.id)
    assert view is not None and view is not live
    again = view.submits[0].table
    assert again.errors == table.errors and again.started.tolist() == table.started.tolist()
    assert again.ended.tolist() == table.ended.tolist() and view.state == state


# --- the sealed jobs' buffers ---------------------------------------------------------------


def _add(jobs: SealedJobs, job_id: int, size: int = 300, reason: str | None = None) -> bytes:
    record = bytes([job_id % 251]) * size
    jobs.add(JobId(job_id), f"job{job_id % 3}", reason, (0, 0, 1, 0, 0, 0), 12.5, record)
    return record


def test_sealed_jobs_keep_each_record_and_summary_by_id() -> None:
    jobs = SealedJobs()
    records = {i: _add(jobs, i, 100 + i, reason="why" if i % 2 else None)
               for i in (5, 3, 4000, 7)}
    assert list(jobs) == [3, 5, 7, 4000] and len(jobs) == 4
    assert 6 not in jobs and 0 not in jobs and -1 not in jobs and "5" not in jobs
    for job_id, record in records.items():
        assert jobs.record(JobId(job_id)) == record
        sealed = jobs.get(JobId(job_id))
        assert sealed is not None and sealed.name == f"job{job_id % 3}"
        assert sealed.cancel_reason == ("why" if job_id % 2 else None)
        assert sealed.counts == (0, 0, 1, 0, 0, 0) and sealed.finished_at == 12.5
        assert sealed.state == "FINISHED"
    assert jobs.pop(JobId(5)) == records[5] and jobs.pop(JobId(5)) is None
    assert list(jobs) == [3, 7, 4000] and jobs.get(JobId(5)) is None
    _add(jobs, 7, 50)  # sealed again after a thaw: replaces the old row
    assert len(jobs) == 3 and jobs.record(JobId(7)) == bytes([7]) * 50


def test_forgotten_records_give_their_memory_maps_back() -> None:
    jobs = SealedJobs()
    per_segment = SEGMENT // 1000
    for job_id in range(1, 5 * per_segment + 1):
        _add(jobs, job_id, 1000)
    assert len(jobs._segments) == 5  # noqa: SLF001 - the point of the test
    for job_id in range(1, 4 * per_segment + 1):  # the first four segments, whole
        jobs.pop(JobId(job_id))
    assert len(jobs._segments) == 1  # noqa: SLF001
    # A segment mostly forgotten moves what it still holds to the tail, and goes.
    for job_id in range(4 * per_segment + 1, 5 * per_segment + 1):
        _add(jobs, job_id + 10 * per_segment, 1000)
    for job_id in range(4 * per_segment + 1, 5 * per_segment - 10):
        jobs.pop(JobId(job_id))
    assert 4 in jobs._segments  # noqa: SLF001 - the fifth, holding 11 records of 1048
    jobs.settle()
    assert 4 not in jobs._segments  # noqa: SLF001
    for job_id in range(5 * per_segment - 10, 5 * per_segment + 1):
        assert jobs.record(JobId(job_id)) == bytes([job_id % 251]) * 1000
    big = _add(jobs, 99_999, SEGMENT + 5)
    assert jobs.record(JobId(99_999)) == big


def test_freed_rows_are_reused_so_rows_follow_the_jobs_kept() -> None:
    jobs = SealedJobs()
    for round_ in range(20):
        first = round_ * 1000 + 1
        for job_id in range(first, first + 1000):
            _add(jobs, job_id, 20)
        for job_id in range(first, first + 1000):
            jobs.pop(JobId(job_id))
    assert len(jobs) == 0 and len(jobs._ids) <= 4096  # noqa: SLF001
    _add(jobs, 30_000)
    assert list(jobs) == [30_000]


def test_ids_far_apart_cost_a_page_each_not_an_array_up_to_the_largest() -> None:
    jobs = SealedJobs()
    far = [1, 300, MAX_JOB_ID, MAX_JOB_ID - 1, 2**31]
    for job_id in far:
        _add(jobs, job_id, 20)
    assert list(jobs) == sorted(far) and MAX_JOB_ID in jobs and MAX_JOB_ID + 1 not in jobs
    assert list(jobs.values(after=300)) and [s.id for s in jobs.values(after=300)] == [
        2**31, MAX_JOB_ID - 1, MAX_JOB_ID]
    index = jobs._row_of._pages  # noqa: SLF001 - the point of the test
    assert sum(page.nbytes for page in index.values()) <= 4 * 1024
    # Rows compacted (freed rows dropped) keep every id reachable, sparse ones too.
    for job_id in range(1000, 1000 + _FIRST_ROWS):
        _add(jobs, job_id, 20)
    for job_id in range(1000, 1000 + _FIRST_ROWS - 3):
        jobs.pop(JobId(job_id))
    _add(jobs, 5000, 20)
    assert list(jobs) == sorted([*far, 5000, *range(1000 + _FIRST_ROWS - 3, 1000 + _FIRST_ROWS)])
    assert jobs.record(JobId(MAX_JOB_ID)) == bytes([MAX_JOB_ID % 251]) * 20


def test_rows_all_freed_then_compacted_leave_an_empty_table() -> None:
    jobs = SealedJobs()
    for job_id in range(1, _FIRST_ROWS + 1):
        _add(jobs, job_id, 20)
    for job_id in range(1, _FIRST_ROWS + 1):
        jobs.pop(JobId(job_id))
    _add(jobs, 7, 20)  # no free row at the end: compaction keeps none of the old ones
    assert list(jobs) == [7] and jobs.record(JobId(7)) == bytes([7]) * 20
