"""Bounded single-producer/single-consumer rings in POSIX shared memory.

A node owns two rings per executor: a submission ring (node -> executor: "run this task on these
CPUs") and a completion ring (executor -> node: "started with pid P", "ended with status S").

Layout of the segment: a 64-byte header (magic, version, geometry), then ``capacity`` fixed-size
records (``record_dtype()``), then ``capacity`` payload areas of ``payload_size`` bytes, one per
slot. Records have a fixed size so that a slot is written and read in place, with no allocation
and no framing; only the variable payload (msgpack bytes of argv/env/paths, or an error text) is
opaque. A payload larger than its area is spilled to a file whose path goes in the area instead.

Invariant (why no shared head/tail words exist): each ring has exactly one producer process and
one consumer process at a time. Two POSIX semaphores carry the counts: ``items`` (posted by the
producer after it wrote a slot) and ``free`` (posted by the consumer after it copied a slot out).
The producer writes slot ``i`` only after taking a ``free`` count, the consumer reads slot ``i``
only after taking an ``items`` count, and sem_post/sem_wait are full memory barriers; so each side
keeps its own local index modulo capacity, the two indices never meet on an unpublished slot, and
the semaphores are the only shared synchronisation.

Because a side that sleeps in sem_wait needs 20-30 us to wake (one way, on a 2-core VM), a
waiting ``push``/``pop`` first polls the semaphore's value for ``spin`` seconds (default 50 us)
and only then sleeps; when the peer answers within that time a one-way hand-off costs about
2.5 us there, nearly all of it the Python work of push and pop.

Processes: rings are created by the node *before* it forks an executor, and the intended use is
that the child keeps using the inherited ``Ring`` objects (no name lookups, no second mapping).
Each side must then be played by one process only: the child inherits the parent's local index,
which is right when the parent never plays the child's side. ``close()`` unlinks only in the
process that created the ring, so a child's ``close()`` merely detaches.

The node cannot block on a semaphore (it polls ZeroMQ sockets), so a producer rings a *doorbell*
after it pushed: one byte written to a non-blocking pipe whose read end sits in the node's poller
(``ring_doorbell``; executors ring only when the node must hear at once). The consumer then calls
``drain_doorbell`` and pops with ``timeout=0`` until empty, in that order, so a push racing with
the drain always leaves a byte behind and no wake-up is lost.

Memory: a segment is sparse, and a page first written when /dev/shm is full kills the writer
with SIGBUS. ``create`` reserves the pages every record touches (the header, the records, each
slot's first payload page), so a ring that cannot have them is an error when it is made; a
payload longer than a page reserves the rest of its slot when it first needs it, and a full
/dev/shm is then ``RingFull`` for that push, as it is for a spill file.

One module of about 650 lines because the layout, the two semaphores, the spill files and the
names' lifetime form one protocol whose invariant (above) no part keeps alone.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import itertools
import logging
import mmap
import os
import struct
import time
import weakref
from collections.abc import Sequence
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, NamedTuple

import posix_ipc

from hqshm.cluster.frozen import frozen
from hqshm.errors import HqError
from hqshm.node.cpumask import bits_of

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

MAX_CPUS = 1024
DEFAULT_SPIN = 50e-6
DEFAULT_SPILL_DIR = "/dev/shm"

# One record, field by field (little-endian, offsets in bytes):
#   key          u8   @0    task key: job_id << 32 | task_id
#   instance     u4   @8    task instance id (bumped on every re-run)
#   kind         u1   @12   RecordKind
#   flags        u1   @13   caller's flags; bit 0x80 (RecordFlag.SPILLED) belongs to the ring
#   numa         i2   @14   NUMA node whose memory policy applies, -1 for none
#   pid          i4   @16   pid of the started program (STARTED), else 0
#   status       i4   @20   how the task ended (ENDED)
#   t_start      f8   @24   wall-clock start time (time.time()), 0.0 if unknown
#   t_end        f8   @32   wall-clock end time, 0.0 if unknown
#   cpumask      16 x u8 @40  CPU bitmap: CPU c is bit c % 64 of word c // 64 (1024 CPUs)
#   payload_len  u4   @168  bytes used in this slot's payload area
#   (padding to 192 bytes, a multiple of the 64-byte cache line, so slots never share a line)
RECORD_SIZE = 192


def record_dtype() -> np.dtype:
    """The slot layout above as a numpy dtype, for inspecting a ring (``Ring.records``) and
    for the tests; numpy is imported here only, not by nodes and executors at start-up."""
    import numpy as np

    return np.dtype(
        {
            "names": [
                "key",
                "instance",
                "kind",
                "flags",
                "numa",
                "pid",
                "status",
                "t_start",
                "t_end",
                "cpumask",
                "payload_len",
            ],
            "formats": [
                "<u8",
                "<u4",
                "u1",
                "u1",
                "<i2",
                "<i4",
                "<i4",
                "<f8",
                "<f8",
                ("<u8", (16,)),
                "<u4",
            ],
            "offsets": [0, 8, 12, 13, 14, 16, 20, 24, 32, 40, 168],
            "itemsize": RECORD_SIZE,
        })


# The same bytes as record_dtype(), packed in one call: numpy field-by-field access costs
# several microseconds a record, struct.pack_into well under one. The mask is 128 little-endian bytes,
# which is exactly the 16 little-endian u8 words of the dtype.
_RECORD = struct.Struct("<QIBBhiidd128sI")
_HEADER = struct.Struct("<8sIIII")
_MAGIC = b"HQSHMRNG"
_VERSION = 1
HEADER_SIZE = 64
_PAGE = mmap.PAGESIZE
# Linux 5.14: allocate a range's pages now, failing (EFAULT) where a write would take SIGBUS.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
_MASK_BYTES = MAX_CPUS // 8
_NO_CPUS = bytes(_MASK_BYTES)
_MANY_CPUS = 32  # above this, a byte table decodes a mask faster than a Python bit loop
_BITS_OF_BYTE = [tuple(bit for bit in range(8) if byte >> bit & 1) for byte in range(256)]


class RecordKind(IntEnum):
    RUN = 1  # node -> executor: run the task in the payload on these CPUs
    STARTED = 2  # executor -> node: the program runs as ``pid``
    ENDED = 3  # executor -> node: the task ended with ``status``
    STOP = 5  # node -> executor: exit after this record
    DEFINE = 6  # node -> executor: the program body of a group, sent once per executor
    FORGET = 7  # node -> executor: drop these groups (payload: gids, little-endian u64)


class RecordFlag(IntFlag):
    # A RUN record to start only if the task before it on the executor ended well (a chain's
    # next task behind its prerequisite); else it is skipped, as a canceled one is.
    AFTER_OK = 0x01
    # A RUN record whose start the node waits to hear of: the executor rings the node's
    # doorbell once it started the task (or ended it unstarted).
    TELL_START = 0x02
    SPILLED = 0x80  # the payload area holds the path of a file with the real payload


_KINDS: dict[int, RecordKind] = {int(k): k for k in RecordKind}
_SPILLED = int(RecordFlag.SPILLED)  # IntFlag arithmetic costs 0.5 us; plain ints on the hot path


class RingError(HqError):
    """The shared segment does not hold what this version writes: a stale or foreign ring."""


class RingFull(RingError):
    """No room in /dev/shm for a record's payload (its slot's pages, or its spill file): the
    record was not pushed. Says what to do about it."""


class Record(NamedTuple):
    """One record copied out of its slot.

    A NamedTuple rather than a frozen dataclass: it is built once per record on the hot path and
    costs a third as much.
    """

    key: int
    instance: int
    kind: RecordKind
    flags: int
    numa: int
    pid: int
    status: int
    t_start: float
    t_end: float
    cpus: list[int]
    payload: bytes


@frozen
class RingNames:
    """Everything another process needs to attach to a ring (plain strings: msgpack-able)."""

    shm: str
    items: str
    free: str
    spill_dir: str = DEFAULT_SPILL_DIR


_serial = itertools.count()


def open_doorbell() -> tuple[int, int]:
    """A (read_fd, write_fd) pipe, both ends non-blocking and close-on-exec."""
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


def ring_doorbell(write_fd: int) -> None:
    """Producer side, after a push: one byte, never blocking (a full pipe already rings)."""
    with contextlib.suppress(BlockingIOError):
        os.write(write_fd, b"\x01")


def drain_doorbell(read_fd: int) -> None:
    """Empty the doorbell pipe; call before popping with ``timeout=0`` until empty."""
    with contextlib.suppress(BlockingIOError):
        while len(os.read(read_fd, 4096)) == 4096:
            pass


class Ring:
    """One bounded SPSC ring of fixed-size records; see the module docstring for the rules."""

    names: RingNames
    spin: float

    def __init__(
        self,
        names: RingNames,
        mm: mmap.mmap,
        items: posix_ipc.Semaphore,
        free: posix_ipc.Semaphore,
        owner: bool,
        spin: float,
    ) -> None:
        """Private: use ``create``."""
        magic, version, capacity, payload_size, record_size = _HEADER.unpack_from(mm, 0)
        if magic != _MAGIC or version != _VERSION or record_size != RECORD_SIZE:
            raise RingError(f"{names.shm}: not a version {_VERSION} ring")
        if len(mm) < _segment_size(capacity, payload_size):
            raise RingError(f"{names.shm}: segment shorter than its header says")
        self.names = names
        self.spin = spin
        self._mm: mmap.mmap | None = mm
        self._items = items
        self._free = free
        self._capacity = capacity
        self._payload_size = payload_size
        records_end = HEADER_SIZE + capacity * RECORD_SIZE
        self._slots = [
            (HEADER_SIZE + i * RECORD_SIZE, records_end + i * payload_size)
            for i in range(capacity)
        ]
        self._head = 0  # next slot to pop (consumer side only)
        self._tail = 0  # next slot to push (producer side only)
        # Producer side: payload bytes a slot surely has (``_reserve``), and the slots whose
        # whole payload area is allocated since (``_make_room``).
        self._sure = min(_PAGE, payload_size)
        self._roomy = bytearray(capacity)
        self._spills = itertools.count()
        self._unlink = weakref.finalize(self, _unlink_ring, names, os.getpid()) if owner else None

    @classmethod
    def create(
        cls,
        prefix: str,
        capacity: int = 8,
        payload_size: int = 16384,
        *,
        spill_dir: str = DEFAULT_SPILL_DIR,
        spin: float = DEFAULT_SPIN,
    ) -> Ring:
        """Create a ring owned by this process; names carry our pid and a counter."""
        if "/" in prefix or not prefix:
            raise ValueError(f"ring prefix must be a non-empty name without '/': {prefix!r}")
        if capacity < 1:
            raise ValueError(f"ring capacity must be positive: {capacity}")
        spill_dir = os.path.abspath(spill_dir)
        longest_spill = len(spill_dir) + len(prefix) + 64
        if payload_size < longest_spill:
            raise ValueError(f"payload_size {payload_size} cannot hold a spill path")
        size = _segment_size(capacity, payload_size)
        for _ in range(100):
            base = f"/{prefix}.{os.getpid()}.{next(_serial)}"
            names = RingNames(base, base + ".items", base + ".free", spill_dir)
            made_shm: str | None = None
            made_sems: list[str] = []
            mm = items = free = None
            try:
                shm = posix_ipc.SharedMemory(names.shm, posix_ipc.O_CREX, 0o600, size)
                made_shm = names.shm
                try:
                    _reserve(shm.fd, capacity, payload_size, names.shm)
                    mm = mmap.mmap(shm.fd, size)
                finally:
                    shm.close_fd()
                _HEADER.pack_into(
                    mm, 0, _MAGIC, _VERSION, capacity, payload_size, RECORD_SIZE
                )
                items = posix_ipc.Semaphore(names.items, posix_ipc.O_CREX, 0o600, 0)
                made_sems.append(names.items)
                free = posix_ipc.Semaphore(names.free, posix_ipc.O_CREX, 0o600, capacity)
                made_sems.append(names.free)
                ring = cls(names, mm, items, free, owner=True, spin=spin)
            except BaseException as e:
                for sem in (items, free):
                    if sem is not None:
                        sem.close()
                if mm is not None:
                    mm.close()
                # Only what we made: a taken name may belong to another live ring.
                _unlink_names(made_shm, made_sems)
                if isinstance(e, posix_ipc.ExistentialError):
                    continue  # a name left by a dead process that had our pid
                raise
            break
        else:
            raise RingError(f"no free ring name for prefix {prefix!r}")
        logger.debug("created ring %s (capacity %d, payload %d)", names.shm, capacity, payload_size)
        return ring

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def payload_size(self) -> int:
        return self._payload_size

    def records(self) -> np.ndarray:
        """A numpy view of the slots in place (for inspection; drop it before ``close``)."""
        assert self._mm is not None, "ring is closed"
        import numpy as np

        return np.ndarray((self._capacity,), record_dtype(), self._mm, HEADER_SIZE)

    def unlink_names(self) -> None:
        """Remove the segment's and semaphores' names now; the ring keeps working.

        Processes that mapped the segment and opened the semaphores (the owner and the children
        it forked) keep them until they exit, so once every user holds the ring its names are
        only a leak waiting for a SIGKILL. Spill files still go away on ``close``.
        """
        if self._unlink is not None:
            _unlink_names(self.names.shm, (self.names.items, self.names.free))

    def remove_spills(self) -> None:
        """Remove this ring's spill files, in whichever process: an executor whose node died
        (SIGKILL) cleans up what the owner's ``close`` no longer will."""
        _remove_spills(self.names)

    def pending(self) -> int:
        """Records published and not yet popped (exact for the consumer, a hint otherwise)."""
        return int(self._items.value)

    def room(self) -> int:
        """Records a push can add now without waiting (exact for the producer, at least
        this many: the consumer only frees slots)."""
        return int(self._free.value)

    def push(
        self,
        *,
        key: int,
        instance: int,
        kind: int,
        cpus: Sequence[int] = (),
        numa: int = -1,
        pid: int = 0,
        status: int = 0,
        t_start: float = 0.0,
        t_end: float = 0.0,
        flags: int = 0,
        payload: bytes = b"",
        timeout: float | None = None,
    ) -> bool:
        """Write one record; False if the ring stayed full for ``timeout`` seconds."""
        if kind not in _KINDS:
            raise ValueError(f"unknown record kind {kind}")
        if flags & _SPILLED:
            raise ValueError("record flag 0x80 is reserved for the ring")
        mask = 0
        for cpu in cpus:
            mask |= 1 << int(cpu)  # int(): a numpy integer would overflow the shift
        if mask >> MAX_CPUS:
            raise ValueError(f"CPU id over {MAX_CPUS - 1} in {list(cpus)}")
        maskbytes = mask.to_bytes(_MASK_BYTES, "little") if mask else _NO_CPUS
        mm = self._mm
        assert mm is not None, "ring is closed"
        free = self._free
        if free.value:
            free.acquire(0)  # we are free's only taker, so this cannot fail
        elif (timeout is not None and timeout <= 0) or not self._wait(free, timeout):
            return False
        record_at, payload_at = self._slots[self._tail]
        try:
            n = len(payload)
            if n > self._payload_size:
                payload = self._spill(payload)
                n = len(payload)
                flags |= _SPILLED
            if n:
                if n > self._sure and not self._roomy[self._tail]:
                    self._make_room(mm, payload_at)
                mm[payload_at : payload_at + n] = payload
            _RECORD.pack_into(
                mm,
                record_at,
                key,
                instance,
                kind,
                flags,
                numa,
                pid,
                status,
                t_start,
                t_end,
                maskbytes,
                n,
            )
        except BaseException:
            free.release()  # the slot was never published: give it back
            raise
        self._tail = (self._tail + 1) % self._capacity
        self._items.release()
        return True

    def pop(self, timeout: float | None = None) -> Record | None:
        """Copy the oldest record out; None if the ring stayed empty for ``timeout`` seconds."""
        items = self._items
        if items.value:
            items.acquire(0)  # we are items' only taker, so this cannot fail
        elif (timeout is not None and timeout <= 0) or not self._wait(items, timeout):
            return None
        return self._take()

    def pop_ready(self) -> list[Record]:
        """Copy out every record published so far, oldest first, without waiting (the
        consumer's batch: one look at the count instead of a pop that finds none)."""
        items = self._items
        ready = items.value
        if not ready:
            return []
        take = self._take
        records = []
        for _ in range(ready):
            items.acquire(0)  # we are items' only taker, so this cannot fail
            records.append(take())
        return records

    def _take(self) -> Record:
        """Copy out the record at the head, whose ``items`` count was taken."""
        mm = self._mm
        assert mm is not None, "ring is closed"
        record_at, payload_at = self._slots[self._head]
        key, instance, kind, flags, numa, pid, status, t_start, t_end, maskbytes, n = (
            _RECORD.unpack_from(mm, record_at)
        )
        payload = mm[payload_at : payload_at + n] if n else b""
        self._head = (self._head + 1) % self._capacity
        self._free.release()
        if flags & _SPILLED:
            payload = _unspill(payload)
            flags &= ~_SPILLED
        try:
            record_kind = _KINDS[kind]
        except KeyError:
            raise RingError(f"{self.names.shm}: unknown record kind {kind}") from None
        return Record(
            key,
            instance,
            record_kind,
            flags,
            numa,
            pid,
            status,
            t_start,
            t_end,
            _decode_cpus(maskbytes) if maskbytes != _NO_CPUS else [],
            payload,
        )

    def close(self) -> None:
        """Detach; in the creating process also unlink the segment, semaphores and spill files."""
        if self._mm is None:
            return
        self._items.close()
        self._free.close()
        try:
            self._mm.close()
        except BufferError:
            # A records() view is still alive; the mapping goes when that view does.
            logger.debug("ring %s: a view outlives close()", self.names.shm)
        self._mm = None
        if self._unlink is not None:
            self._unlink()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make_room(self, mm: mmap.mmap, payload_at: int) -> None:
        """Allocate the rest of the tail slot's payload area before a payload past its first
        page is written there: ``RingFull`` when /dev/shm is full, as for a spill file,
        instead of a SIGBUS. Once a slot."""
        start = payload_at // _PAGE * _PAGE
        try:
            mm.madvise(_MADV_POPULATE_WRITE, start, payload_at + self._payload_size - start)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):  # else a kernel before 5.14
                raise RingFull(_no_room(self.names.shm, "it is full")) from None
        self._roomy[self._tail] = 1

    def _wait(self, sem: posix_ipc.Semaphore, timeout: float | None) -> bool:
        """Take one count of ``sem``: spin briefly on its value, then sleep in the kernel."""
        clock = time.perf_counter
        now = clock()
        deadline = None if timeout is None else now + timeout
        spin_end = now + self.spin
        if deadline is not None and deadline < spin_end:
            spin_end = deadline
        while now < spin_end:
            if sem.value:
                sem.acquire(0)
                return True
            now = clock()
        while True:
            try:
                sem.acquire(None if deadline is None else max(0.0, deadline - clock()))
            except posix_ipc.BusyError:
                return False
            except posix_ipc.SignalError:
                continue  # the signal's Python handler has run; go on waiting
            return True

    def _spill(self, payload: bytes) -> bytes:
        """Write an oversized payload to a file of its own; returns the path to put in the slot."""
        path = os.path.join(
            self.names.spill_dir,
            f"{self.names.shm[1:]}.spill.{os.getpid()}.{next(self._spills)}",
        )
        encoded = os.fsencode(path)
        if len(encoded) > self._payload_size:
            raise ValueError(f"spill path {path!r} does not fit a payload area")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _full_or(exc, path) from None
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException as exc:
            os.unlink(path)
            if isinstance(exc, OSError):
                raise _full_or(exc, path) from None
            raise
        finally:
            os.close(fd)
        return encoded


