"""Which batch allocation a worker runs in (`hq worker start --manager`, deployment.md §4.5).

A worker started inside a PBS or Slurm allocation takes the allocation's ID as its default
group and the allocation's remaining time as its default time limit, and shows both in
`hq worker list/info`. Everything here is pure (the environment and the tools' output are
arguments) except ``detect_allocation``, which runs `qstat` or `scontrol` through
hqshm/node/tools.py: a missing, failing or hung tool, or output we cannot read, costs a warning
and the time limit, never the worker's start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from hqshm.cluster.frozen import frozen
from hqshm.errors import UserError

logger = logging.getLogger(__name__)

PBS = "PBS"
SLURM = "SLURM"
MANAGER_OPTIONS = ("detect", "none", "pbs", "slurm")
# Generous for a busy PBS server or slurmctld, short enough that a hung one does not stall a
# worker's start for long.
TOOL_TIMEOUT = 5.0
# Slurm's words for a job without a time limit.
_SLURM_UNLIMITED = ("UNLIMITED", "INFINITE")


@frozen
class Allocation:
    """The allocation a worker runs in: `Manager`, `Manager Job ID`, and the time it had left
    when the worker started (None: unlimited, or the batch system did not tell)."""

    manager: str  # PBS | SLURM
    job_id: str
    time_limit: float | None = None


class NotUnderManager(UserError):
    """`--manager pbs|slurm` outside such an allocation (texts of deployment.md §4.5)."""


class UnreadableOutput(ValueError):
    """A batch tool's answer that does not say how much time the allocation has left."""


NOT_UNDER_PBS = "PBS_ENVIRONMENT not found. The process is not running under PBS"
NOT_UNDER_SLURM = "SLURM_JOB_ID/SLURM_JOBID not found. The process is not running under SLURM"


