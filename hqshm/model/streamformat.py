"""Output streaming (`hq submit --stream DIR`, spec/jobs.md §9): the file format, its writer and
its reader.

Every node writes one file per stream directory (and server instance), named
``<12 alphanumerics>.hqs``; all executors of the node append to it, so 100,000 streamed tasks
cost one file, not 200,000. The name is derived from a key the node draws once at start
(``NodeContext.stream_key``) and the server uid, so every executor of a node, respawned ones
included, agrees on it without talking to the others.

File format, version 1 (all integers little-endian)::

    header  magic  8 bytes  b"HQSHMSTR"
            version u16      1
            length  u16      length of the header body that follows (at most MAX_HEADER)
            body    worker id u32, server uid length u8, server uid (ASCII)
    record  mark    u16      0xA5C5: a misaligned or overwritten record is caught at once
            channel u8       0 = stdout, 1 = stderr
            flags   u8       0 (reserved)
            time    f64      seconds since the epoch when the executor read the bytes
            job     u32
            task    u32
            instance u32
            size    u32      at most MAX_DATA
            crc     u32      CRC-32 of the 28 record bytes before it, then of the data
            data    `size` bytes
    ...

A record with no data ends the stream of a task instance (written after the task ended,
whatever way it ended, and before the node hears of the end): a stream without one is
"opened" (the task still runs, or its node died). Records of one instance are in the order
they were read from the task's pipes.

Concurrency: the file is created whole or not at all (the header goes into a temporary file
that is then hard-linked to the final name; whoever loses the race opens the winner's file),
and every record is appended by one ``write()`` on an ``O_APPEND`` descriptor. On a local file
system (ext4, xfs, tmpfs...) Linux serialises such writes per inode, so records of several
executors never interleave. NFS does not guarantee atomic appends from several clients; each
node has its own file, so only the executors of one node, which share one client, append to a
given file. A record torn by a writer killed mid-``write()`` can only be a file's tail (its
node dies with it and a new node draws a new name); the reader reports such a tail and keeps
everything before it.

The reader side is a pure decoder (``StreamDecoder``: bytes in, records out, sizes bounded
before anything is allocated, so a hostile file cannot make it read or allocate more than
MAX_DATA at once) and an index of what a directory holds (``StreamLog``) for `hq output-log`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
import zlib
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from hqshm.errors import HqError

MAGIC = b"HQSHMSTR"
VERSION = 1
SUFFIX = ".hqs"
STDOUT = 0
STDERR = 1
CHANNELS = (STDOUT, STDERR)
MAX_HEADER = 1024
MAX_UID = 255
MAX_DATA = 1 << 20  # the writer never writes more than READ_SIZE; anything above is corrupt
READ_SIZE = 1 << 16  # one pipe's worth: what an executor reads, and writes as one record
NAME_LENGTH = 12
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_U32 = 0xFFFF_FFFF

_PREAMBLE = struct.Struct("<8sHH")
_HEADER_BODY = struct.Struct("<IB")
_RECORD = struct.Struct("<HBBdIIIII")
_RECORD_MARK = 0xA5C5
_CRC_AT = _RECORD.size - 4


class StreamError(HqError):
    """Writing a stream failed; the task fails with ``Streaming: <this text>``."""


class CorruptStream(HqError):
    """A stream file's bytes are not a valid stream: they say at which offset and why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt data at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamHeader:
    server_uid: str
    worker_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.worker_id <= _U32:
            raise ValueError(f"worker id {self.worker_id} out of range")
        if len(self.server_uid.encode("ascii")) > MAX_UID:
            raise ValueError("server uid too long")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One record: some bytes of a task instance's channel, or (no data) its end."""

    time: float
    job: int
    task: int
    instance: int
    channel: int
    data: bytes = field(repr=False)

    @property
    def is_end(self) -> bool:
        return not self.data


# --- encoding (pure) -------------------------------------------------------------------------


def encode_header(header: StreamHeader) -> bytes:
    uid = header.server_uid.encode("ascii")
    body = _HEADER_BODY.pack(header.worker_id, len(uid)) + uid
    return _PREAMBLE.pack(MAGIC, VERSION, len(body)) + body


def encode_record(
    when: float, job: int, task: int, instance: int, channel: int, data: bytes = b""
) -> bytes:
    """One whole record, ready for a single ``write()``."""
    if len(data) > MAX_DATA:
        raise ValueError(f"a record holds at most {MAX_DATA} bytes, not {len(data)}")
    head = _RECORD.pack(_RECORD_MARK, channel, 0, when, job, task, instance, len(data), 0)
    crc = zlib.crc32(data, zlib.crc32(head[:_CRC_AT]))
    return head[:_CRC_AT] + crc.to_bytes(4, "little") + data


