"""Client requests: one handler per request type, each returning its response.

Handlers take the request and the time, read once per batch of requests by ``read``.
``WaitJobsRequest`` is the one deferred answer: the handler parks the client and
``answer_waiters`` replies once the jobs are done, so a waiting `hq` costs nothing while it waits;
which jobs changed it learns as a consumer of the books' event stream (``ChangedJobs``).
"""

from __future__ import annotations

import itertools
import logging
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import zmq

from hqshm.cluster.errors import PeerError, VersionMismatch
from hqshm.cluster.firstuse import np
from hqshm.cluster.frozen import field, frozen, mutable
from hqshm.cluster.ids import JobId, TaskId, WorkerId
from hqshm.errors import UserError
from hqshm.link.details import (
    JobInfoResponse,
    TaskExplainResponse,
    TaskInfoResponse,
    TaskListResponse,
    WorkerListResponse,
)
from hqshm.link.requests import (
    CLIENT_LINK,
    CancelJobsRequest,
    CloseJobsRequest,
    ForgetJobsRequest,
    JobInfoRequest,
    JobListRequest,
    JobProgressRequest,
    JobSummaryRequest,
    OpenJobRequest,
    ResubmitRequest,
    Selector,
    ServerInfoRequest,
    StopServerRequest,
    StopWorkersRequest,
    TaskExplainRequest,
    TaskIdsRequest,
    TaskInfoRequest,
    TaskListRequest,
    WaitJobsRequest,
    WorkerInfoRequest,
    WorkerListRequest,
)
from hqshm.link.responses import (
    Ack,
    CancelJobsResponse,
    CloseJobsResponse,
    ErrorResponse,
    ForgetJobsResponse,
    JobListResponse,
    JobProgressResponse,
    JobSummaryResponse,
    Notification,
    ServerInfo,
    StopWorkersResponse,
    SubmitResponse,
    TaskIdsResponse,
    WaitJobsResponse,
)
from hqshm.link.submitrequests import SubmitGraphRequest, SubmitRequest
from hqshm.model.limits import MAX_MISSING_IDS, MAX_REQUEST_VALUES, range_count
from hqshm.model.selection import Ranges
from hqshm.model.submission import ArraySubmission, GraphSubmission
from hqshm.model.taskstates import parse_states
from hqshm.server import views
from hqshm.server.events import Event, EventStream
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import Job, NewGroup, match_ranges, missing_in_ranges
from hqshm.server.memory import release_free_memory
from hqshm.server.sealedjobs import SealedJob
from hqshm.server.submits import resubmit
from hqshm.server.workers import WorkerBook

logger = logging.getLogger(__name__)

Id = TypeVar("Id", bound=int)
DEFERRED = object()  # a handler's answer that comes later, through ``reply``


@mutable
class Waiter:
    identity: bytes
    job_ids: tuple[JobId, ...]
    missing: tuple[JobId, ...]
    without_close: bool
    notifications: bool = False
    jobs: frozenset[JobId] = field(init=False)
    # Its jobs not done yet, each looked at again only when an event names it: one
    # `hq job wait all` on 6,000 jobs once spent 31 s of 82 looking at every job per event.
    pending: set[JobId] = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = frozenset(self.job_ids)
        self.pending = set(self.job_ids)


class ServerControl:
    """What request handlers may do to the running server beyond the job book."""

    def add_groups(self, groups: Sequence[NewGroup]) -> None: ...

    def explain(self, job: Job, task_id: TaskId, now: float) -> TaskExplainResponse: ...
    def stop_server(self) -> None: ...
    def stop_worker(self, wid: WorkerId, now: float) -> None: ...
    def worker_load(self, wid: WorkerId) -> tuple[int, int, str]: ...


def resolve_ids(selector: Selector, existing: Iterable[Id]) -> tuple[list[Id], list[Id]]:
    """Ids a selector names: (present ones in order, missing ones). Ranges are matched against
    the ids that exist, never expanded, so `5-4000000000` costs what the existing ids cost;
    of the missing ids only the first ``MAX_MISSING_IDS`` are named."""
    known = sorted(existing)
    if selector.kind == "all":
        return known, []
    if selector.kind == "last":
        return known[-1:], []
    ids = np.array(known, dtype=np.int64)
    rows, which = match_ranges(ids, selector.ranges)
    present = ids[rows]
    missing = missing_in_ranges(selector.ranges, present, which, MAX_MISSING_IDS)
    return present.tolist(), missing  # type: ignore[return-value]  # ints, as the ids


