"""Clients parked on `hq job wait`: when each is answered, what it is told, and what a check
costs (only the jobs an event changed are looked at again)."""

from __future__ import annotations

import pytest
from hqshm.cluster.ids import JobId
from test_jobbook import Book

from hqshm.link.requests import Selector, WaitJobsRequest
from hqshm.link.responses import Notification, WaitJobsResponse
from hqshm.server.jobs import Job
from hqshm.server.jobstore import JobStore
from hqshm.server.rpc import ClientService, ServerControl
from hqshm.server.sealedjobs import SealedJob

NOW = 100.0


class CountingJobs(JobStore):
    """The book's jobs, counting the lookups of one job."""

    gets = 0

    def peek(self, job_id: JobId) -> Job | SealedJob | None:
        CountingJobs.gets += 1
        return super().peek(job_id)


class Service:
    """A ``ClientService`` on a job book, with the replies it sent, by client."""

    def __init__(self) -> None:
        self.b = Book()
        stream = self.b.book.events
        self.service = ClientService(None, self.b.book, self.b.book.workers,  # type: ignore[arg-type]
                                     None, ServerControl(), stream)  # type: ignore[arg-type]
        self.replies: list[tuple[bytes, object]] = []
        self.service.reply = lambda identity, response: self.replies.append((identity, response))

    def wait(self, client: bytes, selector: Selector, without_close: bool = False,
             notifications: bool = False) -> None:
        self.service.wait(client, WaitJobsRequest(selector, without_close, notifications))

    def answered(self) -> dict[bytes, WaitJobsResponse]:
        """Pass the changes to the waiters; the answers so far."""
        self.service.answer_waiters()
        return {c: r for c, r in self.replies if isinstance(r, WaitJobsResponse)}

    def run(self, job: Job, *task_ids: int) -> None:
        self.b.start(job, *task_ids)
        self.b.finish(job, *task_ids)


@pytest.fixture
def s() -> Service:
    return Service()


def ids(*ranges: tuple[int, int]) -> Selector:
    return Selector("ids", tuple((a, b, 1) for a, b in ranges))


def test_a_wait_on_done_jobs_is_answered_at_once_with_the_missing_ids(s: Service) -> None:
    job, _ = s.b.submit()
    s.run(job, 0)
    s.wait(b"c", ids((1, 3)))
    answer = s.replies[-1][1]
    assert isinstance(answer, WaitJobsResponse)
    assert [j.id for j in answer.jobs] == [1] and answer.missing == (2, 3)
    assert s.service.waiters == []


def test_a_waiter_is_answered_when_its_last_job_ends_not_before(s: Service) -> None:
    a, _ = s.b.submit(((0, 1, 1),))
    b, _ = s.b.submit()
    s.wait(b"all", Selector("all"))
    s.wait(b"a", ids((a.id, a.id)))
    s.run(a, 0)
    assert s.answered() == {}
    s.run(a, 1)
    assert set(s.answered()) == {b"a"}
    s.run(b, 0)
    assert [j.id for j in s.answered()[b"all"].jobs] == [a.id, b.id]


def test_an_open_job_is_waited_for_until_closed_unless_without_close(s: Service) -> None:
    opened = s.b.open_job()
    other, _ = s.b.submit()
    s.b.submit(job_id=opened.id)
    s.wait(b"close", ids((opened.id, opened.id)))
    s.wait(b"tasks", ids((opened.id, other.id)), without_close=True)
    s.run(opened, 0)
    assert s.answered() == {}  # `tasks` still waits for the other job
    # A submit into the open job makes it unfinished again before the other job ends.
    s.b.submit(job_id=opened.id)
    s.run(other, 0)
    assert s.answered() == {}
    s.run(opened, 1)
    assert set(s.answered()) == {b"tasks"}
    s.b.book.close(opened, NOW)
    assert set(s.answered()) == {b"tasks", b"close"}


def test_a_forgotten_job_is_no_longer_waited_for(s: Service) -> None:
    done, _ = s.b.submit()
    waiting, _ = s.b.submit()
    s.run(done, 0)
    s.wait(b"c", ids((done.id, waiting.id)), without_close=True)
    s.b.book.cancel(waiting, None, NOW)
    s.b.book.forget([done.id], ["finished"], NOW)
    answer = s.answered()[b"c"]
    assert [j.id for j in answer.jobs] == [waiting.id] and answer.missing == ()


def test_notifications_go_to_the_waiters_of_the_job_that_asked(s: Service) -> None:
    a, _ = s.b.submit()
    b, _ = s.b.submit()
    s.wait(b"a", ids((a.id, a.id)), notifications=True)
    s.wait(b"b", ids((b.id, b.id)), notifications=True)
    s.wait(b"quiet", ids((a.id, b.id)))
    s.service.notify(a.id, 0, 1, b"hello")
    assert s.replies == [(b"a", Notification(a.id, 0, 1, b"hello"))]


def test_a_wait_on_every_job_looks_at_each_job_once_per_change_of_it(s: Service) -> None:
    """`hq job wait all` on 6,000 jobs once spent 31 s of 82 looking at every job it waits
    for after each event."""
    n = 300
    jobs = [s.b.submit()[0] for _ in range(n)]
    counting = CountingJobs(s.b.book.by_gid)
    counting.live = s.b.book.jobs.live
    s.b.book.jobs = counting
    s.wait(b"all", Selector("all"))
    assert s.answered() == {}  # takes the submits' changes
    looked = 0
    for job in jobs:
        for event in (s.b.start, s.b.finish):
            event(job, 0)
            CountingJobs.gets = 0
            answered = s.answered()
            looked += CountingJobs.gets
        assert (b"all" in answered) == (job is jobs[-1])
    assert looked == 2 * n + n  # a look per change, then the answer's summaries


class _Socket:
    """What a ClientService sends, frame lists in order."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


def test_answers_wait_for_the_end_of_the_turn() -> None:
    """The server sends a turn's answers after its journal write (Server.after_turn): a client
    told its job was submitted must find it after a crash the next moment."""
    book = Book().book
    service = ClientService(None, book, book.workers, None,  # type: ignore[arg-type]
                            ServerControl(), book.events)
    socket = _Socket()
    service.serve(socket)  # type: ignore[arg-type]
    service.reply(b"a", WaitJobsResponse((), ()))
    service.reply(b"b", WaitJobsResponse((), ()))
    assert socket.sent == []
    service.send_replies()
    assert [frames[0] for frames in socket.sent] == [b"a", b"b"]
    service.send_replies()
    assert len(socket.sent) == 2  # sent once