def stream_file_name(node_key: str, server_uid: str) -> str:
    """The node's file name in every stream directory: 12 alphanumerics that every executor
    of the node derives alike, distinct per node and per server instance."""
    digest = hashlib.blake2b(f"{node_key}/{server_uid}".encode(), digest_size=16).digest()
    number = int.from_bytes(digest, "big")
    letters = []
    for _ in range(NAME_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        letters.append(_ALPHABET[digit])
    return "".join(letters) + SUFFIX


def new_node_key() -> str:
    import secrets

    return "".join(secrets.choice(_ALPHABET) for _ in range(NAME_LENGTH))


# --- decoding (pure) -------------------------------------------------------------------------


class StreamDecoder:
    """Bytes in, the header and then records out; never reads a size it has not bounded.

    ``next_chunk`` returns None when it needs more bytes; after the last ``feed``, a non-zero
    ``pending`` means the file ends inside a record (a torn tail)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._offset = 0  # file offset of _buffer[0]
        self.header: StreamHeader | None = None

    def feed(self, data: bytes) -> None:
        if self._pos > (1 << 20) and self._pos * 2 > len(self._buffer):
            del self._buffer[: self._pos]
            self._offset += self._pos
            self._pos = 0
        self._buffer += data

    @property
    def pending(self) -> int:
        return len(self._buffer) - self._pos

    @property
    def offset(self) -> int:
        """File offset of the next unread byte."""
        return self._offset + self._pos

    def read_header(self) -> StreamHeader | None:
        if self.header is not None:
            return self.header
        buf, pos = self._buffer, self._pos
        if len(buf) - pos < _PREAMBLE.size:
            if bytes(buf[pos : pos + len(MAGIC)]) != MAGIC[: len(buf) - pos]:
                raise CorruptStream(self.offset, "not a stream file (bad magic)")
            return None
        magic, version, length = _PREAMBLE.unpack_from(buf, pos)
        if magic != MAGIC:
            raise CorruptStream(self.offset, "not a stream file (bad magic)")
        if version != VERSION:
            raise CorruptStream(self.offset, f"unsupported stream version {version}")
        if not _HEADER_BODY.size <= length <= MAX_HEADER:
            raise CorruptStream(self.offset, f"header length {length} out of bounds")
        if len(buf) - pos < _PREAMBLE.size + length:
            return None
        body = bytes(buf[pos + _PREAMBLE.size : pos + _PREAMBLE.size + length])
        worker_id, uid_length = _HEADER_BODY.unpack_from(body)
        if _HEADER_BODY.size + uid_length != length:
            raise CorruptStream(self.offset, "inconsistent header length")
        try:
            uid = body[_HEADER_BODY.size :].decode("ascii")
        except UnicodeDecodeError:
            raise CorruptStream(self.offset, "server uid is not ASCII") from None
        self._pos += _PREAMBLE.size + length
        self.header = StreamHeader(uid, worker_id)
        return self.header

    def next_chunk(self) -> Chunk | None:
        if self.header is None and self.read_header() is None:
            return None
        buf, pos = self._buffer, self._pos
        if len(buf) - pos < _RECORD.size:
            return None
        mark, channel, flags, when, job, task, instance, size, crc = _RECORD.unpack_from(buf, pos)
        if mark != _RECORD_MARK:
            raise CorruptStream(self.offset, "no record starts here")
        if channel not in CHANNELS or flags != 0:
            raise CorruptStream(self.offset, f"bad record (channel {channel}, flags {flags})")
        if size > MAX_DATA:
            raise CorruptStream(self.offset, f"record size {size} exceeds {MAX_DATA}")
        end = pos + _RECORD.size + size
        if len(buf) < end:
            return None
        data = bytes(buf[pos + _RECORD.size : end])
        if zlib.crc32(data, zlib.crc32(buf[pos : pos + _CRC_AT])) != crc:
            raise CorruptStream(self.offset, "checksum mismatch")
        self._pos = end
        return Chunk(when, job, task, instance, channel, data)


# --- reading files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamFile:
    """What reading one file found: its header, and why reading stopped early (None: it did
    not)."""

    path: str
    header: StreamHeader | None
    problem: str | None = None


def read_header(path: str) -> StreamHeader:
    """Only the header: enough to group a directory's files by server instance."""
    decoder = StreamDecoder()
    with open(path, "rb") as f:
        decoder.feed(f.read(_PREAMBLE.size + MAX_HEADER))
    header = decoder.read_header()
    if header is None:
        raise CorruptStream(decoder.offset, "the file ends inside its header")
    return header


def read_stream(f: BinaryIO, sink: Callable[[Chunk], object], path: str = "") -> StreamFile:
    """Every valid record of ``f`` goes to ``sink``, in file order, a megabyte at a time."""
    decoder = StreamDecoder()
    problem = None
    try:
        while data := f.read(1 << 20):
            decoder.feed(data)
            while (chunk := decoder.next_chunk()) is not None:
                sink(chunk)
        if decoder.header is None:
            problem = "the file ends inside its header"
        elif decoder.pending:
            problem = f"truncated record at byte {decoder.offset} ({decoder.pending} bytes ignored)"
    except CorruptStream as exc:
        ignored = decoder.pending + _remaining(f)
        problem = f"{exc} (the remaining {ignored} bytes are ignored)"
    return StreamFile(path, decoder.header, problem)


def _remaining(f: BinaryIO) -> int:
    try:
        here = f.tell()
        return os.fstat(f.fileno()).st_size - here
    except (OSError, AttributeError, ValueError):
        return 0


def read_stream_file(path: str, sink: Callable[[Chunk], object]) -> StreamFile:
    with open(path, "rb") as f:
        return read_stream(f, sink, path)


def list_stream_files(directory: str) -> list[str]:
    """The ``*.hqs`` files of a stream directory, by name; none if it does not exist."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        os.path.join(directory, name)
        for name in sorted(names)
        if name.endswith(SUFFIX) and os.path.isfile(os.path.join(directory, name))
    ]


# --- the index of a directory's streams (pure) -----------------------------------------------


@dataclass(eq=False)
class InstanceStream:
    instance: int
    chunks: list[Chunk] = field(default_factory=list)  # with data only, in file order
    finished: bool = False
    sizes: list[int] = field(default_factory=lambda: [0, 0])

    def data(self, channel: int) -> bytes:
        return b"".join(c.data for c in self.chunks if c.channel == channel)


@dataclass(frozen=True, slots=True)
class Summary:
    n_files: int
    n_jobs: int
    n_tasks: int
    n_streams: int  # task instance streams, superseded ones included
    n_opened: int  # tasks whose latest instance has no end record
    stdout_size: int
    stderr_size: int
    n_superseded: int
    superseded_stdout_size: int
    superseded_stderr_size: int


class StreamLog:
    """Every task instance's stream found in a set of files. Only a task's latest instance
    counts for its output; earlier (superseded) ones are kept for the summary.

    ``data_jobs`` says whose bytes to hold (None: every job's), since a summary of a log of
    many gigabytes needs only sizes, and `cat` only one job's bytes."""

    def __init__(self, data_jobs: Container[int] | None = None) -> None:
        self.data_jobs = data_jobs
        self.n_files = 0
        self.tasks: dict[int, dict[int, dict[int, InstanceStream]]] = {}  # job, task, instance

    def add(self, chunk: Chunk) -> None:
        instances = self.tasks.setdefault(chunk.job, {}).setdefault(chunk.task, {})
        stream = instances.get(chunk.instance)
        if stream is None:
            stream = instances[chunk.instance] = InstanceStream(chunk.instance)
        if chunk.is_end:
            stream.finished = True
            return
        stream.sizes[chunk.channel] += len(chunk.data)
        if self.data_jobs is None or chunk.job in self.data_jobs:
            stream.chunks.append(chunk)

    def jobs(self) -> list[int]:
        return sorted(self.tasks)

    def task_ids(self, job: int) -> list[int]:
        return sorted(self.tasks.get(job, {}))

    def latest(self, job: int, task: int) -> InstanceStream | None:
        instances = self.tasks.get(job, {}).get(task)
        if not instances:
            return None
        return instances[max(instances)]

    def summary(self) -> Summary:
        n_tasks = n_streams = n_opened = n_superseded = 0
        sizes = [0, 0]
        superseded = [0, 0]
        for job_tasks in self.tasks.values():
            for instances in job_tasks.values():
                n_tasks += 1
                n_streams += len(instances)
                latest = max(instances)
                for instance, stream in instances.items():
                    if instance == latest:
                        n_opened += not stream.finished
                        sizes[0] += stream.sizes[0]
                        sizes[1] += stream.sizes[1]
                    else:
                        n_superseded += 1
                        superseded[0] += stream.sizes[0]
                        superseded[1] += stream.sizes[1]
        return Summary(
            n_files=self.n_files,
            n_jobs=len(self.tasks),
            n_tasks=n_tasks,
            n_streams=n_streams,
            n_opened=n_opened,
            stdout_size=sizes[0],
            stderr_size=sizes[1],
            n_superseded=n_superseded,
            superseded_stdout_size=superseded[0],
            superseded_stderr_size=superseded[1],
        )

    def latest_chunks(self, job: int | None = None, channel: int | None = None) -> list[Chunk]:
        """Chunks of latest instances, by time (ties keep the order they were written in)."""
        chunks: list[Chunk] = []
        jobs = self.tasks.items() if job is None else [(job, self.tasks.get(job, {}))]
        for _, job_tasks in jobs:
            for instances in job_tasks.values():
                stream = instances[max(instances)]
                chunks.extend(c for c in stream.chunks if channel is None or c.channel == channel)
        chunks.sort(key=lambda c: c.time)
        return chunks

    def id_widths(self) -> tuple[int, int]:
        """Digits of the largest job id and of the largest task id in the log."""
        if not self.tasks:
            return 1, 1
        max_task = max(max(job_tasks) for job_tasks in self.tasks.values())
        return len(str(max(self.tasks))), len(str(max_task))


# --- writing (executors) ---------------------------------------------------------------------


class StreamFiles:
    """An executor's open stream files, one per (directory, server uid), all appended to.

    Descriptors stay open across tasks; before each task the path is checked to still name
    the same file, so a stream directory removed and made again between jobs gets a new file
    instead of the data vanishing into an unlinked one."""

    MAX_OPEN = 32

    def __init__(self, node_key: str) -> None:
        self.node_key = node_key
        self._open: dict[tuple[str, str], tuple[int, str]] = {}

    def open(self, directory: str, server_uid: str, worker_id: int) -> int:
        """The descriptor to append to; raises StreamError with the reason. ``worker_id``
        goes into the header of a file this call creates."""
        key = (directory, server_uid)
        known = self._open.get(key)
        if known is not None:
            fd, path = known
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except OSError:
                pass
            del self._open[key]
            os.close(fd)
        path = os.path.join(directory, stream_file_name(self.node_key, server_uid))
        fd = self._open_or_create(directory, path, StreamHeader(server_uid, worker_id))
        if len(self._open) >= self.MAX_OPEN:
            oldest = next(iter(self._open))
            os.close(self._open.pop(oldest)[0])
        self._open[key] = (fd, path)
        return fd

    @staticmethod
    def _open_or_create(directory: str, path: str, header: StreamHeader) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            return os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError):
            pass  # the directory is missing, or not a directory: makedirs says which
        except OSError as exc:
            raise StreamError(f"cannot open the stream file {path}: {_os_error(exc)}") from None
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StreamError(
                f"cannot create the stream directory {directory}: {_os_error(exc)}"
            ) from None
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        try:
            tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(tmp_fd, encode_header(header))
            finally:
                os.close(tmp_fd)
            with contextlib.suppress(FileExistsError):  # another executor won the race
                os.link(tmp, path)
            return os.open(path, flags)
        except OSError as exc:
            raise StreamError(f"cannot create the stream file {path}: {_os_error(exc)}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def close(self) -> None:
        for fd, _ in self._open.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open.clear()


def append(fd: int, records: bytes) -> None:
    """Whole records in one ``write()`` (see the module docstring); raises StreamError."""
    try:
        written = os.write(fd, records)
    except OSError as exc:
        raise StreamError(f"cannot write to the stream file: {_os_error(exc)}") from None
    if written != len(records):
        raise StreamError(
            f"cannot write to the stream file: short write ({written} of {len(records)} bytes)"
        )


class TaskStream:
    """The records of one task instance, appended to its node's stream file."""

    def __init__(self, fd: int, job: int, task: int, instance: int) -> None:
        self.fd = fd
        self.job = job
        self.task = task
        self.instance = instance

    def record(self, channel: int, data: bytes = b"") -> bytes:
        return encode_record(time.time(), self.job, self.task, self.instance, channel, data)

    def write(self, channel: int, data: bytes) -> None:
        append(self.fd, self.record(channel, data))

    def finish(self, tail: Iterable[tuple[int, bytes]] = ()) -> None:
        """The last data (read after the task ended) and the end record, in one write."""
        append(self.fd, b"".join([*(self.record(c, d) for c, d in tail), self.record(STDOUT)]))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _os_error(exc: OSError) -> str:
    from hqshm.errors import os_error_text

    return os_error_text(exc.errno) if exc.errno else str(exc)
