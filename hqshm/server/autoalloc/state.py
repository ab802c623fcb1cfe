"""Queues and their allocations: the state the pure decisions read and change.

Plain mutable records, owned by the server's single thread. An allocation's life is
QUEUED -> RUNNING -> FINISHED | FAILED (deployment.md §6.6); ``reconcile`` moves it.
"""

from __future__ import annotations

import os
import re

from hqshm.cluster.frozen import field, frozen, mutable
from hqshm.cluster.resources import ResourceDescriptor
from hqshm.model.allocqueue import QueueParams

QUEUED, RUNNING, FINISHED, FAILED = "queued", "running", "finished", "failed"
ENDED = (FINISHED, FAILED)
ACTIVE, PAUSED = "active", "paused"

# Consecutive failed submissions and the delay before the next try (§6.6), in units of
# ``Tunables.backoff_unit`` (a minute by default): 0, 1 min, 15 min, 30 min, 1 h.
SUBMIT_DELAYS = (0, 1, 15, 30, 60)
MAX_FAILED_SUBMISSIONS = 10
EARLY_LOSS = 60.0  # a worker lost this soon after connecting marks a broken allocation
MAX_QUEUED_POLL_FAILURES = 10
MAX_RUNNING_POLL_FAILURES = 20
MISSING_POLLS = 2  # polls that must not find an allocation before it is considered gone
MAX_PAUSE_BACKOFF = 4 * 3600.0
# Seconds a newly connected worker still counts as coming capacity: a scheduling tick in the
# same server turn as its registration (or a throttled scheduler) sees its tasks still waiting.
FRESH_WORKER = 5.0


def _env_ms(env: dict[str, str], name: str, default_s: float) -> float:
    text = env.get(name)
    if text is None:
        return default_s
    try:
        value = int(text)
    except ValueError:
        return default_s
    return max(value, 1) / 1000.0


@frozen
class Tunables:
    """HQ_AUTOALLOC_* (milliseconds), and hqshm's own knobs of the healing (beyond HQ)."""

    refresh_interval: float = 1800.0  # status polls
    max_schedule_delay: float = 30.0  # longest a new task waits for the allocator to look
    schedule_tick: float = 5.0
    max_allocation_fails: int = 3
    backoff_unit: float = 60.0  # unit of SUBMIT_DELAYS
    pause_retry: float = 900.0  # first retry of a queue paused after failures, then doubled
    keep_dirs: int = 20  # directories of ended allocations kept per queue
    keep_ended: int = 1000  # ended allocations remembered per queue (alloc info)

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> Tunables:
        env = dict(os.environ) if env is None else env
        fails = env.get("HQ_AUTOALLOC_MAX_ALLOCATION_FAILS", "3")
        keep = env.get("HQ_AUTOALLOC_KEEP_DIRS", "20")
        return Tunables(
            refresh_interval=_env_ms(env, "HQ_AUTOALLOC_REFRESH_INTERVAL_MS", 1800.0),
            max_schedule_delay=_env_ms(env, "HQ_AUTOALLOC_MAX_SCHEDULE_DELAY_MS", 30.0),
            schedule_tick=_env_ms(env, "HQ_AUTOALLOC_SCHEDULE_TICK_INTERVAL_MS", 5.0),
            max_allocation_fails=int(fails) if fails.isdigit() and int(fails) > 0 else 3,
            backoff_unit=_env_ms(env, "HQ_AUTOALLOC_BACKOFF_UNIT_MS", 60.0),
            pause_retry=_env_ms(env, "HQ_AUTOALLOC_PAUSE_RETRY_MS", 900.0),
            keep_dirs=int(keep) if keep.isdigit() else 20,
        )


@mutable
class Allocation:
    id: str  # the batch system's job id
    queue_id: int
    counter: int  # the queue's allocation number (name and directory)
    target_workers: int
    workdir: str
    queued_at: float
    state: str = QUEUED
    started_at: float | None = None
    ended_at: float | None = None
    connected: dict[int, float] = field(default_factory=dict)  # worker id -> connected at
    lost: list[tuple[int, float, bool]] = field(default_factory=list)  # wid, at, abnormal early
    poll_failures: int = 0
    missing_polls: int = 0
    benign: bool = False  # ended by walltime or preemption
    end_reason: str = ""
    cancel_requested: bool = False
    suspect_at: float | None = None  # all workers lost right after connecting: ask the system

    @property
    def active(self) -> bool:
        return self.state not in ENDED

    def coming_workers(self, now: float) -> int:
        """Workers this allocation will still bring (queued ones, and running ones that have
        not all connected yet), and those that connected so recently that the scheduler may
        not have given them their tasks yet (they would look like unmet demand)."""
        if self.state == QUEUED:
            return self.target_workers
        if self.state == RUNNING:
            fresh = sum(1 for at in self.connected.values() if now - at < FRESH_WORKER)
            return max(0, self.target_workers - len(self.connected) - len(self.lost)) + fresh
        return 0


@mutable
class Queue:
    id: int
    params: QueueParams
    resources: ResourceDescriptor | None  # declared or learned; None: probing mode
    state: str = ACTIVE
    auto_paused: bool = False  # paused by failures (retries with back-off), not by the user
    allocations: dict[str, Allocation] = field(default_factory=dict)
    counter: int = 0  # allocations submitted (names and directories)
    failed_submissions: int = 0  # consecutive
    failed_allocations: int = 0  # consecutive
    next_submit_at: float = 0.0  # rate limit after failed submissions
    pause_failures: int = 0  # failures in a row that paused it (shown with the reason)
    pauses: int = 0  # automatic pauses in a row (the back-off doubles with each)
    retry_at: float | None = None  # when an automatically paused queue tries again
    last_failure: str = ""
    in_flight: int = 0  # submissions running now
    in_flight_workers: int = 0
    reason: str = ""  # why the last tick submitted nothing ("" if it submitted)
    removing: bool = False
    created_at: float = 0.0

    def queued_count(self) -> int:
        return self.in_flight + sum(1 for a in self.allocations.values() if a.state == QUEUED)

    def worker_count(self) -> int:
        """Queued and running workers of the queue (--max-worker-count counts these)."""
        return self.in_flight_workers + sum(a.target_workers for a in self.allocations.values()
                                            if a.active)

    def coming_workers(self, now: float) -> int:
        return self.in_flight_workers + sum(a.coming_workers(now)
                                            for a in self.allocations.values())


def id_order(allocation_id: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a batch system's job id, numbers by value: Slurm's job 10 after job 9
    (as text it came first), PBS's `100.server` after `99.server`."""
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"(\d+)", allocation_id) if part)
