"""The books' one stream of events: it says everything, in order, with the caller's times.

The main scenario drives a job book and a worker book through the real cluster core (every
kind of submit, starts, ends, failures past --max-fails, retries, crashes, requeues, aborts by
dependency, cancels, forgets, multi-node placement, workers joining and leaving) while a
replica book applies each event as it is published; the two must agree at every step, and a
third book replayed from the recorded list must agree at the end. That is the journal's replay.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from core_env import Env
from hqshm.cluster import reactor
from hqshm.cluster.core import Worker
from hqshm.cluster.crashlimit import NEVER_RESTART
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import StopReason
from hqshm.cluster.resources import RequestVariant, ResourceRequest, cpus_request

from hqshm.model.submission import (
    ArraySubmission,
    GraphSubmission,
    GraphTask,
    StdioDesc,
    TaskRef,
    TaskTemplate,
)
from hqshm.model.taskstates import TaskState
from hqshm.model.tasktable import merge_counts
from hqshm.model.workerconfig import WorkerConfiguration
from hqshm.server import views
from hqshm.server.events import (
    Event,
    EventStream,
    JobAborted,
    JobCanceled,
    JobClosed,
    JobOpened,
    JobsForgotten,
    JobSubmitted,
    TaskNodesReserved,
    TasksAborted,
    TasksCrashed,
    TasksFailed,
    TasksFinished,
    TasksRequeued,
    TasksStarted,
    WorkerConnected,
    WorkerLost,
)
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import Job
from hqshm.server.rpc import ChangedJobs
from hqshm.server.workers import WorkerBook

UID = "aB3xQ9"
ALL_EVENTS = {JobOpened, JobSubmitted, JobClosed, JobCanceled, JobAborted, JobsForgotten,
              TasksStarted, TasksFinished, TasksFailed, TasksRequeued, TasksCrashed,
              TasksAborted, TaskNodesReserved, WorkerConnected, WorkerLost}


def template(*, priority: int = 0, crash_limit: int = 5, retries: int = 0,
             request: ResourceRequest | None = None, args: tuple[str, ...] = ("sleep", "1")
             ) -> TaskTemplate:
    return TaskTemplate(
        args=args,
        env={"A": "1"},
        cwd="%{SUBMIT_DIR}",
        stdout=StdioDesc("file", "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"),
        stderr=StdioDesc("none"),
        request=request or cpus_request(),
        priority=priority,
        crash_limit=crash_limit,
        retries=retries,
    )


def array(ids: tuple[tuple[int, int, int], ...] = (), *, name: str = "job",
          max_fails: int | None = None, job_id: int | None = None,
          entries: tuple[bytes, ...] | None = None, after: tuple[TaskRef, ...] = (),
          **kw: Any) -> ArraySubmission:
    return ArraySubmission(name, max_fails, "/work", template(**kw), ids, entries, job_id,
                           after=after)


def config(worker: Worker) -> WorkerConfiguration:
    return WorkerConfiguration(worker.hostname, "/tmp/w", 8.0, None, None, "stop", worker.group,
                               1000 + worker.wid, "", worker.resources)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


class Replica:
    """A second pair of books that only ever applies what the first one publishes."""

    def __init__(self) -> None:
        self.published = Recorder()  # must stay empty: applying publishes nothing
        stream = EventStream()
        stream.subscribe(self.published)
        self.book = JobBook(UID, WorkerBook(stream), stream)
        self.book.cancel_groups = self._no_core

    def _no_core(self, gids: object, now: float) -> None:
        raise AssertionError("a replayed book must not touch the core")

    def emit(self, event: Event) -> None:
        self.book.apply(event)


class Cluster:
    """A job book and a worker book wired to the real core, as the server wires them."""

    def __init__(self) -> None:
        self.env = Env()
        self.recorder = Recorder()
        self.replica = Replica()
        self.changed = ChangedJobs()
        stream = EventStream()
        for consumer in (self.recorder, self.replica, self.changed):
            stream.subscribe(consumer)
        self.workers = WorkerBook(stream)
        self.book = JobBook(UID, self.workers, stream)
        self.env.out.events = self.book
        self.book.cancel_groups = lambda gids, now: reactor.cancel_groups(
            self.env.core, self.env.out, gids, now)

    @property
    def now(self) -> float:
        return self.env.clock.advance(1.0)

    def connect(self, cpus: int = 2) -> Worker:
        worker = self.env.worker(cpus)
        self.workers.joined(worker.wid, config(worker), self.now)
        return worker

    def lose(self, worker: Worker, reason: str) -> None:
        self.env.clock.advance(1.0)
        self.env.lose(worker, reason)
        self.workers.left(worker.wid, reason, self.env.clock.now())

    def _add(self, job: Job, groups: list) -> Job:  # type: ignore[type-arg]
        for new in groups:
            reactor.add_group(self.env.core, new.group, new.deps, new.after)
            self.env.groups[new.group.gid] = new.group
        return job

    def submit(self, req: ArraySubmission) -> Job:
        return self._add(*self.book.submit(req, self.now))

    def submit_graph(self, req: GraphSubmission) -> Job:
        return self._add(*self.book.submit_graph(req, self.now))

    def assigned(self, worker: Worker, job: Job) -> list[int]:
        """Schedule, then the keys of ``job`` sent to ``worker`` and not started there."""
        self.env.clock.advance(1.0)
        self.env.schedule()
        return sorted(k for k in worker.assigned if k >> 32 == job.id)

    def start(self, worker: Worker, keys: list[int]) -> None:
        self.env.clock.advance(1.0)
        self.env.start(worker, keys)

    def finish(self, worker: Worker, keys: list[int]) -> None:
        self.env.clock.advance(1.0)
        self.env.finish(worker, keys)

    def fail(self, worker: Worker, keys: list[int], retryable: bool = False) -> None:
        self.env.clock.advance(1.0)
        self.env.fail(worker, keys, retryable=retryable)

    def run(self, worker: Worker, job: Job) -> list[int]:
        """Start and finish what ``worker`` was given of ``job``."""
        keys = self.assigned(worker, job)
        self.start(worker, keys)
        self.finish(worker, keys)
        return keys

    def check(self) -> None:
        assert snapshot(self.replica.book) == snapshot(self.book)
        assert self.replica.published.events == []
        self.env.check()


def _column(values: np.ndarray) -> list[Any]:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]


def check_job(job: Job) -> None:
    """What the job keeps beside its tables (counts, where each task is) must agree with
    them: after events, replay and restore alike."""
    assert job.counts == merge_counts(s.table for s in job.submits)
    for submit in job.submits:
        for row, task_id in enumerate(submit.table.ids.tolist()):
            assert job.locate(task_id) == (submit, row)
    assert len(job.index.ids) == job.task_count


def snapshot(book: JobBook) -> dict[str, Any]:
    """Everything the book knows, as plain values (NaN as None), and every view of it."""
    jobs = {}
    for job_id in sorted(book.jobs):
        job = book.jobs.view(job_id)
        assert job is not None
        check_job(job)
        submits = []
        for submit in job.submits:
            table = submit.table
            submits.append((
                submit.gid, submit.template, submit.program, submit.entries, submit.batch,
                submit.is_array, submit.deps, submit.nodes, submit.after, table.errors,
                table.counts, *(_column(c) for c in (table.ids, table.state, table.instance,
                                                     table.worker, table.started, table.ended)),
            ))
        jobs[job_id] = (
            job.name, job.max_fails, job.submit_dir, job.submitted_at, job.is_open,
            job.cancel_reason, job.finished_at, sorted(job.worker_ids), submits,
            views.detail(book, job, include_tasks=True), views.task_ids(job, None),
        )
    workers = {wid: book.workers.view(record) for wid, record in book.workers.workers.items()}
    # The groups of live jobs are indexed (a sealed job's come back when it thaws).
    live = sorted(s.gid for job in book.jobs.live.values() for s in job.submits)
    assert sorted(book.by_gid) == live
    return {"jobs": jobs, "next": (book.next_job_id, book.next_gid),
            "summary": views.summary(book), "workers": workers}


def state(job: Job, task_id: int) -> TaskState:
    located = job.locate(task_id)
    assert located is not None
    return TaskState(int(located[0].table.state[located[1]]))


def test_a_book_replayed_from_its_events_is_the_same_book() -> None:
    c = Cluster()
    play_everything(c)
    published = {type(event) for event in c.recorder.events}
    assert published == ALL_EVENTS, ALL_EVENTS - published

    fresh = Replica()
    for event in c.recorder.events:
        fresh.book.apply(event)
    assert snapshot(fresh.book) == snapshot(c.book)


def play_everything(c: Cluster) -> None:
    """Every kind of event, checked against the replica at each step (the journal's tests
    replay the same story through its records)."""
    w1, w2 = c.connect(), c.connect()
    c.check()

    # An array whose second failure passes --max-fails 1: the rest of it is aborted.
    a = c.submit(array(((0, 5, 1),), name="a", max_fails=1))
    k1, k2 = c.assigned(w1, a), c.assigned(w2, a)
    c.start(w1, k1[:2])
    c.start(w2, k2[:1])
    c.finish(w1, k1[:1])
    c.fail(w1, k1[1:2])
    c.check()
    c.fail(w2, k2[:1])
    assert a.counts == (0, 0, 1, 2, 0, 3) and a.finished_at is not None
    c.check()

    # A job file: two templates, an entry, a chain of dependencies; a failure aborts the rest,
    # and an array waiting (--after) for the aborted task is aborted whole.
    b = c.submit_graph(GraphSubmission("b", None, "/work", (
        GraphTask(0, template()),
        GraphTask(1, template(), (), b"x"),
        GraphTask(2, template(args=("two",)), (0, 1)),
        GraphTask(3, template(args=("two",)), (2,)),
    )))
    d = c.submit(array(((0, 2, 1),), name="d", after=(TaskRef(b.id, ((3, 3, 1),)),)))
    # An array after a task that already failed can never run.
    e = c.submit(array(name="e", after=(TaskRef(a.id, None),)))
    assert e.counts == (0, 0, 0, 0, 0, 1)
    c.run(w1, b)
    c.run(w2, b)
    (two,) = c.assigned(w1, b) or c.assigned(w2, b)
    runner = w1 if two in w1.assigned else w2
    c.start(runner, [two])
    c.fail(runner, [two])
    assert [state(b, t) for t in range(4)] == [TaskState.FINISHED] * 2 + [TaskState.FAILED,
                                                                         TaskState.ABORTED]
    assert d.counts == (0, 0, 0, 0, 0, 3)
    c.check()

    # A job-file task whose prerequisite already failed is aborted when it is submitted.
    opened = c.book.open_job("session", 3, c.now)
    c.submit_graph(GraphSubmission("x", None, "/work", (GraphTask(0, template()),),
                                   job_id=opened.id))
    keys = c.assigned(w1, opened) + c.assigned(w2, opened)
    c.start(w1, keys)
    c.fail(w1, keys)
    c.submit_graph(GraphSubmission("x", None, "/work", (GraphTask(1, template(), (0,)),),
                                   job_id=opened.id))
    assert state(opened, 1) == TaskState.ABORTED
    # More submits into the open job, with entries; then it is closed.
    c.submit(array(name="more", job_id=opened.id, entries=(b"p", b"q")))
    c.submit(array(name="more", job_id=opened.id))
    c.run(w1, opened)
    c.run(w2, opened)
    c.check()
    assert c.book.close(opened, c.now) and opened.state == "FAILED"
    c.check()

    # A retryable failure runs again; then the job is canceled with a reason.
    g = c.submit(array(((0, 3, 1),), name="g", retries=1))
    (first, *_rest) = c.assigned(w1, g)
    c.start(w1, [first])
    c.fail(w1, [first], retryable=True)
    assert g.submits[0].table.instance.tolist()[0] == 1
    c.check()
    assert c.book.cancel(g, "enough", c.now)[0] == 4
    assert g.cancel_reason == "enough"
    c.check()

    # Lost workers: a task past its crash limit fails, never-restart fails, the rest go back.
    f = c.submit(array(((0, 3, 1),), name="f", crash_limit=1))
    n = c.submit(array(name="n", crash_limit=NEVER_RESTART))
    on_w1 = c.assigned(w1, f) + c.assigned(w1, n)
    c.start(w1, [on_w1[0], on_w1[-1]])
    c.lose(w1, StopReason.CONNECTION_LOST)
    assert f.counts[TaskState.FAILED] == 1 and n.counts[TaskState.FAILED] == 1
    c.check()
    for _ in range(3):
        c.run(w2, f)
    assert f.counts == (0, 0, 3, 1, 0, 0)
    c.lose(w2, StopReason.STOPPED)

    # A multi-node task takes two idle workers; the job is finished, then forgotten.
    w3, w4 = c.connect(), c.connect()
    multi = c.submit(array(name="m", request=ResourceRequest((RequestVariant(n_nodes=2),))))
    c.run(w3, multi)
    assert multi.submits[0].nodes == {0: (w3.wid, w4.wid)}
    assert multi.state == "FINISHED"
    c.check()
    assert c.book.forget([multi.id, a.id, g.id, a.id], ["finished", "failed"], c.now) == (2, 2)
    c.check()


def test_events_carry_the_time_their_caller_passed_in() -> None:
    c = Cluster()
    w = c.connect()
    job = c.submit(array())
    (key,) = c.assigned(w, job)
    c.start(w, [key])
    started_at = c.env.clock.now()
    c.env.clock.advance(5.0)
    c.finish(w, [key])
    kinds = [(type(e).__name__, e.at) for e in c.recorder.events]
    assert kinds == [("WorkerConnected", 1001.0), ("JobSubmitted", 1002.0),
                     ("TasksStarted", started_at), ("TasksFinished", started_at + 6.0)]
    assert job.submitted_at == 1002.0 and job.finished_at == started_at + 6.0


def test_the_core_passes_its_handlers_time_to_task_events() -> None:
    env = Env()
    w = env.worker(1)
    group = env.group(1, retries=1)
    (key,) = group.keys.tolist()
    waiting = env.group(1, after=[key])
    env.schedule()
    env.start(w, [key])
    env.clock.advance(2.0)
    env.fail(w, [key])  # retried
    env.schedule()
    env.clock.advance(3.0)
    env.lose(w, StopReason.CONNECTION_LOST)
    env.clock.advance(4.0)
    env.cancel(group)  # what waits for it is aborted
    assert [kind for kind, _ in env.events.log] == ["started", "requeued", "requeued",
                                                    "aborted_group"]
    assert env.events.times == [1000.0, 1002.0, 1005.0, 1009.0]
    assert env.events.take("aborted_group") == [(waiting.gid,)]


def test_a_batch_of_failures_is_cut_where_it_passes_max_fails() -> None:
    """spec/jobs.md §8.1: what comes after the failure that aborts the job is news too late."""
    c = Cluster()
    w = c.connect(cpus=8)
    job = c.submit(array(((0, 5, 1),), max_fails=1))
    keys = c.assigned(w, job)
    c.start(w, keys)
    del c.recorder.events[:]
    c.fail(w, keys)
    shapes = [(type(e).__name__, len(e.failed) if isinstance(e, TasksFailed) else None)
              for e in c.recorder.events]
    assert shapes == [("TasksFailed", 2), ("JobAborted", None), ("TasksFailed", 4)]
    assert job.counts == (0, 0, 0, 2, 0, 4)
    c.check()


def test_nothing_is_published_for_requests_that_change_nothing() -> None:
    c = Cluster()
    job = c.submit(array())
    del c.recorder.events[:]
    assert not c.book.close(job, c.now)  # not open
    assert c.book.forget([job.id], ["finished"], c.now) == (0, 1)  # not completed
    with pytest.raises(Exception, match="Job 7 not found"):
        c.submit(array(job_id=7))
    assert c.recorder.events == []


def test_changed_jobs_are_those_the_events_name() -> None:
    changed = ChangedJobs()
    changed.emit(TasksStarted(1, [(task_key(3, 0), 0, 1.0, 0), (task_key(4, 9), 0, 1.0, 0)],
                              1.0))
    changed.emit(TasksAborted([task_key(5, 1)], [(6, 11)], 2.0))
    changed.emit(WorkerLost(1, StopReason.STOPPED, 3.0))
    changed.emit(JobsForgotten((8, 9), 4.0))
    assert changed.take() == {3, 4, 5, 6, 8, 9}
    assert changed.take() == set()


def test_a_stream_hands_each_event_to_every_consumer_in_order() -> None:
    stream = EventStream()
    first, second = Recorder(), Recorder()
    stream.subscribe(first)
    stream.subscribe(second)
    events = [JobClosed(1, 1.0), JobCanceled(2, None, 2.0)]
    for event in events:
        stream.emit(event)
    assert first.events == second.events == events
