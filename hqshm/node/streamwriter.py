"""Writing output streams: an executor's open stream files and one task instance's records.

Concurrency: the file is created whole or not at all (the header goes into a temporary file
that is then hard-linked to the final name; whoever loses the race opens the winner's file),
and every record is appended by one ``write()`` on an ``O_APPEND`` descriptor. On a local file
system (ext4, xfs, tmpfs...) Linux serialises such writes per inode, so records of several
executors never interleave. NFS does not guarantee atomic appends from several clients; each
node has its own file, so only the executors of one node, which share one client, append to a
given file. A record torn by a writer killed mid-``write()`` can only be a file's tail (its
node dies with it and a new node draws a new name); the reader reports such a tail and keeps
everything before it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable

from hqshm.errors import HqError
from hqshm.model.streamformat import (
    STDOUT,
    StreamHeader,
    encode_header,
    encode_record,
    stream_file_name,
)


class StreamError(HqError):
    """Writing a stream failed; the task fails with ``Streaming: <this text>``."""


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
