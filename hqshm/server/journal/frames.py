"""The journal file's framing: a header, then records that each carry their own checksum.

A record is ``SYNC | length (u32 le) | crc32 (u32 le) | payload``. The sync word lets a reader
find the next good record after a damaged one, so a block of garbage in the middle costs only
the events inside it; a bad tail (a crash mid-write, a zeroed or truncated end) is cut off.
Pure: bytes in, payloads and findings out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from hqshm.cluster.frozen import frozen

HEADER = b"hqshm journal 1\n"
SYNC = b"\x8eJr\x01"
_PREFIX = struct.Struct("<4sII")
PREFIX_SIZE = _PREFIX.size
# One record holds at most one event or one job's snapshot; a bigger length is damage.
MAX_RECORD = 256 * 1024 * 1024
# The journal's codec (records.JOURNAL) and the tag of ServerStarted, every journal's first
# record: ``first_record`` and `hq server start` read a journal's server UID with them alone.
PROTOCOL = 1
SERVER_STARTED_TAG = 1


class NotAJournal(ValueError):
    """The file has data but not our header: refuse rather than overwrite someone's file."""


def frame(payload: bytes) -> bytes:
    return _PREFIX.pack(SYNC, len(payload), zlib.crc32(payload)) + payload


def frame_all(payloads: Iterable[bytes]) -> bytes:
    return b"".join(frame(p) for p in payloads)


@frozen
class Damage:
    """Bytes that hold no valid record: skipped in the middle, or cut off at the end."""

    offset: int
    length: int
    at_end: bool


@frozen
class Scan:
    payloads: list[bytes]
    offsets: list[int]  # where each payload's record starts
    damage: list[Damage]
    valid_end: int  # end of the last good record: the file is cut here if the tail is bad


def check_header(data: bytes) -> None:
    """Raise ``NotAJournal`` unless ``data`` starts as a journal (or is a torn header)."""
    head = data[: len(HEADER)]
    if head != HEADER[: len(head)] and any(head):
        raise NotAJournal("it does not start with the hqshm journal header")


def _record_at(data: bytes, pos: int) -> int | None:
    """End of the valid record at ``pos``, or None."""
    if len(data) - pos < PREFIX_SIZE:
        return None
    sync, length, crc = _PREFIX.unpack_from(data, pos)
    end = pos + PREFIX_SIZE + length
    if sync != SYNC or length > MAX_RECORD or end > len(data):
        return None
    if zlib.crc32(memoryview(data)[pos + PREFIX_SIZE : end]) != crc:
        return None
    return int(end)


def _next_record(data: bytes, pos: int) -> int | None:
    """Start of the next valid record after ``pos``."""
    while True:
        pos = data.find(SYNC, pos + 1)
        if pos < 0:
            return None
        if _record_at(data, pos) is not None:
            return pos


def scan(data: bytes) -> Scan:
    """Every good record of a whole journal file, and where it is damaged."""
    check_header(data)
    payloads: list[bytes] = []
    offsets: list[int] = []
    damage: list[Damage] = []
    if len(data) < len(HEADER):
        return Scan(payloads, offsets, damage, 0)
    pos = valid_end = len(HEADER)
    while pos < len(data):
        end = _record_at(data, pos)
        if end is None:
            resume = _next_record(data, pos)
            if resume is None:
                damage.append(Damage(pos, len(data) - pos, True))
                break
            damage.append(Damage(pos, resume - pos, False))
            pos = resume
            continue
        payloads.append(data[pos + PREFIX_SIZE : end])
        offsets.append(pos)
        pos = valid_end = end
    return Scan(payloads, offsets, damage, valid_end)


def first_record(data: bytes) -> bytes | None:
    """The payload of the record right after the header, if it is there whole and valid."""
    if data[: len(HEADER)] != HEADER:
        return None
    end = _record_at(data, len(HEADER))
    return None if end is None else data[len(HEADER) + PREFIX_SIZE : end]


def records_from(data: bytes) -> tuple[list[bytes], int]:
    """Whole records at the start of ``data`` (a slice of a journal taken at a record
    boundary): their payloads, and how many bytes they and any damage between them took."""
    payloads: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = _record_at(data, pos)
        if end is None:
            if len(data) - pos >= PREFIX_SIZE and data[pos : pos + 4] == SYNC:
                length = _PREFIX.unpack_from(data, pos)[1]
                if pos + PREFIX_SIZE + length > len(data) and length <= MAX_RECORD:
                    break  # cut by the end of the slice: read it next time
            resume = _next_record(data, pos)
            if resume is None:
                break
            pos = resume
            continue
        payloads.append(data[pos + PREFIX_SIZE : end])
        pos = end
    return payloads, pos


def record_size(prefix: bytes) -> int | None:
    """Size of the record a prefix announces, or None if it is not a record's prefix."""
    if len(prefix) < PREFIX_SIZE or prefix[:4] != SYNC:
        return None
    length = _PREFIX.unpack_from(prefix, 0)[1]
    return PREFIX_SIZE + length if length <= MAX_RECORD else None
