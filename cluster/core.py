"""The server's task core: where every unfinished task is, and the handlers that move it.

A task is in exactly one place: pending in its group (never assigned, or given back), assigned
to a worker (sent, not reported started), running on a worker, or gone (ended or canceled;
the core forgets ended tasks, the product keeps their history). Tasks of one submit share a
``Group`` and are stored as a sorted key array plus a cursor, so a million-task array costs
eight bytes a task here and nothing per task until it is assigned.

Handlers are functions of (core, outbox, input, now): no sockets and no clock inside, so tests
drive them directly. Scheduling decisions live in ``cluster.scheduler``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cluster.protocol import (
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    Failed,
    Finished,
    RetractTasks,
    Started,
    StopReason,
    TaskUpdates,
)
from cluster.resources import RequestVariant, ResourceDescriptor, ResourceRequest

logger = logging.getLogger(__name__)

UNLIMITED_CRASHES = 0
NEVER_RESTART = -1


class TaskEvents(Protocol):
    """What the core tells the product. Batches, never one call per task on the hot path."""

    def tasks_started(self, worker: int, started: Sequence[Started]) -> None: ...

    def tasks_finished(self, worker: int, finished: Sequence[Finished]) -> None: ...

    def tasks_failed(self, worker: int, failed: Sequence[Failed]) -> None: ...

    def tasks_requeued(self, keys: Sequence[int], instances: Sequence[int]) -> None: ...

    def tasks_crashed(self, worker: int, keys: Sequence[int], crashes: Sequence[int],
                      never_restart: bool) -> None: ...


class Outbox(Protocol):
    """Where handlers put their decisions; the loop sends them, tests record them."""

    events: TaskEvents

    def send(self, worker: int, message: object) -> None: ...


@dataclass(eq=False)
class Group:
    """Tasks of one submit: same request, priority, crash limit and program body."""

    gid: int
    job_id: int
    request: ResourceRequest
    priority: int
    body: bytes
    keys: np.ndarray  # uint64, sorted ascending
    crash_limit: int = 5
    entries: Sequence[bytes] | None = None
    cursor: int = 0
    requeued: deque[int] = field(default_factory=deque)
    instances: dict[int, int] = field(default_factory=dict)  # sparse: absent = 0
    crashes: dict[int, int] = field(default_factory=dict)  # sparse: absent = 0
    active: int = 0  # tasks not ended yet
    ran: int = 0  # tasks that ended after running, and their total run time: the mean
    ran_time: float = 0.0  # duration decides how deep nodes are prefilled

    def __post_init__(self) -> None:
        self.active = len(self.keys)

    @property
    def mean_duration(self) -> float | None:
        return self.ran_time / self.ran if self.ran else None

    @property
    def order(self) -> tuple[int, int, int]:
        """Higher priority first, then older jobs, then older submits."""
        return (-self.priority, self.job_id, self.gid)

    @property
    def pending(self) -> int:
        return len(self.keys) - self.cursor + len(self.requeued)

    def take(self, n: int) -> list[int]:
        """Up to n pending keys: given-back ones first, so they do not starve."""
        taken: list[int] = []
        while self.requeued and len(taken) < n:
            taken.append(self.requeued.popleft())
        if len(taken) < n and self.cursor < len(self.keys):
            end = min(len(self.keys), self.cursor + n - len(taken))
            taken.extend(self.keys[self.cursor : end].tolist())
            self.cursor = end
        return taken

    def give_back(self, keys: Iterable[int]) -> None:
        self.requeued.extendleft(reversed(list(keys)))

    def entry_of(self, key: int) -> bytes:
        assert self.entries is not None
        return self.entries[int(np.searchsorted(self.keys, np.uint64(key)))]


@dataclass(eq=False)
class Worker:
    wid: int
    hostname: str
    resources: ResourceDescriptor
    group: str
    deadline: float | None  # server-clock time at which the worker ends; None = never
    totals: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)  # assigned + running
    assigned: dict[int, int] = field(default_factory=dict)  # key -> gid, not started yet
    running: dict[int, int] = field(default_factory=dict)  # key -> gid
    retracting: dict[int, int | None] = field(default_factory=dict)  # key -> thief or None
    incoming: dict[int, int] = field(default_factory=dict)  # stolen for us, in flight: key -> gid
    sent_groups: set[int] = field(default_factory=set)
    variant_amounts: dict[int, dict[str, int] | None] = field(default_factory=dict)
    variant_index: dict[int, int] = field(default_factory=dict)  # gid -> variant placed here
    last_seen: float = 0.0

    def __post_init__(self) -> None:
        self.totals = self.resources.totals()
        self.committed = dict.fromkeys(self.totals, 0)

    def remaining(self, now: float) -> float | None:
        return None if self.deadline is None else self.deadline - now

    def amounts_for(self, group: Group) -> dict[str, int] | None:
        """The amounts a task of the group takes here (first variant that can ever fit)."""
        cached = self.variant_amounts.get(group.gid, ...)
        if cached is not ...:
            return cached  # type: ignore[return-value]
        amounts = None
        for index, variant in enumerate(group.request.variants):
            if variant.n_nodes == 0:
                amounts = variant.amount_on(self.totals)
                if amounts is not None:
                    self.variant_index[group.gid] = index
                    break
        self.variant_amounts[group.gid] = amounts
        return amounts

    def variant_for(self, group: Group) -> RequestVariant | None:
        """The variant tasks of the group are placed here with (None: it never fits)."""
        if self.amounts_for(group) is None:
            return None
        return group.request.variants[self.variant_index[group.gid]]

    def commit(self, amounts: dict[str, int], sign: int) -> None:
        for name, amount in amounts.items():
            self.committed[name] += sign * amount


@dataclass
class Core:
    groups: dict[int, Group] = field(default_factory=dict)
    workers: dict[int, Worker] = field(default_factory=dict)
    next_worker_id: int = 1
    needs_scheduling: bool = False

    def check(self) -> None:
        """Invariants; tests call it at the end of every scenario."""
        seen: set[int] = set()
        for worker in self.workers.values():
            for key in list(worker.assigned) + list(worker.running):
                assert key not in seen, f"task {key} is in two places"
                seen.add(key)
            expected = dict.fromkeys(worker.totals, 0)
            held = [*worker.assigned.items(), *worker.running.items(), *worker.incoming.items()]
            for _key, gid in held:
                amounts = worker.amounts_for(self.groups[gid])
                assert amounts is not None
                for name, amount in amounts.items():
                    expected[name] += amount
            assert expected == worker.committed, (expected, worker.committed)
        for group in self.groups.values():
            assert not seen.intersection(group.requeued), "requeued task is also placed"


def variant_fits_time(variant: RequestVariant, worker: Worker, now: float) -> bool:
    remaining = worker.remaining(now)
    return remaining is None or variant.min_time <= remaining


# --- handlers -------------------------------------------------------------------------------


def add_worker(core: Core, hostname: str, resources: ResourceDescriptor, group: str,
               time_limit: float | None, now: float) -> Worker:
    wid = core.next_worker_id
    core.next_worker_id += 1
    deadline = None if time_limit is None else now + time_limit
    worker = Worker(wid, hostname, resources, group, deadline, last_seen=now)
    core.workers[wid] = worker
    core.needs_scheduling = True
    logger.info("Worker %d registered from %s", wid, hostname)
    return worker


def add_group(core: Core, group: Group) -> None:
    core.groups[group.gid] = group
    core.needs_scheduling = True


def assign(core: Core, out: Outbox, worker: Worker, group: Group, keys: list[int]) -> None:
    """Send tasks to a worker (defining the group on that link first)."""
    if not keys:
        return
    amounts = worker.amounts_for(group)
    assert amounts is not None
    if group.gid not in worker.sent_groups:
        worker.sent_groups.add(group.gid)
        out.send(worker.wid, DefineGroup(group.gid, group.request, group.priority, group.body))
    for key in keys:
        worker.assigned[key] = group.gid
    for name, amount in amounts.items():
        worker.committed[name] += amount * len(keys)
    instances: tuple[int, ...] = ()
    if group.instances:
        instances = tuple(group.instances.get(k, 0) for k in keys)
        if not any(instances):
            instances = ()
    entries: tuple[bytes, ...] = ()
    if group.entries is not None:
        entries = tuple(group.entry_of(k) for k in keys)
    out.send(worker.wid, ComputeTasks(group.gid, tuple(keys), instances, entries))


def _release(core: Core, worker: Worker, key: int, gid: int) -> Group | None:
    """Give back what a task held on a worker; works after its group is gone (canceled)."""
    amounts = worker.variant_amounts.get(gid)
    if amounts is not None:
        worker.commit(amounts, -1)
    return core.groups.get(gid)


def _end(core: Core, group: Group | None) -> None:
    if group is not None:
        group.active -= 1
        if group.active <= 0:
            del core.groups[group.gid]


def on_task_updates(core: Core, out: Outbox, wid: int, msg: TaskUpdates, now: float) -> None:
    worker = core.workers.get(wid)
    if worker is None:
        return
    worker.last_seen = now
    started: list[Started] = []
    for item in msg.started:
        key = item[0]
        gid = worker.assigned.pop(key, None)
        if gid is None:
            continue  # canceled meanwhile, or already retracted
        _drop_reservation(core, worker.retracting.pop(key, None), key)
        worker.running[key] = gid
        started.append(item)
    if started:
        out.events.tasks_started(wid, started)
    for batch, report in ((msg.finished, out.events.tasks_finished),
                          (msg.failed, out.events.tasks_failed)):
        if not batch:
            continue
        ended = []
        for item in batch:
            key = item[0]
            gid = worker.running.pop(key, None)
            if gid is None:
                gid = worker.assigned.pop(key, None)
                if gid is None:
                    continue  # canceled meanwhile
            _drop_reservation(core, worker.retracting.pop(key, None), key)
            group = _release(core, worker, key, gid)
            if group is not None:
                group.ran += 1
                group.ran_time += max(0.0, item[3] - item[2])
            _end(core, group)
            ended.append(item)
        if ended:
            report(wid, ended)  # type: ignore[operator]
    core.needs_scheduling = True


def on_tasks_retracted(core: Core, out: Outbox, wid: int, keys: Sequence[int],
                       now: float) -> None:
    """Tasks given back by a node: hand them to the thief that asked, or back to the pool."""
    worker = core.workers.get(wid)
    if worker is None:
        return
    by_target: dict[int | None, dict[int, list[int]]] = {}
    for key in keys:
        gid = worker.assigned.pop(key, None)
        if gid is None:
            continue
        thief = worker.retracting.pop(key, None)
        group = _release(core, worker, key, gid)
        if group is None:
            continue
        by_target.setdefault(thief, {}).setdefault(gid, []).append(key)
    # Keys asked for but not returned have started there: the thief's reservation lapses.
    for key in [k for k in worker.retracting if k not in worker.assigned]:
        _drop_reservation(core, worker.retracting.pop(key), key)
    for thief_id, per_group in by_target.items():
        thief = core.workers.get(thief_id) if thief_id is not None else None
        for gid, group_keys in per_group.items():
            group = core.groups[gid]
            if thief is not None:
                for key in group_keys:
                    _drop_reservation(core, thief_id, key)
            if thief is not None and thief.amounts_for(group) is not None:
                assign(core, out, thief, group, group_keys)
            else:
                group.give_back(group_keys)
    core.needs_scheduling = True


def reserve(core: Core, thief: Worker, key: int, gid: int) -> None:
    """Hold room on a thief for a task that is being retracted elsewhere for it."""
    amounts = thief.amounts_for(core.groups[gid])
    assert amounts is not None
    thief.incoming[key] = gid
    thief.commit(amounts, +1)


def _drop_reservation(core: Core, thief_id: int | None, key: int) -> None:
    thief = core.workers.get(thief_id) if thief_id is not None else None
    if thief is None:
        return
    gid = thief.incoming.pop(key, None)
    if gid is not None:
        _release(core, thief, key, gid)


def cancel_groups(core: Core, out: Outbox, gids: Iterable[int]) -> None:
    """Drop every unfinished task of these groups, killing the running ones on their nodes."""
    gid_set = set(gids)
    for worker in core.workers.values():
        doomed = [k for k, g in worker.assigned.items() if g in gid_set]
        doomed += [k for k, g in worker.running.items() if g in gid_set]
        if not doomed:
            continue
        for key in doomed:
            gid = worker.assigned.pop(key, None)
            if gid is None:
                gid = worker.running.pop(key)
            _drop_reservation(core, worker.retracting.pop(key, None), key)
            _release(core, worker, key, gid)
        out.send(worker.wid, CancelTasks(tuple(doomed)))
    for gid in gid_set:
        core.groups.pop(gid, None)
    core.needs_scheduling = True


def on_worker_lost(core: Core, out: Outbox, wid: int, reason: str, now: float) -> None:
    """Every task the worker held goes back with a new instance id; crashes are counted.

    Instances grow for assigned tasks too: a node that lost its link may already have started
    one without the news reaching us, and a task must never run twice under one instance.
    Only a lost connection or heartbeat counts as a crash (spec/jobs.md §8.3).
    """
    worker = core.workers.pop(wid, None)
    if worker is None:
        return
    # Reservations first: the events below may cancel groups (max-fails), and the thieves
    # must have their room back whatever happens to the tasks.
    for other in core.workers.values():
        for key, thief in other.retracting.items():
            if thief == wid:
                other.retracting[key] = None
    for key, thief in worker.retracting.items():
        _drop_reservation(core, thief, key)
    crash = reason in (StopReason.CONNECTION_LOST, StopReason.HEARTBEAT_LOST)
    requeued_keys: list[int] = []
    requeued_instances: list[int] = []
    crashed: dict[bool, tuple[list[int], list[int]]] = {}
    for key, gid, was_running in [(k, g, False) for k, g in worker.assigned.items()] + [
        (k, g, True) for k, g in worker.running.items()
    ]:
        group = core.groups.get(gid)
        if group is None:
            continue
        instance = group.instances.get(key, 0) + 1
        group.instances[key] = instance
        if was_running and (crash or group.crash_limit == NEVER_RESTART):
            count = group.crashes.get(key, 0) + 1
            group.crashes[key] = count
            never = group.crash_limit == NEVER_RESTART
            if never or (group.crash_limit != UNLIMITED_CRASHES and count >= group.crash_limit):
                keys, counts = crashed.setdefault(never, ([], []))
                keys.append(key)
                counts.append(count)
                _end(core, group)
                continue
        group.give_back([key])
        requeued_keys.append(key)
        requeued_instances.append(instance)
    if requeued_keys:
        out.events.tasks_requeued(requeued_keys, requeued_instances)
    for never, (keys, counts) in crashed.items():
        out.events.tasks_crashed(wid, keys, counts, never)
    logger.info(
        "Worker %d lost (%s); %d running and %d queued tasks returned",
        wid, reason, len(worker.running), len(worker.assigned),
    )
    core.needs_scheduling = True


def retract(out: Outbox, worker: Worker, keys: list[int], thief: int | None) -> None:
    for key in keys:
        worker.retracting[key] = thief
    out.send(worker.wid, RetractTasks(tuple(keys)))
