"""Each tick's decision for one queue: which allocations to submit, or why none (pure).

Demand first: when the waiting tasks need nothing more, the reason names them (blocked on
dependencies, unfit, too long, none at all) rather than a limit they would not hit anyway.
Then the queue's own state (paused, rate limited) and its limits (backlog, max worker count).
Also the bookkeeping of failures: the rate limit after failed submissions, the automatic pause
after too many failures of either kind, and its retries with a doubling back-off (beyond HQ,
whose paused queues stay paused until a user resumes them). And which old allocation
directories go, so that their number stays bounded.
"""

from __future__ import annotations

import math
import time
from collections import deque

from hqshm.cluster.frozen import frozen
from hqshm.server.autoalloc.demand import Demand
from hqshm.server.autoalloc.state import (
    ACTIVE,
    MAX_FAILED_SUBMISSIONS,
    MAX_PAUSE_BACKOFF,
    PAUSED,
    SUBMIT_DELAYS,
    Queue,
    Tunables,
)


@frozen
class Plan:
    submit: tuple[int, ...]  # worker counts of the allocations to submit now
    reason: str  # why nothing (more) is submitted; "" when it submits what is needed


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def demand_reason(demand: Demand) -> str:
    if demand.fitting:
        return "the waiting tasks are covered by queued allocations"
    if demand.too_long:
        return ("time request longer than the allocation: "
                f"{demand.too_long} waiting tasks ask for more time than its workers live")
    if demand.unfit:
        return f"no waiting task fits this queue's workers ({demand.unfit} waiting)"
    if demand.blocked:
        return f"waiting tasks are blocked on dependencies ({demand.blocked} tasks)"
    return "no waiting tasks"


def worker_demand(workers: float, min_utilization: float) -> int:
    """Workers worth starting for ``workers`` (fractions: a partly filled worker): the last,
    partly filled one only when its tasks use at least ``min_utilization`` of it."""
    whole = math.floor(workers + 1e-9)
    part = workers - whole
    if part <= 1e-9:
        return whole
    return whole + (1 if part + 1e-9 >= min_utilization else 0)


def plan(queue: Queue, demand: Demand, now: float) -> Plan:
    params = queue.params
    if queue.removing:
        return Plan((), "the queue is being removed")
    trial = False
    if queue.state == PAUSED:
        if not queue.auto_paused:
            return Plan((), "paused")
        if queue.retry_at is None or now < queue.retry_at:
            when = f"; retries at {_clock(queue.retry_at)}" if queue.retry_at else ""
            return Plan((), f"paused after {queue.pause_failures} failures{when}; "
                            f"last failure: {queue.last_failure}")
        trial = True  # one allocation tries whether the cause is gone
    if queue.in_flight:
        if trial:
            return Plan((), f"paused after {queue.pause_failures} failures; trying one "
                            f"allocation now; last failure: {queue.last_failure}")
        return Plan((), "a submission is in progress")
    coming = queue.coming_workers(now)
    if queue.resources is None:  # probing mode: one allocation teaches the worker shape
        if demand.fitting == 0:
            return Plan((), demand_reason(demand))
        if any(a.active for a in queue.allocations.values()):
            return Plan((), "probing: waiting for the first worker to learn the queue's "
                            "worker resources")
        needed = params.max_workers_per_alloc
        single = True
    else:
        wanted = worker_demand(demand.workers, params.min_utilization)
        needed = wanted + sum(demand.multi_node) - coming
        single = False
        if needed <= 0:
            if demand.fitting and wanted < math.ceil(demand.workers - 1e-9) \
                    and not demand.multi_node:
                return Plan((), "the waiting tasks would use less of a worker than "
                                f"--min-utilization {params.min_utilization:g}")
            return Plan((), demand_reason(demand))
    if now < queue.next_submit_at:
        return Plan((), f"rate limited after {queue.failed_submissions} failed submissions; "
                        f"may submit at {_clock(queue.next_submit_at)}; "
                        f"last failure: {queue.last_failure}")
    backlog_left = (1 if trial else params.backlog) - queue.queued_count()
    if backlog_left <= 0:
        return Plan((), f"backlog full ({queue.queued_count()} of {params.backlog} "
                        "allocations queued)")
    workers_left = (needed if params.max_worker_count is None
                    else params.max_worker_count - queue.worker_count())
    if workers_left <= 0:
        return Plan((), f"max workers reached ({queue.worker_count()} of "
                        f"{params.max_worker_count})")
    sizes: list[int] = []
    multi = sorted(demand.multi_node, reverse=True) if not single else []
    budget = min(needed, workers_left)
    while budget > 0 and len(sizes) < backlog_left:
        if multi:
            nodes = multi.pop(0)
            if nodes > budget:
                break
            size = nodes
        else:
            size = min(params.max_workers_per_alloc, budget)
        sizes.append(size)
        budget -= size
        if single:
            break
    reason = ""
    if budget > 0:
        reason = (f"backlog full ({params.backlog} allocations)" if len(sizes) >= backlog_left
                  else f"max workers reached ({params.max_worker_count})")
    return Plan(tuple(sizes), reason)


