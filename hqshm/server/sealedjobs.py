"""Sealed jobs kept in a few large buffers instead of small objects.

A server keeps 100,000 finished jobs for days, and `hq job forget` must give their memory back.
Small Python objects cannot promise that: the allocator returns an arena to the system only
when every object in it is gone, and a job's sealed bytes and summary were allocated among the
objects of the jobs that ran alongside it, so a forgotten job's memory stayed, and so did the
high-water mark of jobs that waited at once. Here every sealed job is a row of numpy columns
indexed by job id and its record is a slice of an anonymous memory map; both are a few large
allocations that go back to the system when they are freed or compacted.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

from hqshm.cluster.firstuse import np
from hqshm.cluster.ids import JobId
from hqshm.link.responses import JobSummary
from hqshm.model.taskstates import TaskState, job_state

Counts = tuple[int, int, int, int, int, int]
SEGMENT = 1 << 20  # bytes of records per memory map; a bigger record gets one of its own
_FIRST_ROWS = 1024
_PAGE_BITS = 8  # 256 job ids a page of the row index: 1 KiB
_PAGE_MASK = (1 << _PAGE_BITS) - 1


class SealedJob:
    """What listings read of a sealed job, without unpacking its record."""

    __slots__ = ("id", "name", "cancel_reason", "counts", "finished_at")
    is_open = False
    terminated = True
    completed = True

    def __init__(self, job_id: JobId, name: str, cancel_reason: str | None, counts: Counts,
                 finished_at: float | None) -> None:
        self.id = job_id
        self.name = name
        self.cancel_reason = cancel_reason
        self.counts = counts
        self.finished_at = finished_at

    @property
    def task_count(self) -> int:
        return sum(self.counts)

    @property
    def state(self) -> str:
        return job_state(self.counts, False)

    def summary(self) -> JobSummary:
        return JobSummary(id=self.id, name=self.name, is_open=False,
                          cancel_reason=self.cancel_reason, task_count=self.task_count,
                          counts=self.counts)


class _Segment:
    """An anonymous memory map that records are appended to; freed whole."""

    __slots__ = ("memory", "used", "live")

    def __init__(self, size: int) -> None:
        self.memory = mmap.mmap(-1, size)
        self.used = 0
        self.live = 0  # bytes of records still kept


class _RowIndex:
    """The row of each job id, in pages made where ids are. Ids are dense when the server
    made them, but a journal comes from outside and may name any id up to ``MAX_JOB_ID``:
    one array up to the largest id would let a single record ask for 16 GiB."""

    __slots__ = ("_pages",)

    def __init__(self) -> None:
        self._pages: dict[int, np.ndarray] = {}

    def get(self, job_id: int) -> int:
        page = self._pages.get(job_id >> _PAGE_BITS)
        return -1 if page is None else page.item(job_id & _PAGE_MASK)

    def set(self, job_id: int, row: int) -> None:
        page = self._pages.get(job_id >> _PAGE_BITS)
        if page is None:
            page = self._pages[job_id >> _PAGE_BITS] = np.full(1 << _PAGE_BITS, -1, np.int32)
        page[job_id & _PAGE_MASK] = row

    def after(self, after: int) -> Iterator[JobId]:
        """Ids above ``after`` that have a row, ascending."""
        start = max(after + 1, 0)
        for number in sorted(n for n in self._pages if n >= start >> _PAGE_BITS):
            base = number << _PAGE_BITS
            ids = np.flatnonzero(self._pages[number] >= 0) + base
            for job_id in ids[ids >= start].tolist():
                yield JobId(job_id)

    @classmethod
    def of(cls, ids: np.ndarray) -> _RowIndex:
        """The index of rows 0..n-1 holding these ids; pages with no id are not made."""
        index = cls()
        if not len(ids):  # np.split would give one empty part for no page
            return index
        pages = ids >> _PAGE_BITS
        order = np.argsort(pages, kind="stable")
        numbers, starts = np.unique(pages[order], return_index=True)
        for number, rows in zip(numbers.tolist(), np.split(order, starts[1:]), strict=True):
            page = index._pages[number] = np.full(1 << _PAGE_BITS, -1, np.int32)
            page[ids[rows] & _PAGE_MASK] = rows
        return index


# Each row's columns: attribute, dtype and, for a row of several values, their number.
_COLUMNS: tuple[tuple[str, str, *tuple[int, ...]], ...] = (
    ("_ids", "int64"),  # 0: a freed row
    ("_segment", "int32"),
    ("_offset", "int64"),
    ("_length", "int64"),
    ("_finished", "float64"),  # nan: None
    ("_counts", "int64", len(TaskState)),
    ("_name", "int32"),
    ("_reason", "int32"),  # -1: None
)


class SealedJobs:
    """Sealed jobs by id: ``add``, ``get`` (a ``SealedJob``), ``record``, ``pop``,
    ``settle``."""

    _ids: np.ndarray
    _segment: np.ndarray
    _offset: np.ndarray
    _length: np.ndarray
    _finished: np.ndarray
    _counts: np.ndarray
    _name: np.ndarray
    _reason: np.ndarray

    def __init__(self) -> None:
        self._row_of = _RowIndex()  # row of each job id (-1: not sealed here)
        # The columns (_COLUMNS) are made at the first add: a server that seals no job does
        # not import numpy (cluster/firstuse.py).
        self._capacity = 0  # rows the columns hold
        self._rows = 0  # rows used, freed ones included
        self._count = 0
        self._texts: list[str] = []  # names and cancel reasons, each kept once
        self._text_index: dict[str, int] = {}
        self._segments: dict[int, _Segment] = {}
        self._tail = -1  # the segment records are appended to
        self._next_segment = 0

    # --- the mapping ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __contains__(self, job_id: object) -> bool:
        return self._row(job_id) >= 0

    def __iter__(self) -> Iterator[JobId]:
        """Ids in ascending order."""
        return self._row_of.after(0)

    def get(self, job_id: JobId) -> SealedJob | None:
        row = self._row(job_id)
        if row < 0:
            return None
        finished = self._finished.item(row)
        reason = self._reason.item(row)
        return SealedJob(job_id, self._texts[self._name.item(row)],
                         None if reason < 0 else self._texts[reason],
                         tuple(self._counts[row].tolist()),
                         None if finished != finished else finished)

    def values(self, after: int = 0) -> Iterator[SealedJob]:
        """By ascending id, those above ``after``: a page of a listing reads only its rows."""
        for job_id in self._row_of.after(after):
            sealed = self.get(job_id)
            assert sealed is not None
            yield sealed

    def record(self, job_id: JobId) -> bytes | None:
        """The job's encoded snapshot record."""
        row = self._row(job_id)
        return None if row < 0 else self._record_at(row)

    def records(self) -> Iterator[bytes]:
        for job_id in self:
            record = self.record(job_id)
            assert record is not None
            yield record

    # --- changes --------------------------------------------------------------------------

    def add(self, job_id: JobId, name: str, cancel_reason: str | None, counts: Counts,
            finished_at: float | None, record: bytes) -> None:
        self.pop(job_id)
        if self._rows == self._capacity:
            self._compact_rows()
        row = self._rows
        self._rows += 1
        self._count += 1
        self._row_of.set(job_id, row)
        self._ids[row] = job_id
        self._segment[row], self._offset[row] = self._store(record)
        self._length[row] = len(record)
        self._finished[row] = np.nan if finished_at is None else finished_at
        self._counts[row] = counts
        self._name[row] = self._text(name)
        self._reason[row] = -1 if cancel_reason is None else self._text(cancel_reason)

    def pop(self, job_id: JobId) -> bytes | None:
        """Remove a job; its record, if it was here."""
        row = self._row(job_id)
        if row < 0:
            return None
        record = self._record_at(row)
        self._row_of.set(job_id, -1)
        self._ids[row] = 0
        self._count -= 1
        index = self._segment.item(row)
        segment = self._segments[index]
        segment.live -= len(record)
        if segment.live == 0 and index != self._tail:
            segment.memory.close()
            del self._segments[index]
        return record

    def settle(self) -> None:
        """After a batch of ``pop``: segments mostly forgotten move what they still hold to
        the tail and go (not in ``pop``: forgetting in order would copy each segment's last
        quarter just before it empties)."""
        for index, segment in list(self._segments.items()):
            if index != self._tail and segment.live < segment.used // 4:
                self._move_out(index)

    # --- inside ---------------------------------------------------------------------------

    def _row(self, job_id: object) -> int:
        if not isinstance(job_id, int) or job_id <= 0:
            return -1
        return self._row_of.get(job_id)

    def _record_at(self, row: int) -> bytes:
        segment = self._segments[self._segment.item(row)]
        start = self._offset.item(row)
        return segment.memory[start : start + self._length.item(row)]

    def _text(self, text: str) -> int:
        index = self._text_index.get(text)
        if index is None:
            index = self._text_index[text] = len(self._texts)
            self._texts.append(text)
        return index

    def _store(self, record: bytes) -> tuple[int, int]:
        """Append a record; (segment, offset)."""
        tail = self._segments.get(self._tail)
        if tail is None or tail.used + len(record) > len(tail.memory):
            tail = _Segment(max(SEGMENT, len(record)))
            self._tail = self._next_segment
            self._next_segment += 1
            self._segments[self._tail] = tail
        offset = tail.used
        tail.memory[offset : offset + len(record)] = record
        tail.used += len(record)
        tail.live += len(record)
        return self._tail, offset

    def _move_out(self, index: int) -> None:
        """A segment mostly forgotten: copy what it still holds to the tail, and free it."""
        rows = np.flatnonzero((self._segment[: self._rows] == index) & (self._ids[: self._rows] > 0))
        old = self._segments.pop(index)
        for row in rows.tolist():
            start = self._offset.item(row)
            self._segment[row], self._offset[row] = self._store(
                old.memory[start : start + self._length.item(row)])
        old.memory.close()

    def _compact_rows(self) -> None:
        """No free row at the end: drop freed rows, or grow (amortised O(1) a row)."""
        kept = np.flatnonzero(self._ids[: self._rows] > 0) if self._capacity else ()
        size = max(_FIRST_ROWS, 2 * len(kept))
        for name, dtype, *width in _COLUMNS:
            new = np.zeros((size, *width), dtype=dtype)
            if self._capacity:
                new[: len(kept)] = getattr(self, name)[kept]
            setattr(self, name, new)
        self._capacity = size
        self._rows = len(kept)
        self._row_of = _RowIndex.of(self._ids[: self._rows])
