"""The journal as a consumer of the event stream: encode each event, write, flush, compact.

Events are encoded as they come and written in one go at the end of each turn of the server's
loop (``turn_done``): one ``write`` to the OS per turn, so a killed server loses at most the
turn it was in, and a client whose request changed state is answered after its events were
written (the spec's flush "immediately" after such a request). ``fsync``, which only a power
loss needs, runs every flush period: once per request it would cap submits at a few hundred
a second.

When the file has grown to twice what a snapshot of the state took last time, it is rewritten
as a fresh snapshot, so its size follows the live state with no user action. A forked child
(``Compactor``) writes the snapshot of the state as it was at the fork while the server goes
on; the records written since are then appended to it and the new file replaces the old one.

Without ``--journal`` the server keeps no journal until a client reads one: `hq journal
replay|stream` then get the live state as a snapshot (what the spec calls reconstructing the
events from the server's state) and the events from then on, kept in memory (compacted the same
way) until no client has read for ``READER_IDLE`` seconds. A server that nobody streams spends
neither memory (about 400 bytes a finished job) nor encoding on a journal.

A failing disk does not stop the server: what could not be written stays queued (up to a bound)
and is retried on the next flush, and the error is logged once per failure streak.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from hqshm.cluster.frozen import mutable
from hqshm.server.events import Event
from hqshm.server.journal import frames
from hqshm.server.journal.records import JOURNAL, to_record

logger = logging.getLogger(__name__)

COMPACT_MIN_BYTES = 8 * 1024 * 1024  # below this a journal is never compacted
MAX_QUEUED_BYTES = 512 * 1024 * 1024  # unwritable data kept for a retry, at most
READER_IDLE = 60.0  # seconds without a read before an in-memory journal is dropped


class Journal:
    def __init__(self, path: Path | None, snapshot: Callable[[], Iterable[object]],
                 on_demand: bool = False) -> None:
        """``path`` None keeps it in memory (``on_demand``: only while clients read it);
        ``snapshot`` gives the records of the whole live state (for compaction)."""
        self.path = path
        self.snapshot = snapshot
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.failing = False
        self.generation = 0  # compactions so far: offsets of one generation mean nothing later
        # Unbuffered: after a failed write we know exactly which bytes reached the file.
        self.file: io.FileIO | io.BytesIO = (
            io.BytesIO() if path is None else open(path, "ab", buffering=0))  # noqa: SIM115
        self.size = self.file.tell()
        if self.size == 0:  # written with the first flush, which may fail like any other
            self.pending.append(frames.HEADER)
            self.pending_bytes = len(frames.HEADER)
        self.compacted_size = self.size
        self.compactor: Compactor | None = None
        # In memory and nobody reading: nothing is kept (see the module's docstring).
        self.on_demand = on_demand and path is None
        self.dormant = self.on_demand
        self.last_read = 0.0

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "in memory"

    def emit(self, event: Event) -> None:
        if not self.dormant:
            self.append(to_record(event))

    def append(self, record: object) -> None:
        if self.dormant:
            return
        data = frames.frame(JOURNAL.encode(record))
        self.pending.append(data)
        self.pending_bytes += len(data)

    def turn_done(self) -> None:
        """After each turn of the loop: write what it changed."""
        if self.pending:
            self.flush()

    def flush(self, sync: bool = False) -> bool:
        """Write what is queued; False if the disk refused it (kept for the next try)."""
        if self.pending:
            data = memoryview(b"".join(self.pending))
            self.pending.clear()
            self.pending_bytes = 0
            try:
                while data:
                    written = self.file.write(data) or 0
                    self.size += written
                    data = data[written:]
            except OSError as exc:
                # The rest is written later right after what did reach the file, so even a
                # record cut by a full disk ends up whole.
                self.pending.append(bytes(data))
                self.pending_bytes = len(data)
                self._failed(exc)
                return False
        if sync and self.path is not None:
            try:
                os.fsync(self.file.fileno())
            except OSError as exc:
                self._failed(exc)
                return False
        if self.failing:
            logger.info("Journal %s is written again", self.where)
            self.failing = False
        return True

    def _failed(self, exc: OSError) -> None:
        if not self.failing:
            logger.error("Cannot write journal %s: %s; events are kept in memory and written "
                         "when it works again", self.where, exc.strerror or exc)
            self.failing = True
        if self.pending_bytes > MAX_QUEUED_BYTES:
            # What is dropped may end in the middle of a record: the reader skips that one.
            logger.error("Journal %s: %d bytes of events could not be written and were "
                         "dropped", self.where, self.pending_bytes)
            self.pending.clear()
            self.pending_bytes = 0

    def tick(self) -> None:
        """Every flush period: write and sync."""
        self.flush(sync=True)

    def maintain(self) -> None:
        """Every second: compact in the background once the file outgrew the state; drop an
        in-memory journal that nobody reads any more."""
        if (self.on_demand and not self.dormant
                and time.monotonic() - self.last_read > READER_IDLE):
            self._go_dormant()
            return
        if self.dormant:
            return
        if self.compactor is not None:
            if self.compactor.done():
                self._finish_background(self.compactor)
        elif self.size > max(COMPACT_MIN_BYTES, 2 * self.compacted_size):
            self.flush()
            if self.path is not None:
                tmp = self.path.with_name(self.path.name + ".compacting")
            else:
                fd, name = tempfile.mkstemp(prefix="hqshm-journal-")
                os.close(fd)
                tmp = Path(name)
            self.compactor = Compactor.start(tmp, self.size, self.snapshot)

    def _finish_background(self, compactor: Compactor) -> None:
        """The snapshot is written: append what came since, and put it in place."""
        self.compactor = None
        if not compactor.succeeded():
            logger.error("Cannot compact journal %s: the compaction process failed",
                         self.where)
            compactor.tmp.unlink(missing_ok=True)
            self.compacted_size = self.size  # try again when it has doubled once more
            return
        self.flush()
        if isinstance(self.file, io.BytesIO):
            memory = io.BytesIO(compactor.tmp.read_bytes())
            compactor.tmp.unlink(missing_ok=True)
            snapshot_size = len(memory.getbuffer())
            memory.seek(0, io.SEEK_END)
            memory.write(self.file.getbuffer()[compactor.offset :])
            self.file = memory
            self._compacted(snapshot_size)
            return
        assert self.path is not None
        try:
            with open(self.path, "rb") as old, open(compactor.tmp, "ab") as new:
                snapshot_size = new.tell()
                old.seek(compactor.offset)
                while chunk := old.read(1 << 20):
                    new.write(chunk)
                new.flush()
                os.fsync(new.fileno())
            os.replace(compactor.tmp, self.path)
        except OSError as exc:
            logger.error("Cannot compact journal %s: %s", self.path, exc.strerror or exc)
            compactor.tmp.unlink(missing_ok=True)
            self.compacted_size = self.size
            return
        self._reopen()
        self._compacted(snapshot_size)

    def compact(self, records: Iterable[object] | None = None) -> int:
        """Rewrite the file now as a snapshot (or as ``records``); returns its new size."""
        if self.compactor is not None:  # its snapshot would undo this one
            self.compactor.cancel()
            self.compactor = None
        self.flush()
        content = self.snapshot() if records is None else records
        if self.path is None:
            memory = io.BytesIO()
            write_journal(memory, content)
            self.file = memory
            return self._compacted(memory.tell())
        tmp = self.path.with_name(self.path.name + ".compacting")
        try:
            with open(tmp, "wb") as f:
                write_journal(f, content)
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.error("Cannot compact journal %s: %s", self.path, exc.strerror or exc)
            tmp.unlink(missing_ok=True)
            return self.size
        return self._compacted(self._reopen())

    def _reopen(self) -> int:
        """Append to the file now at the path (a new one replaced it); returns its size."""
        assert self.path is not None
        self.file.close()
        self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        return self.file.tell()

    def _compacted(self, snapshot_size: int) -> int:
        self.size = self.file.tell()
        self.compacted_size = snapshot_size
        self.generation += 1
        logger.info("Journal %s compacted to %d bytes", self.where, self.size)
        return self.size

    def _go_dormant(self) -> None:
        if self.compactor is not None:
            self.compactor.cancel()
            self.compactor = None
        self.dormant = True
        self.pending.clear()
        self.pending_bytes = 0
        self.file = io.BytesIO()
        self.size = self.compacted_size = 0
        self.generation += 1  # what readers hold means nothing now
        logger.debug("In-memory journal dropped: nobody reads it")

    def read(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of the journal from ``offset``, after a flush. A dormant
        in-memory journal first becomes a snapshot of the state (a new generation: callers
        check it after the read)."""
        if self.on_demand:
            self.last_read = time.monotonic()
            if self.dormant:
                self.dormant = False
                self.compact()
        self.flush()
        if isinstance(self.file, io.BytesIO):
            return self.file.getbuffer()[offset : offset + limit].tobytes()
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(limit)

    def close(self) -> None:
        if self.compactor is not None:
            self.compactor.cancel()
            self.compactor = None
        self.flush(sync=True)
        self.file.close()


