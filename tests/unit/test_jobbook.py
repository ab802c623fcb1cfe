"""Scenarios of the job book: submit ids, task events, max-fails, cancel, crash texts, views,
memory, and the book driven by the real cluster core."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence

import numpy as np
import pytest
from core_env import Env
from hqshm.cluster import reactor
from hqshm.cluster.core import Group
from hqshm.cluster.crashlimit import NEVER_RESTART
from hqshm.cluster.ids import TaskId
from hqshm.cluster.protocol import CancelTasks, ComputeTasks, DefineGroup, RetractTasks, StopReason
from hqshm.cluster.resources import cpus_request
from test_job_events import check_job

from hqshm.errors import UserError
from hqshm.model.submission import (
    ArraySubmission,
    GraphSubmission,
    GraphTask,
    StdioDesc,
    TaskTemplate,
)
from hqshm.model.taskstates import TaskState
from hqshm.server import views
from hqshm.server.events import EventStream
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import (
    MAX_RUNS,
    NEVER_RESTART_ERROR,
    Job,
    JobNotFound,
    JobNotOpened,
    TaskDefinedTwice,
    TaskExists,
    TaskIndex,
    crash_error,
)
from hqshm.server.workers import WorkerBook, WorkerRecord

W, R, F, X, C, A = (
    TaskState.WAITING,
    TaskState.RUNNING,
    TaskState.FINISHED,
    TaskState.FAILED,
    TaskState.CANCELED,
    TaskState.ABORTED,
)
UID = "aB3xQ9"
NOW = 100.0


class Book:
    """A ``JobBook`` with builders: ``book.submit(ids=...)`` and per-task event helpers."""

    def __init__(self) -> None:
        events = EventStream()
        self.book = JobBook(UID, WorkerBook(events), events)
        self.canceled_gids: list[list[int]] = []
        self.book.cancel_groups = lambda gids, now: self.canceled_gids.append(sorted(gids))
        self._worker_ids = itertools.count(1)

    def submit(
        self,
        ids: Sequence[tuple[int, int, int]] = (),
        *,
        entries: Sequence[str] | None = None,
        job_id: int | None = None,
        max_fails: int | None = None,
        crash_limit: int = 5,
    ) -> tuple[Job, Group]:
        job, groups = self.book.submit(
            request(
                ids, entries=entries, job_id=job_id, max_fails=max_fails, crash_limit=crash_limit
            ),
            NOW,
        )
        assert len(groups) == 1
        return job, groups[0].group

    def open_job(self) -> Job:
        """An open job, as `hq job open` makes one."""
        return self.book.open_job("session", None, NOW)

    def start(self, job: Job, *task_ids: int, worker: int = 1, instance: int = 0) -> None:
        self.book.tasks_started(worker, [(key(job, t), instance, 10.0, 0) for t in task_ids], NOW)

    def finish(self, job: Job, *task_ids: int, worker: int = 1, instance: int = 0) -> None:
        self.book.tasks_finished(
            worker, [(key(job, t), instance, 10.0, 12.0, 0) for t in task_ids], NOW
        )

    def fail(self, job: Job, *task_ids: int, worker: int = 1, error: str = "boom") -> None:
        self.book.tasks_failed(
            worker, [(key(job, t), 0, 10.0, 12.0, 0, error) for t in task_ids], NOW
        )


def request(
    ids: Sequence[tuple[int, int, int]] = (),
    *,
    entries: Sequence[str] | None = None,
    job_id: int | None = None,
    max_fails: int | None = None,
    crash_limit: int = 5,
) -> ArraySubmission:
    template = TaskTemplate(
        args=("sleep", "1"),
        env={},
        cwd="%{SUBMIT_DIR}",
        stdout=StdioDesc("file", "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"),
        stderr=StdioDesc("file", "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"),
        request=cpus_request(),
        crash_limit=crash_limit,
    )
    return ArraySubmission(
        "job",
        max_fails,
        "/work",
        template,
        tuple(ids),
        tuple(entries) if entries is not None else None,
        job_id,
    )


def key(job: Job, task_id: int) -> int:
    return (job.id << 32) | task_id


def task_ids(job: Job) -> list[int]:
    return sorted(int(i) for s in job.submits for i in s.table.ids)


def state_of(job: Job, task_id: int) -> TaskState:
    located = job.locate(task_id)
    assert located is not None
    submit, row = located
    return TaskState(int(submit.table.state[row]))


def check(job: Job) -> None:
    """Counts kept incrementally must equal what the state columns say."""
    for submit in job.submits:
        table = submit.table
        assert table.counts == np.bincount(table.state, minlength=len(TaskState)).tolist()
    check_job(job)


@pytest.fixture
def book() -> Book:
    return Book()


# --- submit ---------------------------------------------------------------------------------


def test_a_plain_submit_is_one_task_with_id_zero_in_job_one(book: Book) -> None:
    job, group = book.submit()
    assert job.id == 1 and task_ids(job) == [0]
    assert group.keys.tolist() == [key(job, 0)]
    assert group.keys.dtype == np.uint64
    assert group.entries is None and group.crash_limit == 5
    job2, _ = book.submit()
    assert job2.id == 2 and book.book.last_job_id() == 2
    check(job)


def test_explicit_ids_are_sorted_with_steps(book: Book) -> None:
    job, group = book.submit(((10, 12, 1), (0, 6, 3)))
    assert task_ids(job) == [0, 3, 6, 10, 11, 12]
    assert group.keys.tolist() == [key(job, i) for i in (0, 3, 6, 10, 11, 12)]


def test_a_task_index_of_many_submits_searches_the_array() -> None:
    """Ranges are kept for up to MAX_RUNS submits; a job file's template per task makes more,
    which then go in one search, at no insertion cost per submit (ids in reverse order)."""
    index = TaskIndex()
    n = MAX_RUNS + 10
    index.add([np.array([i], dtype=np.uint32) for i in reversed(range(n))])
    assert index._runs is None
    assert index.find_one(TaskId(0)) == (n - 1, 0) and index.find_one(TaskId(n)) is None
    few = TaskIndex()
    few.add([np.array([i], dtype=np.uint32) for i in reversed(range(MAX_RUNS))])
    assert few._runs is not None and few.find_one(TaskId(0)) == (MAX_RUNS - 1, 0)


def test_a_group_finds_a_key_s_position_with_or_without_gaps(book: Book) -> None:
    job, group = book.submit(((10, 12, 1), (0, 6, 3)))  # 0 3 6 10 11 12
    for i, task_id in enumerate((0, 3, 6, 10, 11, 12)):
        assert group.position(key(job, task_id)) == i and group.holds(key(job, task_id))
    for task_id, where in ((1, 1), (7, 3), (13, 6)):
        assert group.position(key(job, task_id)) == where
        assert not group.holds(key(job, task_id))
    _, dense = book.submit(((5, 9, 1),))
    assert [dense.position(k) for k in dense.keys.tolist()] == [0, 1, 2, 3, 4]
    assert not dense.holds(key(job, 7)) and dense.position(key(job, 7)) == 0  # an older job


def test_an_id_given_twice_is_refused(book: Book) -> None:
    with pytest.raises(TaskDefinedTwice) as caught:
        book.submit(((0, 5, 1), (3, 3, 1)))
    assert str(caught.value) == "Task 3 is defined more than once."
    assert len(book.book.jobs) == 0  # nothing half-created
    assert book.submit()[0].id == 1


def test_entries_number_tasks_from_zero(book: Book) -> None:
    job, group = book.submit(entries=[b"a", b"b", b"c"])
    assert task_ids(job) == [0, 1, 2]
    assert group.entries == [b"a", b"b", b"c"]
    assert group.entry_of(key(job, 1)) == b"b"


def test_an_array_filters_entries_by_index(book: Book) -> None:
    job, group = book.submit(((1, 2, 1), (9, 9, 1)), entries=[b"a", b"b", b"c", b"d"])
    assert task_ids(job) == [1, 2]  # 9 has no entry
    assert group.entries == [b"b", b"c"]


def test_open_job_ids_continue_after_the_largest(book: Book) -> None:
    """spec/jobs.md §10: four plain submits give Ids 0-3; arrays keep their ids."""
    job = book.open_job()
    for _ in range(4):
        book.submit(job_id=job.id)
    assert task_ids(job) == [0, 1, 2, 3]
    book.submit(entries=["x", "y"], job_id=job.id)
    assert task_ids(job) == [0, 1, 2, 3, 4, 5]
    assert job.state == "WAITING"
    for t in range(6):
        book.finish(job, t)
    assert job.state == "OPENED" and not job.completed
    job.is_open = False
    assert job.state == "FINISHED" and job.completed
    check(job)


def test_open_job_arrays_merge_into_one_id_set(book: Book) -> None:
    """spec/jobs.md §10: 10-20, then 1,3,5, then 2,4,6 give Tasks 17; Ids 1-6,10-20."""
    job = book.open_job()
    book.submit(((10, 20, 1),), job_id=job.id)
    book.submit(((1, 5, 2),), job_id=job.id)
    book.submit(((2, 6, 2),), job_id=job.id)
    detail = views.detail(book.book, job, include_tasks=False)
    assert detail.summary.task_count == 17
    assert detail.task_ids == ((1, 6, 1), (10, 20, 1))
    assert len(detail.submits) == 3


def test_submit_errors_name_the_job_and_task(book: Book) -> None:
    job = book.open_job()
    book.submit(job_id=job.id)
    with pytest.raises(TaskExists) as exists:
        book.submit(((0, 0, 1),), job_id=job.id)
    assert str(exists.value) == f"Task 0 already exists in job {job.id}."
    with pytest.raises(JobNotFound) as missing:
        book.submit(job_id=123)
    assert str(missing.value) == "Job 123 not found."
    closed, _ = book.submit()
    with pytest.raises(JobNotOpened) as not_open:
        book.submit(job_id=closed.id)
    assert str(not_open.value) == f"Job {closed.id} is not opened."


def test_a_submit_without_tasks_is_refused(book: Book) -> None:
    with pytest.raises(UserError):
        book.submit(((5, 9, 1),), entries=["only one"])
    assert len(book.book.jobs) == 0


def test_a_million_tasks_cost_under_64_bytes_each_and_submit_fast(book: Book) -> None:
    n = 1_000_000
    t0 = time.perf_counter()
    job, group = book.submit(((0, n - 1, 1),))
    elapsed = time.perf_counter() - t0
    table = job.submits[0].table
    per_task = (table.nbytes() + group.keys.nbytes) / n
    assert len(table) == n and job.counts[W] == n
    assert per_task <= 64, per_task
    assert elapsed < 2.0, elapsed


def test_a_clash_in_an_open_job_names_the_earliest_submit_first(book: Book) -> None:
    job = book.open_job()
    book.submit(((5, 5, 1),), job_id=job.id)
    book.submit(((1, 1, 1),), job_id=job.id)
    with pytest.raises(TaskExists) as exists:
        book.submit(((1, 5, 4),), job_id=job.id)
    assert str(exists.value) == f"Task 5 already exists in job {job.id}."
    with pytest.raises(TaskExists) as again:
        book.book.submit_graph(graph((3, "a"), (1, "a"), job_id=job.id), NOW)
    assert str(again.value) == f"Task 1 already exists in job {job.id}."
    with pytest.raises(UserError, match="Invalid dependency on 7"):
        book.book.submit_graph(graph((3, "a", (5, 7)), job_id=job.id), NOW)
    book.book.submit_graph(graph((3, "a", (5, 1)), job_id=job.id), NOW)
    assert task_ids(job) == [1, 3, 5]
    check(job)


def graph(*tasks: tuple, job_id: int | None = None) -> GraphSubmission:  # type: ignore[type-arg]
    """A job file: (id, template tag[, deps]) per task; tasks of a tag share a submit."""
    base = request().template
    return GraphSubmission("file", None, "/work", tuple(
        GraphTask(t[0], dataclasses.replace(base, args=("run", t[1])), *t[2:]) for t in tasks),
        job_id)


def test_interleaved_submits_of_a_job_file_and_an_open_job_find_every_task(book: Book) -> None:
    """A job file's tasks go to their template's submit, so submits interleave ids; later
    submits into the open job fill gaps between them."""
    job = book.open_job()
    book.book.submit_graph(graph(*((i, "even" if i % 2 == 0 else "odd") for i in range(0, 20))
                                 , job_id=job.id), NOW)
    book.submit(((25, 29, 2),), job_id=job.id)
    book.submit(((21, 23, 2), (30, 30, 1)), job_id=job.id)
    other, _ = book.submit(((0, 3, 1),))
    assert len(job.submits) == 4 and task_ids(job) == [*range(20), 21, 23, 25, 27, 29, 30]
    check(job)
    # One batch spans every submit of the job, another job, and unknown tasks.
    keys = [key(job, t) for t in (29, 0, 1, 21, 30, 99)] + [key(other, 2), key(job, 2)]
    book.book.tasks_started(1, [(k, 0, 10.0, 0) for k in keys], NOW)
    assert [state_of(job, t) for t in (0, 1, 2, 3, 21, 29, 30)] == [R, R, R, W, R, R, R]
    assert state_of(other, 2) == R and job.counts == (20, 6, 0, 0, 0, 0)
    book.finish(job, 1, 21, 30)
    book.fail(job, 29, 0)
    assert [state_of(job, t) for t in (0, 1, 21, 29, 30)] == [X, F, F, X, F]
    assert job.counts == (20, 1, 3, 2, 0, 0) and job.task_count == 26
    assert job.worker_ids == {1}
    check(job)
    check(other)


class CountingList(list):  # type: ignore[type-arg]
    """A job's submits that count the times something walks them."""

    walks = 0

    def __iter__(self):  # noqa: ANN204
        CountingList.walks += 1
        return super().__iter__()


