"""The server's journal, assembled: restore at start, the client requests, the timers.

``hq journal replay|stream`` read the journal through the server, a chunk per request from the
offset the client got last; ``prune`` rewrites it without completed jobs and offline workers;
``flush`` writes and syncs it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from hqshm.cluster.ids import WorkerId
from hqshm.cluster.protocol import StopReason
from hqshm.link.requests import JournalFlushRequest, JournalPruneRequest, JournalReadRequest
from hqshm.link.responses import Ack, JournalPruned, JournalRecords
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import NewGroup
from hqshm.server.journal import frames
from hqshm.server.journal.records import ServerStarted, ServerStopped
from hqshm.server.journal.restore import (
    Loaded,
    Running,
    core_groups,
    online_workers,
    read_records,
    replay,
    running_tasks,
)
from hqshm.server.journal.snapshot import snapshot
from hqshm.server.journal.writer import Journal

logger = logging.getLogger(__name__)

READ_CHUNK = 4 * 1024 * 1024  # bytes of journal per answer (more if one record is bigger)


def load_journal(path: Path | None) -> Loaded | None:
    """What a journal holds, its bad tail cut off (None: no journal, or an empty one)."""
    if path is None or not path.exists() or path.stat().st_size == 0:
        return None
    logger.info("Loading journal %s", path)
    return read_records(path, repair=True, sealing=True)


class JournalService:
    def __init__(self, path: Path | None, book: JobBook, server_uid: str,
                 next_worker_id: Callable[[], int]) -> None:
        self.book = book
        self.server_uid = server_uid
        self.next_worker_id = next_worker_id
        self.journal = Journal(path, self._snapshot, on_demand=True)
        # Records of other parts of the server (automatic allocation's queues) that every
        # snapshot holds too.
        self.extra_snapshot: Callable[[], Iterable[object]] = lambda: ()

    def _snapshot(self) -> Iterator[object]:
        yield ServerStarted(self.server_uid, 0.0)
        yield from snapshot(self.book, self.next_worker_id())
        yield from self.extra_snapshot()

    # --- start and stop -------------------------------------------------------------------

    def restore(self, loaded: Loaded) -> WorkerId:
        """Replay a journal into the (fresh) books; returns the next worker id.

        Called before the journal consumes the books' events, so that only what changes
        from now on (``started``) is appended.
        """
        return replay(self.book, loaded.records)

    def started(self, now: float) -> tuple[list[NewGroup], Running]:
        """Log the start and settle what a previous server left running: those tasks run
        again, except on nodes that reconnect, which keep theirs for a while (``orphans``);
        its workers are gone. Returns the core groups of every unfinished task."""
        self.journal.append(ServerStarted(self.server_uid, now))
        running = running_tasks(self.book)
        if running.requeued:
            self.book.tasks_requeued(running.requeued, running.instances, now)
        for wid in online_workers(self.book):
            self.book.workers.left(wid, StopReason.CONNECTION_LOST, now)
        self.journal.flush(sync=True)
        return core_groups(self.book, (key for key, _, _ in running.orphans)), running

    def stopped(self, now: float) -> None:
        self.journal.append(ServerStopped(now))
        self.journal.close()

    # --- client requests ------------------------------------------------------------------

    def read(self, request: JournalReadRequest, now: float) -> JournalRecords:
        journal = self.journal
        offset, restarted = request.offset, False
        if offset < len(frames.HEADER) or request.generation != journal.generation:
            restarted = offset != 0
            offset = len(frames.HEADER)
        data = journal.read(offset, READ_CHUNK)
        size = frames.record_size(data) or 0
        if size > len(data):  # one record bigger than a chunk: read it whole
            data = journal.read(offset, size)
        payloads, used = frames.records_from(data)
        return JournalRecords(tuple(payloads), offset + used, journal.generation, restarted)

    def flush(self, request: JournalFlushRequest, now: float) -> Ack:
        self.journal.flush(sync=True)
        return Ack()

    def prune(self, request: JournalPruneRequest, now: float) -> JournalPruned:
        before = self.journal.size + self.journal.pending_bytes
        records = [ServerStarted(self.server_uid, now), *snapshot(
            self.book, self.next_worker_id(), keep_job=lambda job: not job.completed,
            keep_worker=lambda worker: worker.online), *self.extra_snapshot()]
        after = self.journal.compact(records)
        return JournalPruned(before, after)

    def handlers(self) -> dict[type, Callable[..., object]]:
        return {JournalReadRequest: self.read, JournalFlushRequest: self.flush,
                JournalPruneRequest: self.prune}