def write_journal(f: BinaryIO, records: Iterable[object]) -> None:
    """A whole journal: the header, then ``records`` (bytes: one encoded already); a real
    file is synced."""
    f.write(frames.HEADER)
    for record in records:
        f.write(frames.frame(record if isinstance(record, bytes) else JOURNAL.encode(record)))
    if not isinstance(f, io.BytesIO):
        f.flush()
        os.fsync(f.fileno())


@mutable
class Compactor:
    """A forked child that writes a snapshot of the state as it was at the fork.

    The child shares nothing with the server but a copy of its memory: it writes one file and
    leaves with ``os._exit``, touching no socket and running no handler of the parent.
    """

    pid: int
    tmp: Path
    offset: int  # journal size at the fork: later records are appended to the snapshot
    status: int | None = None

    @classmethod
    def start(cls, tmp: Path, offset: int,
              snapshot: Callable[[], Iterable[object]]) -> Compactor:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, measured by the tests through its file
            code = 1
            try:
                with open(tmp, "wb") as f:
                    write_journal(f, snapshot())
                code = 0
            finally:
                os._exit(code)
        return cls(pid, tmp, offset)

    def done(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self.status = status
        return True

    def succeeded(self) -> bool:
        return self.status is not None and os.waitstatus_to_exitcode(self.status) == 0

    def cancel(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.tmp.unlink(missing_ok=True)