def test_task_events_of_a_job_of_many_submits_never_walk_its_submits(book: Book) -> None:
    """A Python API job makes a submit per function call: 2,000 of them cost 25 ms a task
    when every event looked at each."""
    n = 300
    job, _groups = book.book.submit_graph(graph(*((i, str(i)) for i in range(n))), NOW)
    job.submits = CountingList(job.submits)
    CountingList.walks = 0
    for t in range(n):
        book.start(job, t)
        (book.fail if t == 7 else book.finish)(job, t)
        assert job.terminated == (t == n - 1)
    assert CountingList.walks == 0
    assert job.counts == (0, 0, n - 1, 1, 0, 0) and job.state == "FAILED"
    assert job.finished_at == NOW
    check(job)


# --- task events ----------------------------------------------------------------------------


def test_events_move_tasks_and_counts_follow(book: Book) -> None:
    job, _ = book.submit(((0, 4, 1),))
    book.start(job, 0, 1, 2, worker=3)
    assert job.counts == (2, 3, 0, 0, 0, 0) and job.state == "RUNNING"
    book.finish(job, 0, worker=3)
    book.fail(job, 1, worker=3, error="Program terminated with exit code 1.")
    book.fail(job, 3, worker=4)  # WAITING -> FAILED: it never ran
    book.book.tasks_requeued([key(job, 2)], [1], NOW)  # its worker was lost
    assert [state_of(job, t) for t in range(5)] == [F, X, W, X, W]
    assert job.counts == (2, 0, 1, 2, 0, 0)
    table = job.submits[0].table
    assert table.instance[2] == 1 and np.isnan(table.started[2])
    assert table.errors == {1: "Program terminated with exit code 1.", 3: "boom"}
    assert sorted(job.worker_ids) == [3, 4]
    check(job)
    book.start(job, 2, 4, worker=5, instance=1)
    book.finish(job, 2, 4, worker=5, instance=1)
    assert job.state == "FAILED" and job.terminated
    assert job.finished_at == 100.0
    check(job)


