"""Reading output streams for `hq output-log`: every file of a stream directory, and an index
of the task instances found in them.

Files are read a megabyte at a time through the format's bounded decoder
(hqshm/model/streamformat.py); a torn or corrupt tail is reported and everything before it kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import BinaryIO

from hqshm.cluster.frozen import frozen
from hqshm.model.streamformat import (
    HEADER_LIMIT,
    SUFFIX,
    Chunk,
    CorruptStream,
    StreamDecoder,
    StreamHeader,
)

# --- reading files ---------------------------------------------------------------------------


@frozen
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
        decoder.feed(f.read(HEADER_LIMIT))
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


@frozen
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
