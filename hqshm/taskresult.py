"""A function task's result: its bytes, the node-local store, and references to it.

A result is the function's return value (or the exception it raised) pickled with protocol 5
and its buffers out of band (numpy arrays, bytes-like objects that support it): the blob is a
small header, the pickle, then each buffer at a 64-byte aligned offset. ``decode`` gives the
buffers to ``pickle.loads`` as views into the blob, so a consumer that maps a stored blob
(``read_stored``: ``mmap`` of a file in the node's result directory on tmpfs, that is POSIX
shared memory) gets numpy arrays over the producer's pages: no copy on one node.

The same blob travels inline to the server with the task's completion report when it is at
most ``INLINE_RESULT`` bytes (``KEPT_INLINE`` for a result another task takes as an argument,
so that dependants on other nodes get it through the server); a larger one, up to the job's
``max_result_size`` (the cap), stays in its node's store and is fetched from there when a
client asks for it (hqshm/server/results.py); above the cap only its size travels. A node
whose task takes such a result made elsewhere gets it from the server before the task, stored
as if made there; when it could not be fetched, the node stores why in its place
(``UNAVAILABLE``), and the dependant's error says so.

Shared by the API (which pickles references into payloads), the node's executors (which store
and resolve) and cold task interpreters, so it sits at the package's root and imports nothing
of hqshm; nothing heavy at the top (cloudpickle only for values pickle cannot take).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAGIC = b"HQR1"
_HEADER = struct.Struct("<4sII")  # magic, pickle length, number of buffers
_BUFFER = struct.Struct("<QQ")  # offset (from the blob's start), length
ALIGN = 64

VALUE = 0  # the blob holds the function's return value
EXCEPTION = 1  # the blob holds the exception it raised
UNAVAILABLE = 2  # a stored file's kind only: the result could not be fetched (UTF-8: why)

INLINE_RESULT = 64 << 10  # results up to this ride on the completion report
KEPT_INLINE = 1 << 20  # ... and kept ones (dependants elsewhere get them through the server)
DEFAULT_MAX_RESULT = 16 << 20  # the cap: the largest result kept at all, unless the job says
MAX_RESULT_LIMIT = 64 << 20  # the most a job may set (one client answer's share)
PERSISTENT_TAG = "hqshm-result"  # persistent id of a task passed as another task's argument
RESULT_FILE = "hq-result"  # in a cold task's directory: its result, for the executor


class ResultError(Exception):
    """A result that cannot be made or read back."""


class ResultUnavailable(ResultError):
    """A stored marker in place of a result made on another node: it could not be fetched
    (the text says why)."""


def encode_parts(value: Any) -> list[Any]:
    """The blob of ``value`` as parts to write in order (no copy of the buffers).
    Raises ResultError when the value cannot be pickled."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:  # a lambda, a class of __main__: cloudpickle takes those
        buffers.clear()
        try:
            import cloudpickle

            data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        except Exception as exc:
            raise ResultError(f"the task's result cannot be pickled: {exc!r}") from None
    try:
        raws = [buffer.raw() for buffer in buffers]
    except BufferError:  # not contiguous: in band instead
        raws = []
        data = pickle.dumps(value, protocol=5)
    offset = _HEADER.size + _BUFFER.size * len(raws) + len(data)
    table = []
    parts: list[Any] = [b"", b"", data]
    for raw in raws:
        pad = -offset % ALIGN
        if pad:
            parts.append(bytes(pad))
            offset += pad
        table.append(_BUFFER.pack(offset, raw.nbytes))
        parts.append(raw)
        offset += raw.nbytes
    parts[0] = _HEADER.pack(MAGIC, len(data), len(raws))
    parts[1] = b"".join(table)
    return parts


def encode(value: Any) -> bytes:
    """The blob of ``value`` in one piece."""
    return b"".join(bytes(part) if isinstance(part, memoryview) else part
                    for part in encode_parts(value))


def parts_size(parts: list[Any]) -> int:
    return sum(memoryview(part).nbytes for part in parts)