def test_short_reports_task_by_task_match_the_columns_path() -> None:
    """Reports of up to FEW_KEYS tasks are applied with scalars, longer ones (and the
    journal's replay) by columns: both must leave the same tables, counts and last task."""
    scalar, columns = Book(), Book()
    jobs = {}
    for name, b in (("scalar", scalar), ("columns", columns)):
        first, _ = b.submit(((0, 9, 1),))
        second, _ = b.submit(((0, 4, 2),))
        jobs[name] = (first, second)
        for worker in (1, 2, 7):  # only the record's last task is read
            b.book.workers.workers[worker] = WorkerRecord(worker, None, NOW)  # type: ignore[arg-type]
    unknown = (99 << 32) | 1
    for b, (first, second) in ((scalar, jobs["scalar"]), (columns, jobs["columns"])):
        reports = [
            [key(first, 0), key(first, 3), unknown, key(second, 2)],
            [key(first, 1), key(second, 0), key(second, 4), key(first, 9)],
        ]
        for worker, keys in enumerate(reports, start=1):
            started = [(k, 2, 10.0 + i, 0) for i, k in enumerate(keys)]
            finished = [(k, 2, 10.0 + i, 20.0 + i, 0) for i, k in enumerate(keys)]
            if b is scalar:
                b.book.tasks_started(worker, started, NOW)
                b.book.tasks_finished(worker, finished[:2], NOW)
            else:
                cols = [np.array(c) for c in zip(*started, strict=True)]
                b.book.apply_started(worker, *cols[:3])
                cols = [np.array(c) for c in zip(*finished[:2], strict=True)]
                b.book.apply_finished(worker, *cols[:4], NOW)
        # a task that finishes without a start report (a short task, news merged), and a
        # start report that comes after its task finished (ignored)
        late = [(key(first, 5), 0, 5.0, 6.0, 0)]
        again = [(key(first, 0), 3, 30.0, 0)]
        if b is scalar:
            b.book.tasks_finished(7, late, NOW)
            b.book.tasks_started(7, again, NOW)
        else:
            b.book.apply_finished(7, *[np.array(c) for c in zip(*late, strict=True)][:4], NOW)
            b.book.apply_started(7, *[np.array(c) for c in zip(*again, strict=True)][:3])
    for (a, b) in zip(jobs["scalar"], jobs["columns"], strict=True):
        ta, tb = a.submits[0].table, b.submits[0].table
        for column in ("state", "instance", "worker", "started", "ended"):
            np.testing.assert_array_equal(getattr(ta, column), getattr(tb, column))
        assert ta.counts == tb.counts and a.counts == b.counts
        assert a.worker_ids == b.worker_ids
        check(a)
    for worker in (1, 2, 7):
        last = scalar.book.workers.workers[worker].last_task
        assert last is not None and last == columns.book.workers.workers[worker].last_task