@frozen
class LocatedTasks:
    """Tasks of a job that ranges name, in the ranges' order: parallel arrays."""

    ids: np.ndarray
    which: np.ndarray  # the index of the range naming each
    submit: np.ndarray  # the index of its submit in the job
    row: np.ndarray  # its row in that submit's table


def located_tasks(job: Job, ranges: Ranges) -> LocatedTasks:
    """The job's tasks that ranges name, found by matching each submit's sorted ids: the cost
    follows the job's tasks and the number of ranges, never what the ranges span."""
    parts = []
    for index, part in enumerate(job.submits):
        rows, which = match_ranges(part.table.ids, ranges)
        parts.append((part.table.ids[rows].astype(np.int64), which,
                      np.full(len(rows), index), rows))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return LocatedTasks(empty, empty, empty, empty)
    ids, which, submit, row = (np.concatenate(column) for column in zip(*parts, strict=True))
    order = np.lexsort((ids, which))  # a range's ids ascend, as it names them
    return LocatedTasks(ids[order], which[order], submit[order], row[order])


class ChangedJobs:
    """Jobs that changed since the waiters were last looked at: a consumer of the event stream."""

    def __init__(self) -> None:
        self.jobs: set[JobId] = set()

    def emit(self, event: Event) -> None:
        self.jobs.update(event.jobs())

    def take(self) -> set[JobId]:
        jobs, self.jobs = self.jobs, set()
        return jobs


