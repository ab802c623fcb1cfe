"""An allocation's state from what its workers and the batch system say (pure, §6.6).

Each function returns the end verdict when the allocation ended with this news: ``(failed,
message)``, None otherwise. Workers decide while they connect and leave; when the batch
system reports the end first, its verdict decides. An allocation the batch system no longer
reports for ``MISSING_POLLS`` polls in a row, or whose status query keeps failing, ended:
FAILED, so that it no longer holds the queue's backlog (beyond HQ: reconciled within two polls).

When every worker was lost abnormally right after connecting, HQ calls the allocation FAILED at
once. hqshm asks the batch system first (the allocation is "suspect"): a node preempted or
killed at its time limit loses its workers the same way, and such an end is no failure (beyond
HQ). The batch system's end state decides. If it shows the job queued or running, or does not
know it, the workers' verdict stands at once: FAILED (as in HQ); only a job it shows ending
(Slurm COMPLETING, PBS E) gets up to ``SUSPECT_GRACE`` seconds to show why it ended.
"""

from __future__ import annotations

from hqshm.server.autoalloc.parsers import ManagerStatus
from hqshm.server.autoalloc.state import (
    EARLY_LOSS,
    FAILED,
    FINISHED,
    MAX_QUEUED_POLL_FAILURES,
    MAX_RUNNING_POLL_FAILURES,
    MISSING_POLLS,
    QUEUED,
    RUNNING,
    Allocation,
)

ABNORMAL = ("connection-lost", "heartbeat-lost")
SUSPECT_GRACE = 10.0  # seconds a suspect allocation may show as ending before it is FAILED
ENDING = frozenset({"COMPLETING", "SIGNALING", "STAGE_OUT", "E"})  # Slurm JobState, PBS job_state
WALLTIME_SLACK = 15.0  # seconds: a worker starts this much later than its allocation, at most

Verdict = tuple[bool, str] | None  # (failed, why) when the allocation just ended


def _end(alloc: Allocation, state: str, now: float, why: str, benign: bool = False) -> Verdict:
    alloc.state = state
    alloc.ended_at = now
    alloc.end_reason = why
    alloc.benign = benign
    return state == FAILED and not benign, why


def worker_connected(alloc: Allocation, wid: int, now: float) -> None:
    if not alloc.active:
        return
    if alloc.state == QUEUED:
        alloc.state = RUNNING
        alloc.started_at = now
    alloc.connected[wid] = now


def at_walltime(alloc: Allocation, now: float, limit: float) -> bool:
    """Whether the allocation is (about) as old as its workers may live: a worker lost now
    was most likely killed by the batch system at the time limit, which is no failure."""
    start = alloc.started_at if alloc.started_at is not None else alloc.queued_at
    return now - start >= limit - max(WALLTIME_SLACK, 0.05 * limit)


def worker_lost(alloc: Allocation, wid: int, reason: str, now: float,
                limit: float | None = None) -> Verdict:
    """A worker of the allocation left; the allocation ends with its last expected worker.
    ``limit``: how long its workers may live (a loss at that age is the walltime's)."""
    since = alloc.connected.pop(wid, None)
    if since is None:
        return None
    walltime = limit is not None and at_walltime(alloc, now, limit)
    early = reason.lower() in ABNORMAL and now - since < EARLY_LOSS and not walltime
    alloc.lost.append((wid, now, early))
    if not alloc.active or alloc.connected or len(alloc.lost) < alloc.target_workers:
        return None
    if all(e for _, _, e in alloc.lost):
        alloc.suspect_at = now  # the batch system's end state decides (status_reported)
        return None
    if walltime:
        return _end(alloc, FINISHED, now, "its workers ended at the time limit", benign=True)
    return _end(alloc, FINISHED, now, "all workers ended")


def status_reported(alloc: Allocation, status: ManagerStatus, now: float) -> Verdict:
    alloc.poll_failures = 0
    alloc.missing_polls = 0
    if not alloc.active:
        return None
    if status.state in (QUEUED, RUNNING):
        if status.state == RUNNING and alloc.state == QUEUED:
            alloc.state = RUNNING
            alloc.started_at = status.started_at or now
        return _suspect_failed(alloc, now, grace=status.detail in ENDING)
    if alloc.suspect_at is not None and not status.benign:  # the workers' verdict stands
        return _suspect_failed(alloc, now, grace=False)
    if alloc.started_at is None and status.started_at is not None:
        alloc.started_at = status.started_at
    why = f"the batch system reports it ended ({status.detail})"
    verdict = _end(alloc, status.state, status.ended_at or now, why, status.benign)
    return verdict


def status_missing(alloc: Allocation, now: float) -> Verdict:
    """The batch system does not know the allocation (any more)."""
    if not alloc.active:
        return None
    if alloc.suspect_at is not None:
        return _suspect_failed(alloc, now, grace=False)
    if alloc.connected:  # its workers speak for it: it lives
        alloc.missing_polls = 0
        return None
    alloc.missing_polls += 1
    if alloc.missing_polls < MISSING_POLLS:
        return None
    return _end(alloc, FAILED, now, "the batch system no longer knows this allocation")


def status_failed(alloc: Allocation, error: str, now: float) -> Verdict:
    """The status query failed (the batch system is down, or answers nonsense)."""
    if not alloc.active:
        return None
    verdict = _suspect_failed(alloc, now, grace=True)
    if verdict is not None:
        return verdict
    alloc.poll_failures += 1
    limit = MAX_QUEUED_POLL_FAILURES if alloc.state == QUEUED else MAX_RUNNING_POLL_FAILURES
    if alloc.poll_failures < limit:
        return None
    return _end(alloc, FAILED, now, f"its status query failed {alloc.poll_failures} times: "
                                    f"{error}")


def _suspect_failed(alloc: Allocation, now: float, grace: bool) -> Verdict:
    """A suspect allocation (all workers lost right after connecting) that the batch system
    does not explain: FAILED, at once or once ``SUSPECT_GRACE`` has passed."""
    if alloc.suspect_at is None or (grace and now - alloc.suspect_at < SUSPECT_GRACE):
        return None
    return _end(alloc, FAILED, now, "every worker was lost right after it connected")