def decode(blob: Any) -> Any:
    """The value of a blob (bytes, or a buffer such as an mmap: numpy arrays then view it).
    Raises ResultError for a blob that is not one."""
    view = memoryview(blob)
    if len(view) < _HEADER.size:
        raise ResultError("not a task result (too short)")
    magic, n_pickle, n_buffers = _HEADER.unpack_from(view, 0)
    start = _HEADER.size + _BUFFER.size * n_buffers
    if magic != MAGIC or start + n_pickle > len(view):
        raise ResultError("not a task result")
    buffers = []
    for i in range(n_buffers):
        offset, length = _BUFFER.unpack_from(view, _HEADER.size + _BUFFER.size * i)
        if offset < start + n_pickle or offset + length > len(view):
            raise ResultError("a task result's buffer lies outside it")
        buffers.append(view[offset:offset + length])
    try:
        return pickle.loads(view[start:start + n_pickle], buffers=buffers)
    except Exception as exc:
        raise ResultError(f"the task's result cannot be unpickled: {exc!r}") from None


# -- the node-local store --------------------------------------------------------------------


def stored_path(root: str, server_uid: str, job_id: int, task_id: int) -> str:
    """Where a node keeps a task's result: one file per task in the node's result directory."""
    return os.path.join(root, f"{server_uid}.{job_id}.{task_id}")


# The last few small results without buffers that this process stored, by path: (inode,
# mtime, size, kind, blob). The next step of a chain, on the executor that made its argument,
# reads it from here once a stat says that the file is still the one written: one system call
# instead of five.
_RECENT: dict[str, tuple[int, int, int, int, bytes]] = {}
RECENT_KEPT = 4
RECENT_MAX_BYTES = 64 << 10


def write_stored(path: str, kind: int, parts: list[Any]) -> None:
    """Write the blob (after one byte of its kind) whole under a temporary name, then rename:
    a reader sees the complete result or none."""
    temporary = f"{path}.{os.getpid()}.tmp"
    small = kind != UNAVAILABLE and parts_size(parts) <= RECENT_MAX_BYTES
    blob = b"".join(parts) if small else b""
    # Not one with buffers: a reader maps those, so that its arrays view the stored pages.
    kept = small and len(blob) >= _HEADER.size and _HEADER.unpack_from(blob, 0)[2] == 0
    _RECENT.pop(path, None)  # written anew, or failed to be: the file is no longer that one
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            for chunk in ((bytes((kind,)) + blob,) if small else (bytes((kind,)), *parts)):
                view = memoryview(chunk).cast("B")
                while view:
                    view = view[os.write(fd, view):]
            stat = os.fstat(fd) if kept else None
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if stat is not None:
        if len(_RECENT) >= RECENT_KEPT:
            del _RECENT[next(iter(_RECENT))]
        _RECENT[path] = (stat.st_ino, stat.st_mtime_ns, stat.st_size, kind, blob)


def read_stored(path: str) -> tuple[int, Any]:
    """(kind, value) of a stored result; numpy arrays in it view the file's pages (read-only).
    Raises FileNotFoundError when the node has none."""
    recent = _RECENT.get(path)
    if recent is not None:
        stat = os.stat(path)
        if (stat.st_ino, stat.st_mtime_ns, stat.st_size) == recent[:3]:
            return recent[3], decode(recent[4])
    import mmap

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size and f.read(1)[0] == UNAVAILABLE:
            raise ResultUnavailable(f.read(4096).decode("utf-8", "replace"))
        f.seek(0)
        if size < 1 + _HEADER.size:
            raise ResultError(f"damaged result file {path}")
        head = f.read(1 + _HEADER.size)
        if _HEADER.unpack_from(head, 1)[2] == 0:  # no buffers: a read costs less than a map
            blob: Any = head[1:] + f.read()
        else:
            blob = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))[1:]
    return head[0], decode(blob)


# -- references: a task given as another task's argument ------------------------------------


class DependencyFailed(Exception):
    """A task given as an argument failed: the dependent gets its exception as the cause."""


def resolver(root: str, server_uid: str, job_id: int) -> Callable[[int], Any]:
    """The value of a task of this job given as an argument, from this node's store."""

    def resolve(task_id: int) -> Any:
        if not root:
            raise ResultError(f"no result store on this node for task {task_id}")
        try:
            kind, value = read_stored(stored_path(root, server_uid, job_id, task_id))
        except ResultUnavailable as exc:
            raise ResultError(
                f"The result of task {task_id} (an argument of this task) could not be "
                f"fetched: {exc}") from None
        except FileNotFoundError:
            raise ResultError(
                f"The result of task {task_id} (an argument of this task) is not on this "
                "worker: it was not kept where it was made, or it is larger than its job's "
                "max_result_size (hqshm docs/python-api.md, Results)") from None
        if kind == EXCEPTION:
            raise DependencyFailed(f"task {task_id} raised {value!r}") from value
        return value

    return resolve
