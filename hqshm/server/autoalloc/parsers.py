"""What the batch systems answer, read defensively (deployment.md §6.3, §6.6).

Everything here comes from outside the server: sizes are bounded by the runner, and any text
that does not have the expected shape is an error with a short, clear message, never a guess.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from hqshm.cluster.frozen import frozen

MAX_JOB_ID = 256  # characters of a job id we accept from a batch system

QUEUED, RUNNING, FINISHED, FAILED = "queued", "running", "finished", "failed"

# Slurm job states (squeue(1) "JOB STATE CODES") -> our view. Ends by walltime or preemption are
# no failure of the queue: its allocations did what they were asked to.
_SLURM_STATES = {
    "PENDING": QUEUED, "CONFIGURING": QUEUED, "REQUEUED": QUEUED, "REQUEUE_HOLD": QUEUED,
    "REQUEUE_FED": QUEUED, "RESV_DEL_HOLD": QUEUED,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING, "STOPPED": RUNNING,
    "SIGNALING": RUNNING, "STAGE_OUT": RUNNING, "RESIZING": RUNNING,
    "COMPLETED": FINISHED, "TIMEOUT": FINISHED,
    "CANCELLED": FAILED, "FAILED": FAILED, "NODE_FAIL": FAILED, "BOOT_FAIL": FAILED,
    "OUT_OF_MEMORY": FAILED, "DEADLINE": FAILED, "PREEMPTED": FAILED, "REVOKED": FAILED,
    "SPECIAL_EXIT": FAILED,
}
_SLURM_BENIGN = frozenset({"TIMEOUT", "PREEMPTED", "DEADLINE"})
# PBS exit statuses of a job killed for its walltime (JOB_EXEC_KILL_WALLTIME and friends) or
# by a signal the system sent (preemption: 256 + SIGTERM / SIGKILL).
_PBS_BENIGN = frozenset({-29, -11, 271, 265})


class ParseError(ValueError):
    """A batch system's answer that does not have the documented shape."""


@frozen
class ManagerStatus:
    """One allocation as the batch system reports it."""

    state: str  # QUEUED | RUNNING | FINISHED | FAILED
    started_at: float | None = None
    ended_at: float | None = None
    benign: bool = False  # ended by walltime or preemption: not the queue's failure
    detail: str = ""  # the batch system's own word for it (JobState, Exit_status)


def check_job_id(text: str) -> str:
    job_id = text.strip()
    if not job_id or len(job_id) > MAX_JOB_ID or not job_id.isprintable() or " " in job_id:
        raise ParseError(f"invalid job id {job_id[:64]!r}")
    return job_id


def parse_qsub(stdout: str) -> str:
    """PBS: the job id is the whole trimmed stdout."""
    return check_job_id(stdout)


def parse_sbatch(stdout: str) -> str:
    """Slurm: the 4th word of the first line starting (any case) with `Submitted batch job`."""
    for line in stdout.splitlines():
        if line.lower().startswith("submitted batch job"):
            words = line.split(" ")
            if len(words) >= 4:
                return check_job_id(words[3])
    raise ParseError("Missing job id in sbatch output")


def _slurm_time(text: str | None) -> float | None:
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return time.mktime(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timetuple())
    except ValueError:
        return None


def parse_scontrol_job(stdout: str) -> ManagerStatus:
    """`scontrol show job <id>`: whitespace-separated `Key=Value` tokens."""
    fields: dict[str, str] = {}
    for token in stdout.split():
        key, eq, value = token.partition("=")
        if eq and key not in fields:
            fields[key] = value
    word = fields.get("JobState")
    if word is None:
        raise ParseError("no JobState in scontrol output")
    state = _SLURM_STATES.get(word)
    if state is None:
        raise ParseError(f"unknown Slurm job state {word[:64]!r}")
    return ManagerStatus(state, _slurm_time(fields.get("StartTime")),
                         _slurm_time(fields.get("EndTime")) if state in (FINISHED, FAILED)
                         else None, word in _SLURM_BENIGN, word)


def scontrol_missing(stderr: str) -> bool:
    """Whether scontrol failed because Slurm does not know the job (any more)."""
    return "Invalid job id" in stderr


def _pbs_time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return time.mktime(datetime.strptime(text, "%a %b %d %H:%M:%S %Y").timetuple())
    except ValueError:
        return None


def parse_qstat(stdout: str, job_ids: list[str]) -> dict[str, ManagerStatus]:
    """`qstat -f <id>... -F json -x`: the jobs it reports (those absent are unknown to PBS)."""
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise ParseError(f"qstat output is not JSON: {exc}") from None
    jobs = data.get("Jobs", {}) if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        raise ParseError("qstat output has no Jobs object")
    found: dict[str, ManagerStatus] = {}
    for job_id in job_ids:
        info = jobs.get(job_id)
        if not isinstance(info, dict):
            continue
        word = info.get("job_state")
        start = _pbs_time(info.get("stime"))
        if word == "Q" or word == "H" or word == "W" or word == "T":
            found[job_id] = ManagerStatus(QUEUED, detail=str(word))
        elif word in ("R", "E", "B", "S", "U"):
            found[job_id] = ManagerStatus(RUNNING, start, detail=str(word))
        elif word in ("F", "X"):
            code = info.get("Exit_status")
            ok = code == 0
            benign = isinstance(code, int) and code in _PBS_BENIGN
            found[job_id] = ManagerStatus(FINISHED if ok else FAILED, start,
                                          _pbs_time(info.get("mtime")), benign,
                                          f"Exit_status={code}")
        else:
            raise ParseError(f"unknown PBS job state {str(word)[:64]!r}")
    return found
