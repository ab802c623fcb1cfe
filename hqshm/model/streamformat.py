"""The stream file format of output streaming (`hq submit --stream DIR`, spec/jobs.md §9).

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

The decoder (``StreamDecoder``: bytes in, records out, sizes bounded before anything is
allocated, so a hostile file cannot make it read or allocate more than MAX_DATA at once) is
here; executors write through hqshm/node/streamwriter.py and `hq output-log` reads through
hqshm/cli/streamlog.py.
"""

from __future__ import annotations

import struct
import zlib

from hqshm.cluster.digests import blake2b_128
from hqshm.cluster.frozen import field, frozen
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
HEADER_LIMIT = _PREAMBLE.size + MAX_HEADER  # bytes that always hold a whole header


class CorruptStream(HqError):
    """A stream file's bytes are not a valid stream: they say at which offset and why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt data at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


@frozen
class StreamHeader:
    server_uid: str
    worker_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.worker_id <= _U32:
            raise ValueError(f"worker id {self.worker_id} out of range")
        if len(self.server_uid.encode("ascii")) > MAX_UID:
            raise ValueError("server uid too long")


@frozen
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
    digest = blake2b_128(f"{node_key}/{server_uid}".encode())
    number = int.from_bytes(digest, "big")
    letters = []
    for _ in range(NAME_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        letters.append(_ALPHABET[digit])
    return "".join(letters) + SUFFIX


def new_node_key() -> str:
    from random import SystemRandom

    chooser = SystemRandom()
    return "".join(chooser.choice(_ALPHABET) for _ in range(NAME_LENGTH))


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
