"""`hq output-log DIR [--server-uid UID] summary|jobs|show|cat|export` (spec/cli.md §10,
jobs.md §9, output.md §3.13 and §4.10).

Reads the stream files of a directory directly; no server is involved. Only `summary` follows
the output mode; `jobs`, `show` and `cat` print raw data and `export` always prints JSON, as
HQ does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Container, Iterable, Sequence
from typing import BinaryIO, TextIO

from hqshm.cli.commands.context import Context
from hqshm.cli.formats import format_bytes
from hqshm.cli.streamlog import (
    InstanceStream,
    StreamLog,
    list_stream_files,
    read_header,
    read_stream_file,
)
from hqshm.errors import UserError, os_error_text
from hqshm.model.arrays import parse_ranges
from hqshm.model.streamformat import CorruptStream

logger = logging.getLogger("hqshm.cli")

CHANNEL_IDS = {"stdout": 0, "stderr": 1}


class NoLogFiles(UserError):  # spec/jobs.md §9
    template = "No log files found"


class MultipleServerInstances(UserError):  # spec/jobs.md §9
    template = (
        "Found streams from multiple server instances:\n{uids}"
        "Use --server-uid=... to specify server uid"
    )


class UnreadableDirectory(UserError):
    template = "Cannot read the stream directory {path}: {reason}"


class JobNotFound(UserError):
    template = "Job {job_id} not found"


class TaskNotFound(UserError):
    template = "Task {task_id} not found"


class StreamNotFinished(UserError):
    template = "Stream for task {task_id} is not finished"


def run(ctx: Context, command: str) -> int:
    args = ctx.args
    # Bytes are held only where they are printed: a summary of a huge log needs sizes only.
    if command in ("summary", "jobs"):
        data_jobs: Container[int] | None = ()
    else:  # show (all jobs, or --job), cat and export (one job)
        data_jobs = None if args.job is None else (args.job,)
    log = load(args.path, args.server_uid, data_jobs)
    handler = {"summary": summary, "jobs": jobs, "show": show, "cat": cat, "export": export}
    return handler[command](ctx, log)


def load(
    directory: str, server_uid: str | None, data_jobs: Container[int] | None = None
) -> StreamLog:
    """The streams of one server instance; a damaged file is reported and read up to the
    damage (or skipped when even its header is unreadable)."""
    by_uid: dict[str, list[str]] = {}
    try:
        paths = list_stream_files(directory)
    except OSError as exc:
        reason = os_error_text(exc.errno) if exc.errno else str(exc)
        raise UnreadableDirectory(path=directory, reason=reason) from None
    for path in paths:
        try:
            uid = read_header(path).server_uid
        except (CorruptStream, OSError) as exc:
            logger.warning("Ignoring the stream file %s: %s", path, exc)
            continue
        by_uid.setdefault(uid, []).append(path)
    if server_uid is not None:
        by_uid = {server_uid: by_uid[server_uid]} if server_uid in by_uid else {}
    if not by_uid:
        raise NoLogFiles()
    if len(by_uid) > 1:
        raise MultipleServerInstances(uids="".join(f"{uid}\n" for uid in sorted(by_uid)))
    log = StreamLog(data_jobs)
    for path in next(iter(by_uid.values())):
        try:
            stream_file = read_stream_file(path, log.add)
        except OSError as exc:
            logger.warning("Ignoring the stream file %s: %s", path, exc)
            continue
        log.n_files += 1
        if stream_file.problem:
            logger.warning("Stream file %s: %s", path, stream_file.problem)
    return log


def summary(ctx: Context, log: StreamLog) -> int:
    s = log.summary()
    out = ctx.out
    if out.mode == "json":
        out.json(
            {
                "filename": ctx.args.path,
                "summary": {
                    "n_files": s.n_files,
                    "n_jobs": s.n_jobs,
                    "n_tasks": s.n_tasks,
                    "n_streams": s.n_streams,
                    "n_opened": s.n_opened,
                    "stdout_size": s.stdout_size,
                    "stderr_size": s.stderr_size,
                    "n_superseded": s.n_superseded,
                    "superseded_stdout_size": s.superseded_stdout_size,
                    "superseded_stderr_size": s.superseded_stderr_size,
                },
            }
        )
    elif out.mode == "cli":
        out.vertical(
            [
                ("Path", ctx.args.path),
                ("Files", str(s.n_files)),
                ("Jobs", str(s.n_jobs)),
                ("Tasks", str(s.n_tasks)),
                ("Opened streams", str(s.n_opened)),
                (
                    "Stdout/stderr size",
                    f"{format_bytes(s.stdout_size)} / {format_bytes(s.stderr_size)}",
                ),
                ("Superseded streams", str(s.n_superseded)),
                (
                    "Superseded stdout/stderr size",
                    f"{format_bytes(s.superseded_stdout_size)} / "
                    f"{format_bytes(s.superseded_stderr_size)}",
                ),
            ]
        )
    return 0


def jobs(ctx: Context, log: StreamLog) -> int:
    _write(ctx, (f"{job}\n".encode() for job in log.jobs()))
    return 0


def show(ctx: Context, log: StreamLog) -> int:
    channel = None if ctx.args.channel is None else CHANNEL_IDS[ctx.args.channel]
    _write(ctx, show_lines(log, ctx.args.job, channel))
    return 0


def show_lines(log: StreamLog, job: int | None, channel: int | None) -> Iterable[bytes]:
    """`<job>.<task>:<channel>> <data>`, ids zero-padded to the log's widest, one line per
    chunk (a newline added where the data has none)."""
    job_width, task_width = log.id_widths()
    for chunk in log.latest_chunks(job, channel):
        prefix = f"{chunk.job:0{job_width}}.{chunk.task:0{task_width}}:{chunk.channel}> "
        yield prefix.encode()
        yield chunk.data
        if not chunk.data.endswith(b"\n"):
            yield b"\n"


def cat(ctx: Context, log: StreamLog) -> int:
    streams = _selected(log, ctx.args.job, ctx.args.task)
    if not ctx.args.allow_unfinished:
        for task_id, stream in streams:
            if not stream.finished:
                raise StreamNotFinished(task_id=task_id)
    channel = CHANNEL_IDS[ctx.args.channel]
    _write(ctx, (stream.data(channel) for _, stream in streams))
    return 0


def export(ctx: Context, log: StreamLog) -> int:
    streams = _selected(log, ctx.args.job, ctx.args.task)
    items = [
        {"finished": s.finished, "id": task_id, "stdout": s.data(0).decode("utf-8", "replace")}
        for task_id, s in streams
    ]
    ctx.out.line(json.dumps(items, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def _selected(
    log: StreamLog, job: int, task_text: str | None
) -> Sequence[tuple[int, InstanceStream]]:
    """The latest stream of each selected task: by task id, or in the order of `--task`."""
    if job not in log.tasks:
        raise JobNotFound(job_id=job)
    if task_text is None:
        task_ids: Iterable[int] = log.task_ids(job)
    else:
        task_ids = (task_id for r in parse_ranges(task_text) for task_id in r)
    selected = []
    for task_id in task_ids:
        stream = log.latest(job, task_id)
        if stream is None:
            raise TaskNotFound(task_id=task_id)
        selected.append((task_id, stream))
    return selected


def _write(ctx: Context, parts: Iterable[bytes]) -> None:
    """Raw bytes to stdout, in large writes (a log may hold millions of chunks)."""
    out = ctx.out.out
    out.flush()
    binary = getattr(out, "buffer", None)
    batch: list[bytes] = []
    size = 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= 1 << 20:
            _emit(out, binary, batch)
            batch, size = [], 0
    _emit(out, binary, batch)
    if binary is not None:
        binary.flush()


def _emit(out: TextIO, binary: BinaryIO | None, batch: list[bytes]) -> None:
    data = b"".join(batch)
    if binary is not None:
        binary.write(data)
    else:  # a text stream without bytes underneath (tests): what a terminal would show
        out.write(data.decode("utf-8", "replace"))