def _reserve(fd: int, capacity: int, payload_size: int, name: str) -> None:
    """Allocate the pages every record touches now: the header, the records and each slot's
    first payload page (a quarter of the segment: about 35 MB of /dev/shm for a node of 128
    executors, within a container's default 64 MB). A segment is sparse until written,
    and a page first written when /dev/shm is full (tasks fill it: data loaders, our results)
    kills the writer with SIGBUS, node or executor, in the middle of the run; reserved, a full
    /dev/shm is an error here, when the ring is made, with what to do about it. The rest of a
    slot is reserved when a payload first needs it (``Ring._make_room``)."""
    records_end = HEADER_SIZE + capacity * RECORD_SIZE
    try:
        os.posix_fallocate(fd, 0, records_end)
        for slot in range(capacity):
            os.posix_fallocate(fd, records_end + slot * payload_size,
                               min(_PAGE, payload_size))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # a file system that cannot reserve: pages come as they are written
        raise RingError(_no_room(name, os.strerror(exc.errno or 0))) from None


def _full_or(exc: OSError, path: str) -> OSError | RingFull:
    """A spill file's failure: RingFull when its file system is full, else as it came."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RingFull(_no_room(path, os.strerror(exc.errno)))
    return exc


def _no_room(name: str, why: str) -> str:
    return (f"cannot reserve shared memory for {name} in /dev/shm: {why}; free some of it, or "
            "give this machine (or container: its --shm-size) more")


def _segment_size(capacity: int, payload_size: int) -> int:
    return HEADER_SIZE + capacity * (RECORD_SIZE + payload_size)


def _decode_cpus(maskbytes: bytes) -> list[int]:
    mask = int.from_bytes(maskbytes, "little")
    if mask.bit_count() > _MANY_CPUS:  # a byte at a time beats a bit at a time
        cpus: list[int] = []
        for index, byte in enumerate(maskbytes):
            if byte:
                base = index * 8
                cpus.extend(base + bit for bit in _BITS_OF_BYTE[byte])
        return cpus
    return bits_of(mask)


def _unspill(path: bytes) -> bytes:
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except FileNotFoundError:
        raise RingError(f"spilled payload {os.fsdecode(path)} is gone") from None
    os.unlink(path)
    return payload


def _unlink_ring(names: RingNames, owner_pid: int) -> None:
    """Remove every name of a ring; only in its creator (a forked child inherits finalizers)."""
    if os.getpid() != owner_pid:
        return
    _unlink_names(names.shm, (names.items, names.free))
    _remove_spills(names)


def _remove_spills(names: RingNames) -> None:
    spilled = glob.escape(os.path.join(names.spill_dir, names.shm[1:] + ".spill.")) + "*"
    for path in glob.glob(spilled):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _unlink_names(shm: str | None, sems: Sequence[str]) -> None:
    """Unlink a segment and semaphores, whichever of them still exist."""
    if shm is not None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(shm)
    for sem in sems:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(sem)
