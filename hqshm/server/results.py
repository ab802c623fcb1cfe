"""Function tasks' results on the server: kept for clients until the job is forgotten.

Nodes send each result with the task's completion report (``TaskUpdates.results``, before the
ends of those tasks): inline when it is small (hqshm/node/results.py), else only its size,
with ``RESULT_HELD`` when its node keeps it for fetching (the job's cap, ``max_result_size``,
allows it) or ``RESULT_OVER_CAP`` with the cap when it does not. The store keeps the inline
blobs and what is held where, bounded in total bytes (``HQSHM_RESULT_STORE_BYTES`` at server
start, default 2 GiB; a held result costs only its entry); an inline result past the bound is
recorded as dropped, so a client gets a clear error instead of the value.
``JobsForgotten`` events release a job's results here and, through ``on_release``, on the
nodes (the store is a consumer of the event stream: the job book is not touched). Results are
not journaled: a restarted server reports tasks that ended before it started as lost.

A client asks with ``TaskResultsRequest`` and gets, per task, its ``ResultStatus`` now; it
asks again for those still pending (hqshm/api/results.py). One answer carries at most
``ANSWER_BYTES`` of blobs; the rest are LATER. A held result that is asked for is fetched
from its node (``Fetch``): ``FetchResult`` for one part of at most ``MAX_PART`` bytes, at most
``FETCH_WINDOW`` parts asked ahead of those that came, so neither a frame nor a server turn
grows with the result; the client gets LATER meanwhile. Each part is checked
against what was asked and recorded (a node's answer is hostile until checked); a part that
does not fit fails the fetch, logged as an error. Fetched blobs wait for their client in a
small cache (``FETCH_CACHE_BYTES``, with the fetches in flight) that forgets those delivered
first and never counts against the store. A fetch whose node is gone, or cannot read the
result, ends in ``NOT_FETCHED`` with the reason.

A dependency's result made on another node goes with its dependant (``attach``, the loop's
``before_compute``): inline ones inside the ``ComputeTasks``, up to ``ATTACH_BYTES`` of them
(a gather of hundreds would pass the link's frame limit); the rest of them as ``StoreResult``
parts sent before it, and so does a held one, from the fetch cache, after a fetch like a
client's. While such a fetch runs the loop holds that ``ComputeTasks`` and every later message
to the node, in order (cluster/server_loop.py), and the store releases the node when the fetch
ends. A fetch that fails still releases it: the node gets, in place of the result, why it
could not be fetched (``STORE_UNAVAILABLE``), which the dependant's error names. A result pushed to a node is not
pushed there again (the node keeps it until the job is forgotten); a held dependant whose tasks
were all canceled meanwhile is dropped (its cancel follows it and finds nothing).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

from hqshm.cluster.frozen import mutable, replace
from hqshm.cluster.ids import (
    InstanceId,
    JobId,
    TaskId,
    TaskKey,
    WorkerId,
    job_of,
    split_key,
    task_key,
)
from hqshm.cluster.protocol import (
    MAX_PART,
    MAX_PART_ERROR,
    RESULT_HELD,
    RESULT_KIND_MASK,
    RESULT_OVER_CAP,
    STORE_UNAVAILABLE,
    ComputeTasks,
    FetchResult,
    ResultItem,
    ResultPart,
    StoreResult,
)
from hqshm.link.requests import TaskResultsRequest
from hqshm.link.responses import ResultStatus, TaskResultsResponse
from hqshm.model.taskstates import TaskState
from hqshm.server.events import Event, JobsForgotten
from hqshm.server.jobbook import JobBook

logger = logging.getLogger(__name__)

DEFAULT_STORE_BYTES = 2 << 30
STORE_VARIABLE = "HQSHM_RESULT_STORE_BYTES"
ANSWER_BYTES = 64 << 20  # blobs in one answer (the client link's frame limit is 256 MiB)
ENTRY_COST = 96  # bytes counted per kept result beyond its blob (dict entry and tuple)
FETCH_CACHE_BYTES = 256 << 20  # fetched blobs waiting for their client, and fetches in flight
FETCH_WINDOW = 2  # parts of one fetch asked ahead (the node reads one while the server decodes)
# Inline results that ride in one ComputeTasks; the rest go before it as StoreResult parts. A
# gather task of hundreds of kept results (up to KEPT_INLINE each) made on other nodes would
# otherwise make a frame past the node link's limit (MAX_FRAME), which ends the connection.
ATTACH_BYTES = 32 << 20

_KIND_STATUS = {0: ResultStatus.VALUE, 1: ResultStatus.EXCEPTION, 2: ResultStatus.UNPICKLABLE,
                3: ResultStatus.NOT_KEPT}
# (kind, size, blob, instance, worker that made it); kind -1: dropped (the store was full)
Kept = tuple[int, int, bytes, InstanceId, WorkerId]
_DROPPED = -1


def store_limit(environ: dict[str, str] | None = None) -> int:
    """The store's bound in bytes, from the environment (a number of bytes)."""
    value = (os.environ if environ is None else environ).get(STORE_VARIABLE, "")
    if value.isdigit():
        return int(value)
    if value:
        logger.warning("Ignoring %s=%r: not a number of bytes", STORE_VARIABLE, value)
    return DEFAULT_STORE_BYTES


