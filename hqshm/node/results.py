"""Function task results on the node: the executor's store and report, the loop's reading.

An executor turns a function's outcome (hqshm/node/warm.py's ``Outcome``, or a cold task's
``hq-result`` file) into a report for the server: ``(kind, size, blob)``. The blob goes inline
when it is at most the job's ``max_result`` bytes; above it only its size travels (the value is
then only on this node, if kept). When the payload says ``keep`` (another task of the job takes
this one as an argument), the blob is also written to the node's result directory, on tmpfs,
where dependents on this node map it without a copy (hqshm/taskresult.py). A value that does not
pickle is reported as ``UNPICKLABLE`` with the reason: the task still succeeds, as it would in
HQ, which drops return values.

The report rides on the task's ENDED record (``RESULT_FLAG``, the payload then a msgpack array
of the error text and the report), so no other record kind or ring change is needed.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Sequence
from typing import Any

import msgpack

from hqshm import taskresult

RESULT_FLAG = 0x01  # an ENDED record whose payload is [error, kind, size, blob]
UNPICKLABLE = 2  # report kind: the value could not be pickled; the blob is the reason (text)
_COLD_HEADER = struct.Struct("<BBQ")  # a cold task's hq-result: kind, keep, max_result

Report = tuple[int, int, bytes]  # kind, size, blob (empty: not sent)


def report(root: str, server_uid: str, job_id: int, task_id: int, kind: int, value: Any,
           keep: bool, max_result: int) -> Report | None:
    """Store the outcome if kept and give what goes to the server (None: nothing to send: a
    None value nobody takes)."""
    if value is None and kind == taskresult.VALUE and not keep:
        return None
    try:
        parts = taskresult.encode_parts(value)
    except taskresult.ResultError as exc:
        return UNPICKLABLE, 0, str(exc).encode("utf-8", "replace")
    size = taskresult.parts_size(parts)
    if keep and root:
        with contextlib.suppress(OSError):  # a full tmpfs: the dependent says it is missing
            taskresult.write_stored(taskresult.stored_path(root, server_uid, job_id, task_id),
                                    kind, parts)
    if size > min(max_result, taskresult.MAX_RESULT_LIMIT):
        return kind, size, b""
    return kind, size, b"".join(parts)


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
    if keep and root:
        with contextlib.suppress(OSError):
            taskresult.write_stored(taskresult.stored_path(root, server_uid, job_id, task_id),
                                    kind, [blob])
    if len(blob) > min(max_result, taskresult.MAX_RESULT_LIMIT):
        return kind, len(blob), b""
    return kind, len(blob), bytes(blob)


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
        path = taskresult.stored_path(root, server_uid, key >> 32, key & 0xFFFFFFFF)
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