def find_allocation(option: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(manager, job ID) that ``--manager option`` finds in ``env``: `detect` tries PBS, then
    Slurm; `none` finds nothing; `pbs`/`slurm` without their variables is an error."""
    if option == "none":
        return None
    if option in ("detect", "pbs"):
        if "PBS_ENVIRONMENT" in env:
            job_id = env.get("PBS_JOBID", "").strip()
            if not job_id:
                raise NotUnderManager("PBS_ENVIRONMENT is set but PBS_JOBID is not; start the "
                                      "worker with --manager none outside a PBS job")
            return PBS, job_id
        if option == "pbs":
            raise NotUnderManager(NOT_UNDER_PBS)
    if option in ("detect", "slurm"):
        job_id = (env.get("SLURM_JOB_ID", "").strip() or env.get("SLURM_JOBID", "").strip())
        if job_id:
            return SLURM, job_id
        if option == "slurm":
            raise NotUnderManager(NOT_UNDER_SLURM)
    if option not in MANAGER_OPTIONS:
        raise UserError(f"Unknown manager {option!r} (use one of {', '.join(MANAGER_OPTIONS)})")
    return None


# --- Slurm -------------------------------------------------------------------------------------


def parse_slurm_duration(text: str) -> float | None:
    """A duration as scontrol prints it, `[D-]HH:MM:SS`, in seconds; None for `UNLIMITED`."""
    if text.upper() in _SLURM_UNLIMITED:
        return None
    days_text, dash, clock = text.rpartition("-")
    days = _number(days_text, text) if dash else 0
    return float(days * 86400 + _clock(clock, text))


def slurm_remaining(output: str) -> float | None:
    """`TimeLimit - RunTime` of `scontrol show job <id>`'s `key=value` tokens (the first
    record's); None when the job has no time limit."""
    fields: dict[str, str] = {}
    for token in output.split():
        key, eq, value = token.partition("=")
        if eq:
            fields.setdefault(key, value)
    try:
        limit_text, run_text = fields["TimeLimit"], fields["RunTime"]
    except KeyError as exc:
        raise UnreadableOutput(f"no {exc.args[0]} in the output of scontrol") from None
    limit = parse_slurm_duration(limit_text)
    run_time = parse_slurm_duration(run_text)
    if run_time is None:
        raise UnreadableOutput(f"invalid RunTime {_short(run_text)}")
    if limit is None:
        return None
    return _left(limit, run_time)


# --- PBS ---------------------------------------------------------------------------------------


def parse_pbs_walltime(text: Any) -> float:
    """A PBS walltime, `HH:MM:SS` (hours may exceed 99), in seconds."""
    if not isinstance(text, str):
        raise UnreadableOutput(f"invalid walltime {_short(text)}")
    return float(_clock(text, text))


def pbs_remaining(output: str, job_id: str) -> float:
    """`Resource_List.walltime - resources_used.walltime` of the job in `qstat -f <id> -F json`.

    The job is the one keyed by ``job_id``, else the only one whose number (before the first
    dot) is ``job_id``'s: PBS_JOBID and qstat may name the server differently. A job that PBS
    has not yet measured (no `resources_used` in its first seconds) has used nothing.
    """
    try:
        # qstat writes control characters of job variables unescaped.
        data = json.loads(output, strict=False)
    except (ValueError, RecursionError) as exc:
        raise UnreadableOutput(f"qstat's output is not JSON: {str(exc)[:200]}") from None
    jobs = data.get("Jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        raise UnreadableOutput("no Jobs object in qstat's output")
    job = jobs.get(job_id)
    if job is None:
        number = job_id.split(".", 1)[0]
        same = [value for key, value in jobs.items() if str(key).split(".", 1)[0] == number]
        if len(same) != 1:
            raise UnreadableOutput(f"job {job_id} not found in qstat's output")
        job = same[0]
    if not isinstance(job, dict):
        raise UnreadableOutput(f"job {job_id} in qstat's output is not an object")
    requested = job.get("Resource_List")
    if not isinstance(requested, dict) or "walltime" not in requested:
        raise UnreadableOutput(f"job {job_id} has no Resource_List.walltime")
    used = job.get("resources_used", {})
    if not isinstance(used, dict):
        raise UnreadableOutput(f"invalid resources_used of job {job_id}")
    used_walltime = used.get("walltime")
    return _left(parse_pbs_walltime(requested["walltime"]),
                 0.0 if used_walltime is None else parse_pbs_walltime(used_walltime))


# --- what the worker takes from its allocation --------------------------------------------------


def worker_group(group: str | None, allocation: Allocation | None) -> str:
    """`--group`, else the allocation's ID, else `default`."""
    if group:
        return group
    return allocation.job_id if allocation is not None else "default"


def worker_time_limit(time_limit: float | None, allocation: Allocation | None) -> float | None:
    """`--time-limit` (an explicit one wins, as in HQ), else the allocation's remaining time."""
    if time_limit is not None:
        return time_limit
    return allocation.time_limit if allocation is not None else None


# --- the edge: asking the batch system -------------------------------------------------------

Runner = Callable[[list[str], Mapping[str, str], float], str]


def detect_allocation(option: str, env: Mapping[str, str], run: Runner | None = None,
                      timeout: float = TOOL_TIMEOUT) -> Allocation | None:
    """The allocation that ``--manager option`` finds, with its remaining time asked from
    `qstat`/`scontrol` on ``env``'s PATH (``run``: tools.call, or a stand-in in tests)."""
    found = find_allocation(option, env)
    if found is None:
        return None
    if run is None:
        from hqshm.node import tools  # subprocess: only for a worker in an allocation

        run = tools.call
    manager, job_id = found
    if manager == PBS:
        limit = _ask(run, ["qstat", "-f", job_id, "-F", "json"], env, timeout,
                     lambda out: pbs_remaining(out, job_id), "Cannot get time-limit from PBS")
        logger.info("PBS environment detected")
    else:
        limit = _ask(run, ["scontrol", "show", "job", job_id], env, timeout, slurm_remaining,
                     "Cannot get remaining worker timelimit from Slurm")
        logger.info("SLURM environment detected")
    return Allocation(manager, job_id, limit)


def _ask(run: Runner, argv: list[str], env: Mapping[str, str], timeout: float,
         read: Callable[[str], float | None], warning: str) -> float | None:
    from hqshm.node.tools import ToolError

    try:
        output = run(argv, env, timeout)
        logger.debug("%s output: %s", argv[0], output.strip()[:4000])
        return read(output)
    except (ToolError, UnreadableOutput) as exc:
        logger.warning("%s: %s", warning, exc)
        return None


# --- helpers -----------------------------------------------------------------------------------


def _number(text: str, whole: str) -> int:
    # At most 9 digits: more is no time a batch system grants (and int() refuses thousands).
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise UnreadableOutput(f"invalid duration {_short(whole)}")
    return int(text)


def _clock(text: str, whole: str) -> int:
    """`HH:MM:SS` in seconds (minutes and seconds below 60)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise UnreadableOutput(f"invalid duration {_short(whole)}")
    hours, minutes, seconds = (_number(part, whole) for part in parts)
    if minutes >= 60 or seconds >= 60:
        raise UnreadableOutput(f"invalid duration {_short(whole)}")
    return hours * 3600 + minutes * 60 + seconds


def _short(value: Any, limit: int = 40) -> str:
    """A value of hostile output, cut for a warning."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _left(limit: float, used: float) -> float:
    if used >= limit:
        raise UnreadableOutput(f"the allocation has no time left ({used:g} s of {limit:g} s "
                               "used)")
    return limit - used