class ClientService:
    def __init__(self, context: zmq.Context, book: JobBook, workers: WorkerBook,
                 info: ServerInfo, control: ServerControl, events: EventStream) -> None:
        self.context = context
        self.book = book
        self.workers = workers
        self.info = info
        self.control = control
        self.socket: zmq.Socket | None = None
        self.waiters: list[Waiter] = []
        self.changed = ChangedJobs()
        events.subscribe(self.changed)
        self.handlers: dict[type, Callable[[object, float], object]] = {
            ServerInfoRequest: lambda r, now: self.info,
            StopServerRequest: self.stop_server,
            SubmitRequest: self.submit,
            JobListRequest: self.job_list,
            JobInfoRequest: self.job_info,
            CancelJobsRequest: self.cancel,
            JobProgressRequest: self.progress,
            TaskListRequest: self.task_list,
            TaskInfoRequest: self.task_info,
            SubmitGraphRequest: self.submit,
            OpenJobRequest: self.open_job,
            CloseJobsRequest: self.close_jobs,
            ForgetJobsRequest: self.forget,
            JobSummaryRequest: self.summary,
            TaskIdsRequest: self.task_ids,
            TaskExplainRequest: self.explain,
            ResubmitRequest: self.resubmit,
            WorkerListRequest: self.worker_list,
            WorkerInfoRequest: self.worker_info,
            StopWorkersRequest: self.stop_workers,
        }
        self._identity = b""
        # Answers of this turn, sent by ``send_replies`` once the turn's events are written to
        # the journal: a client told that its job was submitted can count on a restart
        # finding it, even when the server is killed the next moment.
        self._replies: list[list[bytes]] = []

    def serve(self, sock: zmq.Socket) -> None:
        """Answer the clients of ``sock`` (``endpoints.attach``)."""
        self.socket = sock

    def read(self) -> None:
        assert self.socket is not None
        now = time.time()
        for _ in range(256):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue
            identity, payload = frames
            self._identity = identity
            try:
                request = CLIENT_LINK.decode(payload, MAX_REQUEST_VALUES)
            except VersionMismatch as exc:
                self.reply(identity, ErrorResponse(
                    f"client protocol {exc.theirs} is not supported by this server "
                    f"(protocol {exc.ours}, version {self.info.version})"))
                continue
            except PeerError as exc:
                logger.warning("Invalid client request: %s", exc)
                self.reply(identity, ErrorResponse(f"invalid request: {exc}"))
                continue
            try:
                if isinstance(request, WaitJobsRequest):
                    self.wait(identity, request)  # answers when the jobs end
                    continue
                handler = self.handlers.get(type(request))
                if handler is None:
                    response: object = ErrorResponse(
                        f"unexpected request {type(request).__name__}")
                else:
                    response = handler(request, now)
                    if response is DEFERRED:  # the handler replies later (`hq alloc add`)
                        continue
            except UserError as exc:
                response = ErrorResponse(str(exc))
            except Exception:  # a bug: log it, answer, keep serving
                logger.exception("Request %s failed", type(request).__name__)
                response = ErrorResponse("internal server error, see the server log")
            self.reply(identity, response)

    def reply(self, identity: bytes, response: object) -> None:
        self._replies.append([identity, CLIENT_LINK.encode(response)])

    def send_replies(self) -> None:
        """Send this turn's answers (after the journal's ``turn_done``)."""
        if not self._replies:
            return
        assert self.socket is not None
        for frames in self._replies:
            try:
                self.socket.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                logger.warning("Client is not reading its answer; dropped")
        self._replies.clear()

    # --- handlers -------------------------------------------------------------------------

    def stop_server(self, request: StopServerRequest, now: float) -> Ack:
        self.control.stop_server()
        return Ack()

    def submit(self, request: SubmitRequest | SubmitGraphRequest, now: float) -> SubmitResponse:
        if isinstance(request, SubmitRequest):
            return self._submit(request.unpacked(), now)
        return self._submit(request.submission, now)

    def _submit(self, submission: ArraySubmission | GraphSubmission,
                now: float) -> SubmitResponse:
        if isinstance(submission, GraphSubmission):
            job, groups = self.book.submit_graph(submission, now)
        else:
            job, groups = self.book.submit(submission, now)
        self.control.add_groups(groups)
        return SubmitResponse(job.id)

    def open_job(self, request: OpenJobRequest, now: float) -> SubmitResponse:
        return SubmitResponse(self.book.open_job(request.name, request.max_fails, now).id)

    def close_jobs(self, request: CloseJobsRequest, now: float) -> CloseJobsResponse:
        if request.selector.kind == "all":
            ids = sorted(i for i, j in self.book.jobs.live.items() if j.is_open)
            missing: list[JobId] = []
        else:
            ids, missing = resolve_ids(request.selector, self.book.jobs)
        # An open job is never sealed: one that is not live is closed.
        results = [(i, "closed" if (job := self.book.jobs.live.get(i)) is not None
                    and self.book.close(job, now) else "already-closed") for i in ids]
        results.extend((i, "not-found") for i in missing)
        return CloseJobsResponse(tuple(results))

    def forget(self, request: ForgetJobsRequest, now: float) -> ForgetJobsResponse:
        ids, _missing = resolve_ids(request.selector, self.book.jobs)
        forgotten, ignored = self.book.forget(ids, request.states, now)
        if forgotten:
            release_free_memory()
        if request.selector.kind == "ids":  # every id named and missing counts, listed or not
            ignored += range_count(request.selector.ranges) - len(ids)
        return ForgetJobsResponse(forgotten, ignored)

    def summary(self, request: JobSummaryRequest, now: float) -> JobSummaryResponse:
        return JobSummaryResponse(tuple(views.summary(self.book).items()))

    def task_ids(self, request: TaskIdsRequest, now: float) -> TaskIdsResponse:
        present, missing = resolve_ids(request.selector, self.book.jobs)
        states = parse_states(request.states) if request.states else None
        return TaskIdsResponse(
            tuple((i, views.task_ids(self._view(i), states)) for i in present),
            tuple(missing))

    def explain(self, request: TaskExplainRequest, now: float) -> TaskExplainResponse:
        present, _missing = resolve_ids(request.job, self.book.jobs)
        if not present:
            raise UserError("Job not found")
        return self.control.explain(self._view(present[0]), request.task_id, now)

    def resubmit(self, request: ResubmitRequest, now: float) -> SubmitResponse:
        job = self.book.jobs.view(request.job_id)
        if job is None:
            raise UserError(f"Job {request.job_id} not found")
        return self._submit(resubmit(job, parse_states(request.states), job.submit_dir), now)

    def _view(self, job_id: JobId) -> Job:
        """A job named by a resolved id, to read (a sealed one stays sealed)."""
        job = self.book.jobs.view(job_id)
        assert job is not None, "resolved ids name jobs that exist"
        return job

    def _peek(self, job_id: JobId) -> Job | SealedJob:
        job = self.book.jobs.peek(job_id)
        assert job is not None, "resolved ids name jobs that exist"
        return job

    def job_list(self, request: JobListRequest, now: float) -> JobListResponse:
        # The default listing shows no completed job: sealed ones (most of them, on a server
        # that kept 100,000) are not even looked at. Other listings walk the jobs by id from
        # the page's start, so a page reads its own rows.
        default = not request.states and not request.all
        jobs: Iterable[Job | SealedJob]
        if default:
            jobs = sorted((j for j in self.book.jobs.live.values() if j.id > request.after
                           # A job's state merges the counts of its submits; a finished job
                           # that is not open and not sealed yet is passed over by its
                           # finish time.
                           and (j.finished_at is None or j.is_open)
                           # WAITING, RUNNING or OPENED, without the state word's rule
                           and (j.is_open or j.unfinished > 0)),
                          key=operator.attrgetter("id"))
        else:
            jobs = self.book.jobs.ascending(request.after)
            if request.states:
                wanted = {s.upper() for s in request.states}
                jobs = (j for j in jobs if j.state in wanted)
        shown = itertools.islice(jobs, request.limit) if request.limit else jobs
        return JobListResponse(tuple(j.summary() for j in shown), len(self.book.jobs))

    def job_info(self, request: JobInfoRequest, now: float) -> JobInfoResponse:
        present, missing = resolve_ids(request.selector, self.book.jobs)
        details = tuple(
            views.detail(self.book, self._view(i), request.include_tasks) for i in present
        )
        return JobInfoResponse(details, tuple(missing))

    def cancel(self, request: CancelJobsRequest, now: float) -> CancelJobsResponse:
        if request.selector.kind == "all":
            ids = sorted(i for i, j in self.book.jobs.live.items()  # sealed: completed
                         if j.state in ("WAITING", "RUNNING"))
            missing: list[JobId] = []
        else:
            ids, missing = resolve_ids(request.selector, self.book.jobs)
        canceled = []
        finished = []
        for job_id in ids:
            job = self.book.jobs.live.get(job_id)  # a sealed one has nothing to cancel
            n, done = self.book.cancel(job, request.reason, now) if job else (0, 0)
            if n:
                canceled.append((job_id, n, done))
                logger.info("Job %d canceled (%d tasks canceled)", job_id, n)
            else:
                finished.append(job_id)
        return CancelJobsResponse(tuple(canceled), tuple(finished), tuple(missing))

    def progress(self, request: JobProgressRequest, now: float) -> JobProgressResponse:
        present, _missing = resolve_ids(request.selector, self.book.jobs)
        return JobProgressResponse(tuple(self._peek(i).summary() for i in present))

    def wait(self, identity: bytes, request: WaitJobsRequest) -> None:
        present, missing = resolve_ids(request.selector, self.book.jobs)
        waiter = Waiter(identity, tuple(present), tuple(missing), request.without_close,
                        request.notifications)
        self._recheck(waiter, waiter.job_ids)
        if waiter.pending:
            self.waiters.append(waiter)
        else:
            self._answer(waiter)

    def _recheck(self, waiter: Waiter, job_ids: Iterable[JobId]) -> None:
        """Update which of these jobs the waiter still waits for: a job is done once it is
        gone, or has no unfinished task and is closed (or the waiter ignores closing); a
        submit into an open job makes it pending again."""
        for job_id in job_ids:
            job = self.book.jobs.peek(job_id)
            if job is None or (job.terminated and (not job.is_open or waiter.without_close)):
                waiter.pending.discard(job_id)
            else:
                waiter.pending.add(job_id)

    def _answer(self, waiter: Waiter) -> None:
        jobs = tuple(j.summary() for j in map(self.book.jobs.peek, waiter.job_ids) if j)
        self.reply(waiter.identity, WaitJobsResponse(jobs, waiter.missing))

    def notify(self, job_id: JobId, task_id: TaskId, worker_id: WorkerId, message: bytes) -> None:
        """A task's notification, to every client waiting on its job that asked for them."""
        for waiter in self.waiters:
            if waiter.notifications and job_id in waiter.jobs:
                self.reply(waiter.identity, Notification(job_id, task_id, worker_id, message))

    def answer_waiters(self) -> None:
        """Answer the waiters whose jobs are done; only those on changed jobs can be, and
        only the changed jobs are looked at again."""
        changed = self.changed.take()
        if not changed:
            return
        still = []
        for waiter in self.waiters:
            touched = changed & waiter.jobs  # iterates the smaller of the two
            self._recheck(waiter, touched)
            if touched and not waiter.pending:
                self._answer(waiter)
            else:
                still.append(waiter)
        self.waiters = still

    def task_list(self, request: TaskListRequest, now: float) -> TaskListResponse:
        present, missing = resolve_ids(request.jobs, self.book.jobs)
        states = parse_states(request.states) if request.states else None
        out = []
        for job_id in present:
            job = self._view(job_id)
            shown = []
            for index, submit in enumerate(job.submits):
                table = submit.table
                rows = (np.arange(len(table)) if not request.tasks
                        else np.unique(match_ranges(table.ids, request.tasks)[0]))
                if states is not None:
                    rows = np.intersect1d(rows, table.rows_in_states(states))
                shown.extend(views.task_views(self.book, job, submit, rows.tolist(), index))
            shown.sort(key=lambda v: v.id)
            out.append((job_id, tuple(shown)))
        return TaskListResponse(tuple(out), tuple(missing))

    def task_info(self, request: TaskInfoRequest, now: float) -> TaskInfoResponse:
        present, _missing = resolve_ids(request.job, self.book.jobs)
        if not present:
            return TaskInfoResponse(None, (), ())
        job = self._view(present[0])
        found = located_tasks(job, request.tasks)
        shown = [views.task_view(self.book, job, job.submits[index], row, index)
                 for index, row in zip(found.submit.tolist(), found.row.tolist(), strict=True)]
        missing = missing_in_ranges(request.tasks, found.ids, found.which, MAX_MISSING_IDS)
        submits = tuple(views.submit_view(s) for s in job.submits)
        return TaskInfoResponse(job.id, tuple(shown), submits, tuple(missing))

    def worker_list(self, request: WorkerListRequest, now: float) -> WorkerListResponse:
        records = [
            r for _, r in sorted(self.workers.workers.items())
            if (r.online and request.include_online) or (not r.online and request.include_offline)
        ]
        return WorkerListResponse(tuple(self._worker_view(r.id) for r in records))

    def worker_info(self, request: WorkerInfoRequest, now: float) -> WorkerListResponse:
        present, missing = resolve_ids(request.selector, self.workers.workers)
        return WorkerListResponse(tuple(self._worker_view(i) for i in present), tuple(missing))

    def _worker_view(self, wid: WorkerId):  # noqa: ANN202 - WorkerView
        record = self.workers.workers[wid]
        load = self.control.worker_load(wid) if record.online else (0, 0, "")
        return self.workers.view(record, *load)

    def stop_workers(self, request: StopWorkersRequest, now: float) -> StopWorkersResponse:
        if request.selector.kind == "all":
            present = [w for w, r in sorted(self.workers.workers.items()) if r.online]
            missing: list[WorkerId] = []
        else:
            present, missing = resolve_ids(request.selector, self.workers.workers)
        results = []
        for wid in present:
            record = self.workers.workers[wid]
            if not record.online:
                results.append((wid, "already-stopped"))
                continue
            self.control.stop_worker(wid, now)
            results.append((wid, "stopped"))
        results.extend((wid, "not-found") for wid in missing)
        return StopWorkersResponse(tuple(results))