@mutable
class Fetch:
    """A held result on its way from its node: ``data`` fills in parts."""

    worker: WorkerId
    instance: InstanceId
    size: int
    data: bytearray
    received: int = 0
    asked: int = 0  # bytes asked for so far (parts come in order on the link)


class ResultStore:
    """Results by job and task; ``emit`` takes the event stream (forgotten jobs)."""

    def __init__(self, book: JobBook, limit: int, started_at: float) -> None:
        self.book = book
        self.limit = limit
        self.started_at = started_at  # tasks that ended before have no result here
        self.jobs: dict[JobId, dict[TaskId, Kept]] = {}
        self.total = 0
        self.warned = False
        # Tells the nodes which jobs' results to drop (the loop's outbox, from process.py).
        self.on_release: Callable[[tuple[JobId, ...]], None] | None = None
        # Sends a node a message (FetchResult) and says whether a node is connected.
        self.send: Callable[[WorkerId, object], None] | None = None
        self.connected: Callable[[WorkerId], bool] = lambda _wid: False
        self.fetching: dict[TaskKey, Fetch] = {}
        self.fetched: OrderedDict[TaskKey, bytes] = OrderedDict()  # oldest first
        self.delivered: set[TaskKey] = set()  # fetched and handed to a client: go first
        self.not_fetched: dict[TaskKey, str] = {}  # why a fetch failed
        self.cache_bytes = 0  # of fetched and fetching
        # Held results pushed to the nodes of their dependants, and the nodes whose messages
        # wait for a fetch (``release`` tries them again: the server loop's).
        self.pushed: set[tuple[TaskKey, WorkerId]] = set()
        self.holding: set[WorkerId] = set()
        self.release: Callable[[WorkerId], None] = lambda _wid: None

    # -- in ------------------------------------------------------------------------------

    def add(self, worker: WorkerId, items: tuple[ResultItem, ...]) -> None:
        """Keep the results of tasks that this instance is running (or just finished)."""
        jobs = self.book.jobs
        for key, instance, kind, size, blob in items:
            job_id, task_id = split_key(key)
            job = jobs.view(job_id)
            found = None if job is None else job.locate(task_id)
            if found is None:
                continue
            submit, row = found
            table = submit.table
            if instance < table.instance.item(row):
                continue  # an instance that was given back meanwhile
            kept = self.jobs.setdefault(job_id, {})
            old = kept.pop(task_id, None)
            if old is not None:
                self.total -= len(old[2]) + ENTRY_COST
            cost = len(blob) + ENTRY_COST
            if self.total + cost > self.limit:
                if not self.warned:
                    logger.warning("The result store is full (%d bytes, %s); results are "
                                   "dropped until jobs are forgotten", self.limit,
                                   STORE_VARIABLE)
                    self.warned = True
                kept[task_id] = (_DROPPED, size, b"", instance, worker)
                continue
            kept[task_id] = (kind, size, blob, instance, worker)
            self.total += cost

    def emit(self, event: Event) -> None:
        if isinstance(event, JobsForgotten):
            released = tuple(job_id for job_id in event.job_ids if self._release(job_id))
            if released and self.on_release is not None:
                self.on_release(released)

    def _release(self, job_id: JobId) -> bool:
        """Drop a job's results; whether it had any (nodes may keep some then: a node keeps a
        result only when it also sends it)."""
        for table in (self.fetching, self.fetched, self.not_fetched):
            for key in [k for k in table if job_of(k) == job_id]:
                self._uncache(key)
                self.not_fetched.pop(key, None)
        if self.pushed:
            self.pushed = {p for p in self.pushed if job_of(p[0]) != job_id}
        kept = self.jobs.pop(job_id, None)
        if kept:
            self.total -= sum(len(k[2]) + ENTRY_COST for k in kept.values()
                              if k[0] != _DROPPED)
            self.warned = False
        return bool(kept)

    # -- fetching from nodes -------------------------------------------------------------

    def _uncache(self, key: TaskKey) -> None:
        fetch = self.fetching.pop(key, None)
        if fetch is not None:
            self.cache_bytes -= fetch.size
        blob = self.fetched.pop(key, None)
        if blob is not None:
            self.cache_bytes -= len(blob)
        self.delivered.discard(key)

    def _fetch(self, key: TaskKey, worker: WorkerId, instance: InstanceId, size: int) -> bool:
        """Start fetching a held result; False when the cache has no room now (ask later)."""
        for old in [k for k in self.fetched if k in self.delivered]:
            if self.cache_bytes + size <= FETCH_CACHE_BYTES:
                break
            self._uncache(old)
        if self.cache_bytes + size > FETCH_CACHE_BYTES and self.cache_bytes > 0:
            return False
        fetch = self.fetching[key] = Fetch(worker, instance, size, bytearray(size))
        self.cache_bytes += size
        for _ in range(FETCH_WINDOW):
            self._ask(key, fetch)
        return True

    def _ask(self, key: TaskKey, fetch: Fetch) -> None:
        """Ask the node for the next part not asked yet, if any."""
        if fetch.asked < fetch.size:
            assert self.send is not None
            length = min(MAX_PART, fetch.size - fetch.asked)
            self.send(fetch.worker, FetchResult(key, fetch.instance, fetch.asked, length))
            fetch.asked += length

    def _fail(self, key: TaskKey, why: str) -> None:
        self._uncache(key)
        self.not_fetched[key] = why
        self._wake()

    def _wake(self) -> None:
        """A fetch ended (or room in the cache may have come): the nodes whose messages wait
        are tried again (each holds again if its fetch still runs)."""
        if self.holding:
            holding, self.holding = self.holding, set()
            for wid in holding:
                self.release(wid)

    def part(self, worker: WorkerId, msg: ResultPart) -> None:
        """A node's answer to a FetchResult: checked against the fetch, kept, the next part
        asked for; anything that does not fit fails the fetch (logged)."""
        fetch = self.fetching.get(msg.key)
        job_id, task_id = split_key(msg.key)
        if fetch is None or fetch.worker != worker:
            logger.error("Worker %d sent part of the result of task %d of job %d, which was "
                         "not asked of it; dropped", worker, task_id, job_id)
            return
        if msg.error:
            logger.warning("Worker %d could not send the result of task %d of job %d: %s",
                           worker, task_id, job_id, msg.error)
            self._fail(msg.key, f"worker {worker}, which holds it, could not send it: "
                                f"{msg.error}")
            return
        expected = min(MAX_PART, fetch.size - fetch.received)
        if (msg.instance != fetch.instance or msg.offset != fetch.received
                or msg.total != fetch.size or len(msg.data) != expected):
            logger.error("Worker %d answered for the result of task %d of job %d with %d "
                         "bytes at %d of %d (asked %d at %d of %d); dropped", worker,
                         task_id, job_id, len(msg.data), msg.offset, msg.total, expected,
                         fetch.received, fetch.size)
            self._fail(msg.key, f"worker {worker}, which holds it, sent an answer that does "
                                "not match it (logged on the server)")
            return
        fetch.data[fetch.received:fetch.received + expected] = msg.data
        fetch.received += expected
        if fetch.received < fetch.size:
            self._ask(msg.key, fetch)
            return
        del self.fetching[msg.key]
        self.fetched[msg.key] = bytes(fetch.data)
        self._wake()

    def worker_left(self, worker: WorkerId, reason: str) -> None:
        """Fetches from a node that is gone fail (those asked later see it is gone)."""
        self.holding.discard(worker)
        if self.pushed:
            self.pushed = {p for p in self.pushed if p[1] != worker}
        for key in [k for k, f in self.fetching.items() if f.worker == worker]:
            self._fail(key, _gone(worker, reason))

    # -- to nodes ------------------------------------------------------------------------

    def attach(self, worker: WorkerId,
               message: ComputeTasks) -> tuple[Sequence[object], bool]:
        """What goes to ``worker`` in place of ``message``, and whether ``message`` waits (the
        loop holds it and what follows it). Its tasks' dependencies made on other workers (a
        task may take them as arguments: hqshm/taskresult.py) come with it: inline results in
        it, held ones as ``StoreResult`` parts before it once fetched. Costs nothing for jobs
        without results."""
        if not self.jobs:
            return (message,), False
        attached: dict[TaskKey, tuple[TaskKey, int, bytes]] = {}
        attached_bytes = 0
        held: dict[TaskKey, Kept] = {}
        parts: list[object] = []
        canceled = 0
        for key in message.keys:
            job_id, task_id = split_key(key)
            kept = self.jobs.get(job_id)
            job = self.book.jobs.view(job_id) if kept else None
            found = None if job is None else job.locate(task_id)
            if found is None:
                continue
            submit, row = found
            if submit.table.state.item(row) == TaskState.CANCELED:
                canceled += 1  # while it waited for a result
                continue
            for dep in submit.deps.get(task_id, ()):
                result = kept.get(dep)  # type: ignore[union-attr]
                if result is None or result[4] == worker:
                    continue
                dep_key = task_key(job_id, dep)
                if result[2] and result[0] in (0, 1):
                    if dep_key in attached or (dep_key, worker) in self.pushed:
                        continue
                    if attached_bytes + len(result[2]) <= ATTACH_BYTES:
                        attached[dep_key] = (dep_key, result[0], result[2])
                        attached_bytes += len(result[2])
                    else:  # beyond the message's share: stored on the node before it
                        self.pushed.add((dep_key, worker))
                        _split(dep_key, result[0], result[2], parts)
                elif result[0] > 0 and result[0] & RESULT_HELD:
                    held[dep_key] = result
                elif (dep_key, worker) not in self.pushed:
                    held[dep_key] = result  # why it is not there goes instead
        if canceled == len(message.keys):
            return (), False
        wait = False
        for dep_key, result in held.items():
            if (dep_key, worker) in self.pushed:
                continue
            if self._ready(dep_key, result):
                self._push(worker, dep_key, result, parts)
            else:
                wait = True
        if wait:
            self.holding.add(worker)
            return parts, True
        if attached:
            message = replace(message, results=tuple(attached.values()))
        parts.append(message)
        return parts, False

    def _ready(self, key: TaskKey, result: Kept) -> bool:
        """Whether a held result can go to another node now (fetched, or its fetch failed);
        else its fetch is started if it is not running (the cache may have no room yet)."""
        if not result[0] & RESULT_HELD or result[0] < 0:
            return True  # never to be had: _push says why
        return self._obtained(key, result)

    def _obtained(self, key: TaskKey, result: Kept) -> bool:
        """Whether the fetch of a held result has ended (in ``fetched``, or why not in
        ``not_fetched``); else it is started if it is not running (the cache may have no
        room yet: it is tried again when asked for again, or at the next wake)."""
        if key in self.fetched or key in self.not_fetched:
            return True
        if key in self.fetching:
            return False
        _kind, size, _blob, instance, holder = result
        if not self.connected(holder):
            self.not_fetched[key] = _gone(holder, "")
            return True
        self._fetch(key, holder, instance, size)
        return False

    def _push(self, worker: WorkerId, key: TaskKey, result: Kept, out: list[object]) -> None:
        """The parts of a fetched result for ``worker`` (or why it could not be fetched)."""
        self.pushed.add((key, worker))
        blob = self.fetched.get(key) if result[0] > 0 and result[0] & RESULT_HELD else None
        if blob is None:
            why = _unavailable(result, self.not_fetched.get(key)).encode("utf-8", "replace")
            out.append(StoreResult(key, STORE_UNAVAILABLE, 0, min(len(why), MAX_PART_ERROR),
                                   why[:MAX_PART_ERROR]))
            return
        _split(key, result[0] & RESULT_KIND_MASK, blob, out)
        self.delivered.add(key)  # the first to go when room is needed

    # -- out -----------------------------------------------------------------------------

    def handlers(self) -> dict[type, Callable[[object, float], object]]:
        return {TaskResultsRequest: self.answer}  # type: ignore[dict-item]

    def answer(self, request: TaskResultsRequest, now: float) -> TaskResultsResponse:
        job = self.book.jobs.view(request.job_id)
        if job is None:
            error = f"Job {request.job_id} not found"
            return TaskResultsResponse(tuple((t, ResultStatus.UNKNOWN, 0, b"", error)
                                             for t in request.task_ids))
        kept = self.jobs.get(request.job_id, {})
        budget = ANSWER_BYTES
        items = []
        for task_id in request.task_ids:
            item = self._status(job, kept, task_id)
            if item[1] == ResultStatus.LATER and not item[3]:
                item = self._held(request.job_id, task_id, kept[task_id], item)
            if item[3]:
                if len(item[3]) > budget and len(items) > 0:
                    item = (task_id, ResultStatus.LATER, item[2], b"", "")
                elif self.fetched:
                    key = task_key(request.job_id, task_id)
                    if key in self.fetched:
                        self.delivered.add(key)  # the first to go when room is needed
                        self._wake()  # room for a fetch that waits for it
                budget -= len(item[3])
            items.append(item)
        return TaskResultsResponse(tuple(items))

    def _status(self, job: object, kept: dict[TaskId, Kept],
                task_id: TaskId) -> tuple[int, int, int, bytes, str]:
        found = job.locate(task_id)  # type: ignore[attr-defined]
        if found is None:
            return task_id, ResultStatus.UNKNOWN, 0, b"", f"Task {task_id} not found"
        submit, row = found
        table = submit.table
        state = table.state.item(row)
        if state in (TaskState.WAITING, TaskState.RUNNING):
            return task_id, ResultStatus.PENDING, 0, b"", ""
        error = table.errors.get(row, "")
        if state in (TaskState.CANCELED, TaskState.ABORTED):
            word = "canceled" if state == TaskState.CANCELED else "aborted"
            text = f"Task {task_id} was {word}" + (f": {error}" if error else "")
            return task_id, ResultStatus.CANCELED, 0, b"", text
        result = kept.get(task_id)
        if result is None:
            if table.ended.item(row) < self.started_at:
                return task_id, ResultStatus.LOST, 0, b"", ""
            status = ResultStatus.NONE if state == TaskState.FINISHED else ResultStatus.FAILED
            return task_id, status, 0, b"", error
        kind, size, blob, _instance, _worker = result
        if kind == _DROPPED:
            return task_id, ResultStatus.DROPPED, size, b"", ""
        if kind & RESULT_HELD:
            return task_id, ResultStatus.LATER, size, b"", error  # self._held decides
        if kind & RESULT_OVER_CAP:
            return task_id, ResultStatus.TOO_LARGE, size, b"", blob.decode("ascii", "replace")
        status = _KIND_STATUS.get(kind, ResultStatus.UNPICKLABLE)
        if status in (ResultStatus.UNPICKLABLE, ResultStatus.NOT_KEPT):
            return task_id, status, size, b"", blob.decode("utf-8", "replace")
        if not blob:
            return task_id, ResultStatus.TOO_LARGE, size, b"", ""
        return task_id, status, size, blob, error

    def _held(self, job_id: JobId, task_id: TaskId, result: Kept,
              item: tuple[int, int, int, bytes, str]) -> tuple[int, int, int, bytes, str]:
        """A held result's answer: the blob once fetched, else LATER (a fetch started), or
        why it cannot be fetched."""
        key = task_key(job_id, task_id)
        if not self._obtained(key, result):
            return item
        kind, size = result[0], result[1]
        blob = self.fetched.get(key)
        if blob is not None:
            self.fetched.move_to_end(key)
            return task_id, _KIND_STATUS[kind & RESULT_KIND_MASK], size, blob, item[4]
        return task_id, ResultStatus.NOT_FETCHED, size, b"", self.not_fetched[key]