def test_news_for_unknown_jobs_and_tasks_is_ignored(book: Book) -> None:
    job, _ = book.submit()
    book.book.tasks_started(1, [((99 << 32) | 0, 0, 1.0, 0), (key(job, 7), 0, 1.0, 0)], NOW)
    book.book.tasks_finished(1, [((99 << 32), 0, 1.0, 2.0, 0)], NOW)
    assert job.counts == (1, 0, 0, 0, 0, 0)


def test_crash_texts_are_hqs(book: Book) -> None:
    """spec/jobs.md §16."""
    assert crash_error(5) == (
        "Task was running on a worker that was lost; the task has occurred 5 times in this "
        "situation and limit was reached."
    )
    assert NEVER_RESTART_ERROR == (
        "Task was running on a lost worker while never restart flag was set."
    )
    job, _ = book.submit(((0, 1, 1),))
    book.start(job, 0, 1)
    book.book.tasks_crashed(1, [key(job, 0)], [5], False, NOW)
    book.book.tasks_crashed(1, [key(job, 1)], [1], True, NOW)
    errors = job.submits[0].table.errors
    assert errors == {0: crash_error(5), 1: NEVER_RESTART_ERROR}
    assert job.counts[X] == 2
    check(job)


# --- max fails ------------------------------------------------------------------------------


