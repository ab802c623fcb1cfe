"""A completed job's snapshot record read only as far as sealing it needs.

A restored server seals every completed job as the bytes its record came in (the job store
keeps nothing else of it), so decoding the whole record (its templates and programs checked
field by field) was most of restoring 100,000 finished jobs, for values that are thrown away.
This reads the few fields a sealed job answers with and its tasks' states; any record that is
not plainly a completed job's, or that does not read as one, is left to the full decoder,
whose checks and errors then apply. The rest of the bytes is decoded, and checked, if the job
is ever read whole (``JobStore.view``) or changed (a thaw).
"""

from __future__ import annotations

import zlib

import msgpack

from hqshm.cluster.bounds import MAX_FRAME
from hqshm.cluster.frozen import frozen, record_fields
from hqshm.model.taskstates import TaskState
from hqshm.server.journal.records import JOURNAL, JobSnapshot, SubmitSnapshot, state_counts
from hqshm.server.sealedjobs import Counts

_JOB = {f.name: i + 2 for i, f in enumerate(record_fields(JobSnapshot))}  # after protocol, tag
_JOB_LENGTH = 2 + len(_JOB)
_SUBMIT = {f.name: i for i, f in enumerate(record_fields(SubmitSnapshot))}
_SUBMIT_LENGTH = len(_SUBMIT)


@frozen
class CompletedJob:
    """What sealing a completed job needs; ``record`` is its JobSnapshot's encoded bytes."""

    job_id: int
    name: str
    cancel_reason: str | None
    finished_at: float | None
    counts: Counts
    next_gid: int  # above its submits' group ids
    record: bytes


def read_completed(payload: bytes) -> CompletedJob | None:
    """The completed job a JobSnapshot record describes; None for anything else (another
    record, an open or unfinished job, or one that does not read plainly)."""
    if len(payload) > MAX_FRAME:
        return None
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return None
    if (type(data) is not list or len(data) != _JOB_LENGTH or data[0] != JOURNAL.protocol
            or data[1] != JobSnapshot.TAG or data[_JOB["is_open"]] is not False):
        return None
    job_id, name = data[_JOB["job_id"]], data[_JOB["name"]]
    reason, finished = data[_JOB["cancel_reason"]], data[_JOB["finished_at"]]
    submits = data[_JOB["submits"]]
    if (type(job_id) is not int or job_id <= 0 or type(name) is not str
            or not (reason is None or type(reason) is str)
            or not (finished is None or type(finished) is float) or type(submits) is not list):
        return None
    columns = []
    next_gid = 0
    for submit in submits:
        if type(submit) is not list or len(submit) != _SUBMIT_LENGTH:
            return None
        gid, n, state = (submit[_SUBMIT["gid"]], submit[_SUBMIT["n_tasks"]],
                         submit[_SUBMIT["state"]])
        if type(gid) is not int or gid < 0 or type(n) is not int or n < 0 \
                or type(state) is not bytes:
            return None
        columns.append((state, n))
        next_gid = max(next_gid, gid + 1)
    try:
        counts = state_counts(columns)
    except (ValueError, UnicodeDecodeError, zlib.error):
        return None
    if counts[TaskState.WAITING] or counts[TaskState.RUNNING]:
        return None
    return CompletedJob(job_id, name, reason, finished,
                        tuple(counts.tolist()), next_gid, payload)  # type: ignore[arg-type]