# --- failures ----------------------------------------------------------------------------

def submission_failed(queue: Queue, message: str, now: float, tun: Tunables) -> str | None:
    """Count a failed submission; the pause message when the queue pauses."""
    queue.failed_submissions += 1
    queue.last_failure = message
    delay = SUBMIT_DELAYS[min(queue.failed_submissions - 1, len(SUBMIT_DELAYS) - 1)]
    queue.next_submit_at = now + delay * tun.backoff_unit
    if queue.failed_submissions >= MAX_FAILED_SUBMISSIONS:
        _auto_pause(queue, now, tun)
        return f"The queue {queue.id} had too many failed submissions, it will be paused."
    if queue.state == PAUSED and queue.auto_paused:  # a failed trial
        _auto_pause(queue, now, tun)
    return None


def submission_succeeded(queue: Queue) -> None:
    queue.failed_submissions = 0
    queue.next_submit_at = 0.0
    if queue.state == PAUSED and queue.auto_paused:
        # The trial went through; an allocation failing again pauses it again at once.
        queue.state = ACTIVE
        queue.auto_paused = False
        queue.retry_at = None


def allocation_ended(queue: Queue, failed: bool, message: str, now: float,
                     tun: Tunables) -> str | None:
    """Count an ended allocation (a benign end is not failed); the pause message, if any."""
    if not failed:
        queue.failed_allocations = 0
        queue.pauses = 0
        return None
    queue.failed_allocations += 1
    queue.last_failure = message
    if queue.failed_allocations >= tun.max_allocation_fails and not (
            queue.state == PAUSED and not queue.auto_paused):
        _auto_pause(queue, now, tun)
        return f"The queue {queue.id} had too many failed allocations, it will be paused."
    return None


def _auto_pause(queue: Queue, now: float, tun: Tunables) -> None:
    queue.pauses += 1
    queue.pause_failures = max(queue.failed_submissions, queue.failed_allocations)
    queue.state = PAUSED
    queue.auto_paused = True
    queue.retry_at = now + min(tun.pause_retry * 2 ** (queue.pauses - 1), MAX_PAUSE_BACKOFF)
    # One more failure after a retry pauses it again (with a longer back-off).
    queue.failed_submissions = min(queue.failed_submissions, MAX_FAILED_SUBMISSIONS - 1)
    queue.failed_allocations = min(queue.failed_allocations, tun.max_allocation_fails - 1)
    queue.next_submit_at = 0.0


def retire_dir(dirs: deque[str], workdir: str, keep: int) -> list[str]:
    """Record ``workdir`` (an ended allocation's, or a failed submission's) as the newest of
    ``dirs``; the oldest directories beyond ``keep`` are returned for removal."""
    dirs.append(workdir)
    old: list[str] = []
    while len(dirs) > max(keep, 0):
        old.append(dirs.popleft())
    return old


def resume(queue: Queue) -> None:
    """`hq alloc resume`: a fresh start."""
    queue.state = ACTIVE
    queue.auto_paused = False
    queue.retry_at = None
    queue.failed_submissions = queue.failed_allocations = queue.pauses = 0
    queue.next_submit_at = 0.0


def pause(queue: Queue) -> None:
    queue.state = PAUSED
    queue.auto_paused = False
    queue.retry_at = None