def test_max_fails_zero_aborts_the_rest_at_the_first_failure(book: Book) -> None:
    """spec/jobs.md §8.1: 1-2 with --max-fails 0, task 1 fails, task 2 sleeps."""
    job, group = book.submit(((1, 2, 1),), max_fails=0)
    book.start(job, 1, 2)
    book.fail(job, 1)
    assert [state_of(job, 1), state_of(job, 2)] == [X, A]
    assert book.canceled_gids == [[group.gid]]  # the running one is killed
    assert job.state == "FAILED"
    check(job)


@pytest.mark.parametrize("batched", [False, True])
def test_ten_failures_with_max_fails_three_end_four_failed_six_aborted(
    book: Book, batched: bool
) -> None:
    job, _ = book.submit(((0, 9, 1),), max_fails=3)
    if batched:
        book.fail(job, *range(10))
    else:
        for t in range(10):
            book.fail(job, t)
    assert job.counts == (0, 0, 0, 4, 0, 6)
    assert len(book.canceled_gids) == 1
    check(job)


def test_failures_up_to_max_fails_abort_nothing(book: Book) -> None:
    job, _ = book.submit(((1, 200, 1),), max_fails=1)
    book.fail(job, 7)
    book.finish(job, *(t for t in range(1, 201) if t != 7))
    assert job.counts == (0, 0, 199, 1, 0, 0)
    assert book.canceled_gids == []


