"""Function task results on the node: the executor's store and report, the loop's reading.

An executor turns a function's outcome (hqshm/node/warm.py's ``Outcome``, or a cold task's
``hq-result`` file) into a report for the server: ``(kind, size, blob)`` (``decide``):

- at most ``taskresult.INLINE_RESULT`` bytes (``KEPT_INLINE`` when another task of the job
  takes it as an argument, so that dependants on other nodes get it through the server), and
  within the job's cap (``max_result``): the blob goes inline;
- larger, within the cap: it is written to the node's result directory (on tmpfs) and only
  its size travels, with ``RESULT_HELD``: the server fetches it from here when a client asks
  (``FetchResult``, answered part by part by ``read_part``);
- above the cap: only its size and the cap travel (``RESULT_OVER_CAP``).

When the payload says ``keep``, the blob is written to the result directory in every case,
where dependants on this node map it without a copy (hqshm/taskresult.py). Kept and held
results stop short of ``RESULT_SPACE_SHARE`` of the directory's file system: a held result
that finds no room (or cannot be written) is reported as ``NOT_KEPT`` with the reason, a value
that does not pickle as ``UNPICKLABLE``; either way the task still succeeds, as it would in HQ,
which drops return values. ``release`` removes a forgotten job's files, held ones included.

A result made on another node that a task here takes as an argument comes from the server
before the task: inline in its ``ComputeTasks`` (``store_received``), or, when its node held
it, as ``StoreResult`` parts (``Receiver``), written to a temporary file in the result
directory and renamed into place (the format of ``taskresult.write_stored``) with the last
part, so the dependant maps it as if it had been made here. Every part is checked (offsets,
totals, kinds, the result space's bound, names that stay inside the directory); one that does
not fit is dropped with its partial file and logged, and the node serves on. A result that
could not be fetched comes as a marker of kind ``taskresult.UNAVAILABLE`` holding why, stored in
its place: the dependant's error names the task and the reason.

The report rides on the task's ENDED record (``RESULT_FLAG``, the payload then a msgpack array
of the error text and the report), so no other record kind or ring change is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from hqshm import taskresult
from hqshm.cluster.frozen import mutable
from hqshm.cluster.ids import TaskKey, job_of, split_key
from hqshm.cluster.protocol import (
    MAX_PART,
    RESULT_HELD,
    RESULT_OVER_CAP,
    FetchResult,
    ResultPart,
    StoreResult,
)

logger = logging.getLogger(__name__)

RESULT_FLAG = 0x01  # an ENDED record whose payload is [error, kind, size, blob]
UNPICKLABLE = 2  # report kind: the value could not be pickled; the blob is the reason (text)
NOT_KEPT = 3  # report kind: too large to go inline, and no room to keep it here (the blob says)
# Results kept on a node stop short of this share of its result file system, counting what
# tasks put there too: on /dev/shm (memory) the rest is the tasks' (an unbounded store of
# results could take the memory a task needs, or fill /dev/shm under a task that maps files
# there); on a disk (a node without /dev/shm) only a last margin is left free.
RESULT_SPACE_SHARE = 0.5
DISK_SPACE_SHARE = 0.95
_COLD_HEADER = struct.Struct("<BBQ")  # a cold task's hq-result: kind, keep, max_result

Report = tuple[int, int, bytes]  # kind, size, blob (empty: not sent)


def report(root: str, server_uid: str, job_id: int, task_id: int, kind: int, value: Any,
           keep: bool, max_result: int) -> Report | None:
    """Store the outcome if kept or held and give what goes to the server (None: nothing to
    send: a None value nobody takes)."""
    if value is None and kind == taskresult.VALUE and not keep:
        return None
    try:
        parts = taskresult.encode_parts(value)
    except taskresult.ResultError as exc:
        return UNPICKLABLE, 0, str(exc).encode("utf-8", "replace")
    return decide(root, taskresult.stored_path(root, server_uid, job_id, task_id) if root
                  else "", kind, parts, keep, max_result)


def decide(root: str, path: str, kind: int, parts: list[Any], keep: bool,
           max_result: int) -> Report:
    """The report of a pickled result (``parts``) and its storing at ``path``: inline, held
    on this node, or over the cap (the module's docstring)."""
    size = taskresult.parts_size(parts)
    cap = min(max_result, taskresult.MAX_RESULT_LIMIT)
    inline = taskresult.KEPT_INLINE if keep else taskresult.INLINE_RESULT
    held = inline < size <= cap
    if (keep or held) and root:
        why = _no_room(root, size)
        try:
            if why:
                raise OSError(why)
            taskresult.write_stored(path, kind, parts)
        except OSError as exc:  # a kept one's dependant on this node says it is missing
            if held:
                return NOT_KEPT, size, str(exc).encode("utf-8", "replace")
    if size > cap:
        return kind | RESULT_OVER_CAP, size, str(max(cap, 0)).encode()
    if held:
        if not root:
            return UNPICKLABLE, size, b"the worker has no result directory to keep it in"
        return kind | RESULT_HELD, size, b""
    return kind, size, b"".join(parts)


# What the last look at a result directory's file system allowed: (root, when, bytes still
# allowed less what this process kept since). A chain's step kept a small result each and
# looked each time; a look now serves a little while, counting what we write meanwhile.
_space: tuple[str, float, int] | None = None
SPACE_LOOK_SERVES = 0.05


def _no_room(root: str, size: int) -> str:
    """Why ``size`` more bytes may not be kept in ``root`` (empty: they may): the file
    system would be fuller than ``RESULT_SPACE_SHARE``."""
    global _space
    now = time.monotonic()
    if (_space is not None and _space[0] == root and now - _space[1] < SPACE_LOOK_SERVES
            and size <= _space[2]):
        _space = (root, _space[1], _space[2] - size)
        return ""
    _space = None
    try:
        fs = os.statvfs(root)
    except OSError as exc:
        return f"its result directory cannot be read ({exc.strerror})"
    share = RESULT_SPACE_SHARE if root.startswith("/dev/shm/") else DISK_SPACE_SHARE
    total = fs.f_blocks * fs.f_frsize
    used = (fs.f_blocks - fs.f_bavail) * fs.f_frsize
    if used + size > share * total:
        return (f"its result space {root} would be more than {share:.0%} full "
                f"({used + size} of {total} bytes); forget finished jobs to free it")
    _space = (root, now, int(share * total) - used - size)
    return ""


def cold_report(root: str, server_uid: str, job_id: int, task_id: int,
                task_dir: str | None) -> Report | None:
    """The report of a cold function task from its ``hq-result`` (None when it wrote none)."""
    if task_dir is None:
        return None
    path = os.path.join(task_dir, taskresult.RESULT_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < _COLD_HEADER.size:
        return None
    kind, keep, max_result = _COLD_HEADER.unpack_from(data, 0)
    if kind not in (taskresult.VALUE, taskresult.EXCEPTION):
        return None
    blob = memoryview(data)[_COLD_HEADER.size:]
    return decide(root, taskresult.stored_path(root, server_uid, job_id, task_id) if root
                  else "", kind, [blob], bool(keep), max_result)


def ended_payload(error: str, result: Report | None) -> tuple[int, bytes]:
    """(flags, payload) of an ENDED record."""
    text = error.encode("utf-8", "replace")
    if result is None:
        return 0, text
    return RESULT_FLAG, msgpack.packb([text, *result], use_bin_type=True)


def read_ended(flags: int, payload: bytes) -> tuple[bytes, Report | None]:
    """The error text and the report of an ENDED record (from our own executor: trusted,
    but a damaged one reads as no report)."""
    if not flags & RESULT_FLAG:
        return payload, None
    try:
        text, kind, size, blob = msgpack.unpackb(payload)
        return text, (kind, size, blob)
    except Exception:
        return b"", None


def store_received(root: str, server_uid: str, items: Sequence[tuple[int, int, bytes]]) -> None:
    """Results of tasks that ran on other nodes, sent with the tasks that take them as
    arguments (``ComputeTasks.results``): stored as if made here, before those tasks start."""
    if not root:
        return
    for key, kind, blob in items:
        path = taskresult.stored_path(root, server_uid, *split_key(TaskKey(key)))
        if os.path.exists(path):
            continue
        with contextlib.suppress(OSError):
            taskresult.write_stored(path, kind, [blob])


def release(root: str, server_uid: str, job_ids: Sequence[int]) -> None:
    """Remove the stored results of these jobs (forgotten on the server)."""
    if not root:
        return
    prefixes = tuple(f"{server_uid}.{job_id}." for job_id in job_ids)
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(prefixes):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def read_part(root: str, server_uid: str, fetch: FetchResult) -> ResultPart:
    """The server's ``FetchResult`` answered from this node's store: the bytes of the blob
    (after the file's kind byte) from ``fetch.offset``, at most ``fetch.length``."""
    job_id, task_id = split_key(fetch.key)
    if not root:
        return ResultPart(fetch.key, fetch.instance, fetch.offset, 0, b"",
                          "this worker has no result directory")
    path = taskresult.stored_path(root, server_uid, job_id, task_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return ResultPart(fetch.key, fetch.instance, fetch.offset, 0, b"",
                          f"it is not on this worker any more ({exc.strerror})")
    try:
        total = max(0, os.fstat(fd).st_size - 1)
        length = max(0, min(fetch.length, MAX_PART, total - fetch.offset))
        data = os.pread(fd, length, 1 + fetch.offset) if length else b""
    except OSError as exc:
        return ResultPart(fetch.key, fetch.instance, fetch.offset, 0, b"",
                          f"it could not be read on this worker ({exc.strerror})")
    finally:
        os.close(fd)
    return ResultPart(fetch.key, fetch.instance, fetch.offset, total, data)


MAX_PARTIALS = 8  # results received in parts at once (the server sends one at a time)


@mutable
class _Partial:
    server_uid: str
    kind: int
    total: int
    temporary: str
    fd: int  # -1: not written (already here, or no room): its parts are consumed unwritten
    received: int = 0


class Receiver:
    """Writes ``StoreResult`` parts into the result directory ``root`` (see the module's
    docstring); a part of another server's results (``server_uid``) never completes a result
    of this one."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.partials: dict[TaskKey, _Partial] = {}

    def part(self, server_uid: str, msg: StoreResult) -> None:
        job_id, task_id = split_key(msg.key)
        partial = self.partials.get(msg.key)
        if partial is not None and partial.server_uid != server_uid:
            self._drop(msg.key, "a part of a result of another server")
            partial = None
        if partial is None:
            if msg.offset != 0:
                self._refuse(msg, "it does not start a result and continues none")
                return
            partial = self._start(server_uid, msg, job_id, task_id)
            if partial is None:
                return
        elif (msg.offset != partial.received or msg.total != partial.total
              or msg.kind != partial.kind):
            self._refuse(msg, f"expected {partial.total - partial.received} more bytes at "
                              f"{partial.received} of {partial.total} of kind {partial.kind}")
            self._drop(msg.key, "")
            return
        if partial.fd >= 0:
            try:
                os.pwrite(partial.fd, msg.data, 1 + msg.offset)
            except OSError as exc:
                logger.error("Could not write the result of task %d of job %d: %s; dropped",
                             task_id, job_id, exc)
                self._drop(msg.key, "")
                return
        partial.received += len(msg.data)
        if partial.received < partial.total:
            return
        del self.partials[msg.key]
        if partial.fd < 0:
            return
        os.close(partial.fd)
        try:
            os.replace(partial.temporary, _path(self.root, server_uid, job_id, task_id))
        except OSError as exc:
            logger.error("Could not store the result of task %d of job %d: %s", task_id,
                         job_id, exc)
            with contextlib.suppress(OSError):
                os.unlink(partial.temporary)

    def _start(self, server_uid: str, msg: StoreResult, job_id: int,
               task_id: int) -> _Partial | None:
        path = _path(self.root, server_uid, job_id, task_id)
        if not path:
            self._refuse(msg, "this worker has no result directory for it")
            return None
        if len(self.partials) >= MAX_PARTIALS:
            self._drop(next(iter(self.partials)), "too many results in parts at once")
        temporary = f"{path}.{os.getpid()}.part.tmp"
        partial = _Partial(server_uid, msg.kind, msg.total, temporary, -1)
        self.partials[msg.key] = partial
        if os.path.exists(path):
            return partial  # pushed before (or made here): its parts are consumed
        why = _no_room(self.root, msg.total) if msg.kind != taskresult.UNAVAILABLE else ""
        if why:
            logger.warning("The result of task %d of job %d, made on another worker, cannot "
                           "be stored here: %s", task_id, job_id, why)
            with contextlib.suppress(OSError):
                _write_marker(path, f"it could not be stored on this worker: {why}")
            return partial
        try:
            partial.fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                                 | os.O_NOFOLLOW, 0o600)
            os.pwrite(partial.fd, bytes((msg.kind,)), 0)
        except OSError as exc:
            logger.error("Could not store the result of task %d of job %d: %s", task_id,
                         job_id, exc)
            self._drop(msg.key, "")
            return None
        return partial

    def _refuse(self, msg: StoreResult, why: str) -> None:
        job_id, task_id = split_key(msg.key)
        logger.error("Dropped a part of the result of task %d of job %d from the server "
                     "(%d bytes at %d of %d, kind %d): %s", task_id, job_id, len(msg.data),
                     msg.offset, msg.total, msg.kind, why)

    def _drop(self, key: TaskKey, why: str) -> None:
        partial = self.partials.pop(key, None)
        if partial is None:
            return
        if why:
            job_id, task_id = split_key(key)
            logger.error("Dropped the partly received result of task %d of job %d: %s",
                         task_id, job_id, why)
        if partial.fd >= 0:
            os.close(partial.fd)
            with contextlib.suppress(OSError):
                os.unlink(partial.temporary)

    def release(self, job_ids: Sequence[int]) -> None:
        """Forgotten jobs: their partly received results go (``release`` removes the rest)."""
        jobs = set(job_ids)
        for key in [k for k in self.partials if job_of(k) in jobs]:
            self._drop(key, "")

    def close(self) -> None:
        for key in list(self.partials):
            self._drop(key, "")


def _path(root: str, server_uid: str, job_id: int, task_id: int) -> str:
    """Where a received result goes; empty when it would not be a file of ``root`` itself (no
    directory, or a server UID that names another place)."""
    if not root or not server_uid or os.sep in server_uid or server_uid.startswith("."):
        return ""
    return taskresult.stored_path(root, server_uid, job_id, task_id)


def _write_marker(path: str, why: str) -> None:
    taskresult.write_stored(path, taskresult.UNAVAILABLE, [why.encode("utf-8", "replace")])