def _split(key: TaskKey, kind: int, blob: bytes, out: list[object]) -> None:
    """A result's blob as the StoreResult parts that store it on a node, in order."""
    for offset in range(0, len(blob), MAX_PART):
        out.append(StoreResult(key, kind, offset, len(blob), blob[offset:offset + MAX_PART]))


def _unavailable(result: Kept, not_fetched: str | None) -> str:
    """Why a dependency's result made on another worker cannot go to its dependant's."""
    kind, size, blob, _instance, worker = result
    if not_fetched is not None:
        return not_fetched
    if kind == _DROPPED:
        return (f"the server's result store was full ({STORE_VARIABLE}) when it came from "
                f"worker {worker}")
    if kind > 0 and kind & RESULT_OVER_CAP:
        return (f"it is larger ({size} bytes) than its job's max_result_size "
                f"({blob.decode('ascii', 'replace')} bytes), so it stays on worker {worker}, "
                "which made it")
    if kind & RESULT_KIND_MASK in (2, 3):
        return f"worker {worker}, which made it, has not got it: {blob.decode('utf-8', 'replace')}"
    return f"worker {worker}, which made it, did not send it"


def _gone(worker: WorkerId, reason: str) -> str:
    return (f"worker {worker}, which held it, is gone" + (f" ({reason})" if reason else "")
            + "; results larger than the inline threshold stay on their worker")