def test_crashes_count_towards_max_fails(book: Book) -> None:
    job, _ = book.submit(((0, 2, 1),), max_fails=0)
    book.start(job, 0)
    book.book.tasks_crashed(1, [key(job, 0)], [1], True, NOW)
    assert job.counts == (0, 0, 0, 1, 0, 2)
    check(job)


def test_max_fails_counts_the_whole_job_across_submits(book: Book) -> None:
    job = book.open_job()
    job.max_fails = 1
    _, g1 = book.submit(job_id=job.id)
    _, g2 = book.submit(((5, 7, 1),), job_id=job.id)
    book.fail(job, 0)
    book.fail(job, 5)
    assert job.counts == (0, 0, 0, 2, 0, 2)
    assert book.canceled_gids == [[g2.gid]]  # only submits with unfinished tasks
    check(job)


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_counts_canceled_and_already_finished(book: Book) -> None:
    """spec/jobs.md §2.2: a 10-task array with 4 finished shows FINISHED (4), CANCELED (6)."""
    job, group = book.submit(((0, 9, 1),))
    book.start(job, 0, 1, 2, 3, 4)
    book.finish(job, 0, 1, 2, 3)
    assert book.book.cancel(job, "enough", NOW) == (6, 4)
    assert job.counts == (0, 0, 4, 0, 6, 0)
    assert job.state == "CANCELED" and job.cancel_reason == "enough"
    assert book.canceled_gids == [[group.gid]]
    assert job.finished_at == 100.0
    # Nothing left to cancel: the reason stays, the core is not bothered again.
    assert book.book.cancel(job, "again", NOW) == (0, 10)
    assert job.cancel_reason == "enough"
    assert book.canceled_gids == [[group.gid]]
    check(job)


def test_late_events_for_canceled_tasks_are_ignored(book: Book) -> None:
    job, _ = book.submit(((0, 3, 1),))
    book.start(job, 0, 1)
    book.book.cancel(job, None, NOW)
    assert job.cancel_reason is None
    before = job.counts
    book.start(job, 2)
    book.finish(job, 0)
    book.fail(job, 1)
    book.book.tasks_requeued([key(job, 3)], [1], NOW)
    book.book.tasks_crashed(1, [key(job, 0)], [5], False, NOW)
    assert job.counts == before == (0, 0, 0, 0, 4, 0)
    assert job.submits[0].table.errors == {}
    check(job)


# --- views ----------------------------------------------------------------------------------


def test_task_view_shows_paths_only_once_a_task_ran(book: Book) -> None:
    job, _ = book.submit(((0, 1, 1),))
    book.start(job, 1, worker=2, instance=0)
    submit = job.submits[0]
    waiting = views.task_view(book.book, job, submit, 0, 0)
    assert waiting.state == "WAITING"
    assert waiting.cwd is waiting.stdout is waiting.ended_at is None
    running = views.task_view(book.book, job, submit, 1, 0)
    assert running.state == "RUNNING" and running.worker_ids == (2,)
    assert running.cwd == "/work"
    assert running.stdout == "/work/job-1/1.stdout"
    assert running.started_at == 10.0


def test_detail_lists_at_most_five_failed_tasks(book: Book) -> None:
    job, _ = book.submit(((0, 9, 1),))
    book.fail(job, *range(7))
    detail = views.detail(book.book, job, include_tasks=True)
    assert detail.n_failed == 7
    assert [t.id for t in detail.failed] == [0, 1, 2, 3, 4]
    assert len(detail.tasks) == 10
    assert detail.summary.counts == (3, 0, 0, 7, 0, 0)
    assert detail.finished_at is None  # not terminated yet
    view = views.submit_view(job.submits[0])
    assert view.stdout == "/work/job-1/%{TASK_ID}.stdout"
    assert view.ids == ((0, 9, 1),)


# --- the book driven by the cluster core ----------------------------------------------------


def wired(book: Book) -> Env:
    """An env whose core reports to the real book, and whose book cancels in that core."""
    env = Env()
    env.out.events = book.book
    book.book.cancel_groups = lambda gids, now: reactor.cancel_groups(env.core, env.out, gids, now)
    return env


def add(env: Env, group: Group) -> Group:
    reactor.add_group(env.core, group)
    env.groups[group.gid] = group
    return group


def test_max_fails_through_the_core_kills_the_rest_on_their_nodes(book: Book) -> None:
    env = wired(book)
    w1, w2 = env.workers(1, 1)
    job, group = book.submit(((0, 3, 1),), max_fails=0)
    add(env, group)
    env.schedule()
    k1 = env.out.take_keys(w1.wid, ComputeTasks)
    k2 = env.out.take_keys(w2.wid, ComputeTasks)
    env.out.discard(DefineGroup)
    env.start(w1, k1[:1])
    env.start(w2, k2[:1])
    env.fail(w1, k1[:1])
    assert job.counts == (0, 0, 0, 1, 0, 3)
    assert sorted(env.out.take_keys(w1.wid, CancelTasks)) == sorted(k1[1:])
    assert sorted(env.out.take_keys(w2.wid, CancelTasks)) == sorted(k2)
    env.finish(w2, k2[:1])  # too late: it was aborted
    assert job.counts == (0, 0, 0, 1, 0, 3)
    assert w1.committed["cpus"] == w2.committed["cpus"] == 0
    env.out.assert_empty()
    env.check()


def test_worker_loss_through_the_core_requeues_and_then_fails_the_task(book: Book) -> None:
    env = wired(book)
    job, group = book.submit(crash_limit=2)
    add(env, group)
    for _ in range(2):
        w = env.worker(1)
        env.schedule()
        env.out.discard(ComputeTasks)
        env.out.discard(DefineGroup)
        env.start(w, group.keys.tolist())
        assert job.counts[R] == 1
        env.lose(w, StopReason.HEARTBEAT_LOST)
    table = job.submits[0].table
    assert job.counts == (0, 0, 0, 1, 0, 0)
    assert table.errors == {0: crash_error(2)}
    assert table.instance[0] == 1  # the instance that ran last
    env.check()


def test_abort_from_a_crash_during_a_steal_gives_the_thief_its_room_back(book: Book) -> None:
    env = wired(book)
    victim = env.worker(1)
    job, group = book.submit(((0, 1, 1),), max_fails=0, crash_limit=NEVER_RESTART)
    add(env, group)
    env.schedule()
    running, queued = env.out.take_keys(victim.wid, ComputeTasks)
    env.start(victim, [running])
    thief = env.worker(1)
    env.schedule()
    assert env.out.take_keys(victim.wid, RetractTasks) == [queued]
    assert thief.committed["cpus"] > 0
    env.lose(victim, StopReason.STOPPED)  # never-restart: FAILED, then max-fails aborts
    assert job.counts == (0, 0, 0, 1, 0, 1)
    assert thief.committed["cpus"] == 0
    env.check()


@pytest.mark.parametrize("parts", [
    [[5, 6, 7, 8]],  # one submit of consecutive ids: found by subtraction
    [[0]],
    [[1, 3, 4]],  # a gap: searched
    [[0, 1], [2, 3]],  # two submits of consecutive ids: bisected
    [[7, 8], [2, 3], [5]],  # so, in any order
    [[7, 8], [2, 3], [10, 11]],  # so, with gaps between
    [[4, 9], [0, 2, 3]],  # interleaved submits: searched
    [[0, 1], [3, 5]],  # one submit not consecutive: searched
])
@pytest.mark.parametrize("together", [False, True])
def test_a_task_index_finds_each_id_and_nothing_else(parts: list[list[int]],
                                                     together: bool) -> None:
    index = TaskIndex()
    if together:
        index.add([np.array(part, dtype=np.uint32) for part in parts])
    for part in parts if not together else ():
        index.add([np.array(part, dtype=np.uint32)])
    for submit, part in enumerate(parts):
        for row, task_id in enumerate(part):
            assert index.find_one(TaskId(task_id)) == (submit, row)
    known = {t for part in parts for t in part}
    for task_id in (-1, *range(12), 1 << 32):
        if task_id not in known:
            assert index.find_one(TaskId(task_id)) is None, task_id
    assert (index.first is not None) == (parts in ([[5, 6, 7, 8]], [[0]]))
    ranges = all(p[-1] - p[0] == len(p) - 1 for p in parts) and len(known) == sum(
        map(len, parts))  # consecutive, and no two overlap
    assert (index._runs is not None) == ranges
