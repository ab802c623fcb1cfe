"""Scenario environment for the server's task core: builders, a recording outbox, a fake clock.

Tests read as scenarios: ``env.worker(cpus=4)``, ``env.group(10)``, ``env.schedule()``, then
``env.out.take(to=w, kind=ComputeTasks)`` and ``env.out.assert_empty()``. Ids come from
counters; builders fill in defaults so a test names only what it is about. Every message the
core sends, and every message the env delivers on a node's behalf, goes through the real
``NODE_LINK`` codec, so the protocol is exercised by every scenario. ``SimNode`` plays a node
that obeys the protocol, for randomized scenarios.
"""

from __future__ import annotations

import copy as copy_module
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from hqshm.cluster import reactor
from hqshm.cluster.core import Core, FailedForGood, Group, Worker
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import (
    NODE_LINK,
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    Failed,
    Finished,
    ForgetGroups,
    RetractTasks,
    Started,
    StopReason,
    TasksRetracted,
    TaskUpdates,
)
from hqshm.cluster.resources import (
    FRACTIONS,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
    ResourcePool,
    ResourceRequest,
)
from hqshm.cluster.scheduler import (
    PREFILL,
    Holds,
    _any_room,
    fill_min_utilization,
    place,
    place_early,
    place_multinode,
    prefill_factor,
    retract_expired,
    schedule,
    steal,
)

M = TypeVar("M")


class FakeClock:
    """Server time that moves only when the test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now


def round_trip(message: Any) -> Any:
    """Encode and decode with the real codec; the decoded copy must equal the original."""
    decoded = NODE_LINK.decode(NODE_LINK.encode(message))
    assert decoded == message, (message, decoded)
    return decoded


class RecordingEvents:
    """``TaskEvents`` that remembers one flat record per task, in order.

    Shapes: ``started``/``finished`` ``(worker, key, instance)``, ``failed`` ``(worker, key,
    instance, error)``, ``requeued`` ``(key, instance)``, ``crashed`` ``(worker, key, crashes,
    never_restart)``. The time of each call goes to ``times``, in the same order as the calls.
    """

    def __init__(self) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.times: list[float] = []

    def tasks_started(self, worker: int, started: Sequence[Started], now: float) -> None:
        self.times.append(now)
        self.log.extend(("started", (worker, s[0], s[1])) for s in started)

    def tasks_finished(self, worker: int, finished: Sequence[Finished], now: float) -> None:
        self.times.append(now)
        self.log.extend(("finished", (worker, f[0], f[1])) for f in finished)

    def tasks_failed(self, worker: int, failed: Sequence[FailedForGood], now: float) -> None:
        self.times.append(now)
        self.log.extend(("failed", (worker, f[0], f[1], f[5])) for f in failed)

    def tasks_requeued(self, keys: Sequence[int], instances: Sequence[int], now: float,
                       crashes: Sequence[int] = ()) -> None:
        assert len(keys) == len(instances)
        assert not crashes or len(crashes) == len(keys)
        self.times.append(now)
        self.log.extend(("requeued", (k, i)) for k, i in zip(keys, instances, strict=True))

    def tasks_crashed(
        self, worker: int, keys: Sequence[int], crashes: Sequence[int], never_restart: bool,
        now: float,
    ) -> None:
        assert len(keys) == len(crashes)
        self.times.append(now)
        self.log.extend(
            ("crashed", (worker, k, c, never_restart)) for k, c in zip(keys, crashes, strict=True)
        )

    def tasks_adopted(self, worker: int, keys: Sequence[int], now: float) -> None:
        self.times.append(now)
        self.log.extend(("adopted", (worker, k)) for k in keys)

    def task_nodes(self, key: int, workers: Sequence[int], now: float) -> None:
        self.times.append(now)
        self.log.append(("nodes", (key, tuple(workers))))

    def tasks_aborted(self, keys: Sequence[int], gids: Sequence[int], now: float) -> None:
        self.times.append(now)
        self.log.extend(("aborted", (k,)) for k in keys)
        self.log.extend(("aborted_group", (g,)) for g in gids)

    def take(self, kind: str, count: int | None = None) -> list[tuple[Any, ...]]:
        """Remove and return the records of one kind; with ``count``, insist on how many."""
        taken = [record for k, record in self.log if k == kind]
        self.log = [(k, r) for k, r in self.log if k != kind]
        if count is not None:
            assert len(taken) == count, f"expected {count} {kind} events, got {taken}"
        return taken

    def assert_empty(self) -> None:
        assert not self.log, f"unexpected events: {self.log}"


class RecordingOutbox:
    """The core's ``Outbox``, recording what it sends (after a codec round trip).

    It also checks the link's ordering rule: a ``DefineGroup`` precedes the first
    ``ComputeTasks`` of its group on each worker's link, and is sent only once there until a
    ``ForgetGroups`` names it.
    """

    def __init__(self, events: Any) -> None:
        self.events = events
        self.sent: list[tuple[int, Any]] = []
        self._defined: set[tuple[int, int]] = set()

    def send(self, worker: int, message: object) -> None:
        decoded = round_trip(message)
        if isinstance(decoded, DefineGroup):
            assert (worker, decoded.gid) not in self._defined, "group defined twice on a link"
            self._defined.add((worker, decoded.gid))
        if isinstance(decoded, ComputeTasks):
            assert (worker, decoded.gid) in self._defined, "ComputeTasks before DefineGroup"
        if isinstance(decoded, ForgetGroups):
            for gid in decoded.gids:
                assert (worker, gid) in self._defined, "ForgetGroups of a group never defined"
                self._defined.discard((worker, gid))
        self.sent.append((worker, decoded))

    def take(self, to: int, kind: type[M], count: int | None = None) -> list[M]:
        """Remove and return the messages of one kind sent to one worker, in order."""
        taken = [m for w, m in self.sent if w == to and isinstance(m, kind)]
        self.sent = [(w, m) for w, m in self.sent if not (w == to and isinstance(m, kind))]
        if count is not None:
            assert len(taken) == count, f"expected {count} {kind.__name__} to {to}, got {taken}"
        return taken

    def take_keys(self, to: int, kind: type[Any]) -> list[int]:
        """The keys of every ``kind`` message (ComputeTasks, RetractTasks...) sent to ``to``."""
        return [k for m in self.take(to, kind) for k in m.keys]

    def discard(self, kind: type[Any]) -> None:
        self.sent = [(w, m) for w, m in self.sent if not isinstance(m, kind)]

    def assert_empty(self) -> None:
        assert not self.sent, f"unexpected messages: {self.sent}"


# --- builders -------------------------------------------------------------------------------


def cpus_pool(n: int) -> ResourcePool:
    return ResourcePool("cpus", PoolKind.RANGE, start=0, end=n - 1)


def list_pool(name: str, *labels: str) -> ResourcePool:
    return ResourcePool(name, PoolKind.LIST, (tuple(labels),))


def sum_pool(name: str, units: float) -> ResourcePool:
    return ResourcePool(name, PoolKind.SUM, size=round(units * FRACTIONS))


def request(*, cpus: float | None = 1, min_time: float = 0.0, **others: float) -> ResourceRequest:
    """One variant: ``cpus`` (None: no CPUs) plus other named amounts, in units."""
    amounts = ({"cpus": cpus} if cpus is not None else {}) | others
    entries = tuple(
        ResourceEntry(name, round(units * FRACTIONS), Policy.COMPACT)
        for name, units in amounts.items()
    )
    return ResourceRequest((RequestVariant(entries, min_time=min_time),))


@dataclass
class Env:
    """One core, its recording outbox and a fake clock; ids come from counters."""

    clock: FakeClock = field(default_factory=FakeClock)
    events: RecordingEvents = field(default_factory=RecordingEvents)
    core: Core = field(default_factory=Core)
    out: RecordingOutbox = field(init=False)
    groups: dict[int, Group] = field(default_factory=dict)  # kept after the core forgets one
    probe_skips: bool = True  # check every skipped pass against a full one (``schedule``)
    # check every pass against one that scans every group (``reference_schedule``)
    compare_passes: bool = True
    # Send blocked tasks early to the worker of their last prerequisite (``place_early``):
    # off for the scenarios written before it, which assert when the server releases a task.
    early: bool = False
    _job_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _gids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.out = RecordingOutbox(self.events)
        if not self.early:
            self.core.early_per_cpu = 0.0

    # --- building the cluster ---------------------------------------------------------------

    def worker(
        self,
        cpus: int = 4,
        *pools: ResourcePool,
        time_limit: float | None = None,
        hostname: str = "",
        min_utilization: float = 0.0,
    ) -> Worker:
        all_pools = tuple(sorted((cpus_pool(cpus), *pools), key=lambda p: p.name))
        wid = self.core.next_worker_id
        return reactor.add_worker(
            self.core,
            hostname or f"node{wid}",
            ResourceDescriptor(all_pools),
            "default",
            time_limit,
            self.clock.now(),
            min_utilization,
        )

    def workers(self, *cpus: int) -> list[Worker]:
        return [self.worker(c) for c in cpus]

    def group(
        self,
        n: int = 1,
        *,
        cpus: float | None = 1,
        priority: int = 0,
        job: int | None = None,
        min_time: float = 0.0,
        crash_limit: int = 5,
        req: ResourceRequest | None = None,
        entries: Sequence[bytes] | None = None,
        retries: int = 0,
        deps: dict[int, list[int]] | None = None,
        after: Sequence[int] = (),
        first_id: int = 0,
        **others: float,
    ) -> Group:
        """A submit of ``n`` tasks (ids first_id.., default 0..n-1), in a new job unless ``job``
        is given; ``deps`` (key -> prerequisite keys) and ``after`` (keys the whole group waits
        for) as the product passes them to ``add_group``."""
        job_id = next(self._job_ids) if job is None else job
        gid = next(self._gids)
        keys = np.array([task_key(job_id, i) for i in range(first_id, first_id + n)],
                        dtype=np.uint64)
        group = Group(
            gid=gid,
            job_id=job_id,
            request=req if req is not None else request(cpus=cpus, min_time=min_time, **others),
            priority=priority,
            body=f"program of group {gid}".encode(),
            keys=keys,
            crash_limit=crash_limit,
            retries=retries,
            entries=list(entries) if entries is not None else None,
        )
        reactor.add_group(self.core, group, deps, after)
        self.groups[gid] = group
        return group

    # --- what the server loop would do ------------------------------------------------------

    def schedule(self) -> None:
        """What the end of a server turn does: schedule, then send the turn's forgettings.

        Whenever the pass may be skipped (``Core.nothing_new_fits``), a full pass on a copy of
        the core must place nothing: the skip never leaves a task waiting that could run."""
        if self.probe_skips and self.core.nothing_new_fits():
            copy = copy_module.deepcopy(self.core)
            copy.dirty = True
            probe = RecordingOutbox(RecordingEvents())
            probe._defined = set(self.out._defined)  # noqa: SLF001 - the same links
            schedule(copy, probe, self.clock.now())
            placed = [m for _, m in probe.sent if isinstance(m, ComputeTasks)]
            assert not placed, f"a skipped pass would have placed {placed}"
        reference = None
        if self.compare_passes:
            copy = copy_module.deepcopy(self.core)
            reference = RecordingOutbox(RecordingEvents())
            reference._defined = set(self.out._defined)  # noqa: SLF001 - the same links
            reference_schedule(copy, reference, self.clock.now())
        sent, logged = len(self.out.sent), len(self.events.log)
        schedule(self.core, self.out, self.clock.now())
        if reference is not None:
            assert self.out.sent[sent:] == reference.sent, "the pass differs from a full scan"
            if self.out.events is self.events:  # not a product's book
                assert self.events.log[logged:] == reference.events.log
            assert self.core.full_classes == copy.full_classes
            assert self.core.needs_scheduling == copy.needs_scheduling
        reactor.send_forgets(self.core, self.out)

    def lose(self, worker: Worker, reason: str = StopReason.CONNECTION_LOST) -> None:
        reactor.on_worker_lost(self.core, self.out, worker.wid, reason, self.clock.now())

    def cancel(self, *groups: Group) -> None:
        reactor.cancel_groups(self.core, self.out, [g.gid for g in groups], self.clock.now())

    # --- what a node would report (through the codec) ---------------------------------------

    def start(self, worker: Worker, keys: Iterable[int]) -> None:
        now = self.clock.now()
        started = tuple((k, self.instance(k), now, 0) for k in keys)
        self.updates(worker, TaskUpdates(started=started))

    def finish(self, worker: Worker, keys: Iterable[int], duration: float = 1.0) -> None:
        now = self.clock.now()
        finished = tuple((k, self.instance(k), now - duration, now, 0) for k in keys)
        self.updates(worker, TaskUpdates(finished=finished))

    def fail(self, worker: Worker, keys: Iterable[int], error: str = "boom",
             retryable: bool = True) -> None:
        now = self.clock.now()
        failed = tuple((k, self.instance(k), now - 1.0, now, 0, error, retryable) for k in keys)
        self.updates(worker, TaskUpdates(failed=failed))

    def updates(self, worker: Worker, msg: TaskUpdates) -> None:
        reactor.on_task_updates(self.core, self.out, worker.wid, round_trip(msg), self.clock.now())

    def give_back(self, worker: Worker, keys: Iterable[int]) -> None:
        """The node answers ``RetractTasks`` with the keys it had not started."""
        msg = round_trip(TasksRetracted(tuple(keys)))
        reactor.on_tasks_retracted(self.core, self.out, worker.wid, msg.keys, self.clock.now())

    # --- looking ----------------------------------------------------------------------------

    def group_of(self, key: int) -> Group:
        return next(g for g in self.groups.values() if key in set(g.keys.tolist()))

    def instance(self, key: int) -> int:
        return self.group_of(key).instances.get(key, 0)

    def held(self, worker: Worker) -> int:
        """Tasks a worker holds: assigned (queued there) plus running."""
        return len(worker.assigned) + len(worker.running)

    def check(self) -> None:
        self.core.check()


def reference_schedule(core: Core, out: Any, now: float) -> None:
    """``scheduler.schedule`` as it was before the core indexed its pending groups: every pass
    collects the groups with pending tasks (and what it needs to know of them) by a scan of
    every group, sorts them, and walks that snapshot. The index must not change one decision:
    ``Env.schedule`` runs this on a copy of the core and compares what both sent."""
    if now < core.paused_until:
        return
    core.needs_scheduling = False
    if not core.workers:
        return
    core.room = ScanEveryWorker(core)  # type: ignore[assignment] - and so does every step
    workers = sorted(core.workers.values(), key=lambda w: w.wid)
    if core.nothing_new_fits():
        core.new_groups.clear()
        reference_retract_expired(core, out, workers, now)
        return
    core.dirty = False
    core.new_groups.clear()
    groups: list[Group] = []
    largest: dict[tuple[int, str], int] = {}
    multi_node = False
    most_prefill = PREFILL
    for group in core.groups.values():
        pending = group.pending
        if pending:
            groups.append(group)
            if group.ran:
                most_prefill = max(most_prefill, prefill_factor(group))
            if group.multi_node:
                multi_node = True
            elif largest.get(group.placement_key, 0) < pending:
                largest[group.placement_key] = pending
    groups.sort(key=lambda g: g.order)
    holds = Holds(core)
    priorities = [g.priority for g in core.groups.values()]
    holds.top, holds.bottom = max(priorities, default=0), min(priorities, default=0)
    all_full = not multi_node and all(w.min_utilization <= 0 for w in workers)
    for prefill in (False, True):
        factor = 1.0 + most_prefill if prefill else 1.0
        if not _any_room(workers, factor):
            continue
        if not groups:
            all_full = False
        full: dict[tuple[int, str], int] = {}
        classes_full = 0
        ended_full = False
        for group in groups:
            if group.multi_node:
                if not prefill:
                    place_multinode(core, out, group, workers, now)
                continue
            pending = group.pending
            if pending == 0 or full.get(group.placement_key, -1) >= pending:
                continue
            if place(core, out, group, workers, holds, prefill, now):
                if not _any_room(workers, factor):
                    ended_full = True
                    break
            else:
                key = group.placement_key
                before = full.get(key, -1)
                full[key] = max(before, pending)
                if before < largest[key] <= full[key]:
                    classes_full += 1
                    if classes_full == len(largest) and not multi_node:
                        ended_full = True
                        break
        all_full = all_full and ended_full
    core.full_classes = frozenset(largest) if all_full else None
    for worker in workers:
        if worker.min_utilization > 0:
            fill_min_utilization(core, out, worker, groups, now)
    steal(core, out, workers, now, holds)
    reference_retract_expired(core, out, workers, now)
    # The early pass reads no pending group (only placed tasks and blocked ones): it is the
    # same pass here, after a full scan's decisions, so these are compared with it on.
    place_early(core, out, workers, now)


class ScanEveryWorker:
    """A room index that offers every worker, full or not: the reference pass looks at all
    of them, as the scheduler did before it had ``RoomIndex``."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def below(self, _factor: float) -> list[int]:
        return sorted(self.core.workers)

    def update(self, _worker: Worker) -> None:
        pass

    def remove(self, _wid: int) -> None:
        pass


def reference_retract_expired(core: Core, out: Any, workers: Sequence[Worker],
                              now: float) -> None:
    """``retract_expired`` with the longest time request found by a scan."""
    longest = max(
        (v.min_time for g in core.groups.values() for v in g.request.variants), default=0.0
    )
    assert longest == max(core.longest_times, default=0.0)
    if any(worker.deadline is not None for worker in workers):
        retract_expired(core, out, workers, now)


# --- a node that follows the protocol, for randomized scenarios -------------------------------


@dataclass
class SimNode:
    """Plays one node: queues what it is sent, starts within its CPUs, answers retractions.

    Reports are buffered until ``flush`` (real nodes batch them), so a ``TasksRetracted``
    answer can overtake the report that a task started, as it can on a real link.
    """

    env: Env
    worker: Worker
    cpus: int
    defined: dict[int, DefineGroup] = field(default_factory=dict)
    queued: list[tuple[int, int, int]] = field(default_factory=list)  # key, instance, gid
    # key -> (gid, instance, cpu amount)
    running: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    retract_asks: list[tuple[int, ...]] = field(default_factory=list)
    killed: list[tuple[int, int]] = field(default_factory=list)  # canceled while running
    started: list[Started] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    used: int = 0

    def receive(self) -> None:
        """Take this node's messages out of the outbox and apply them."""
        for msg in [m for w, m in self.env.out.sent if w == self.worker.wid]:
            if isinstance(msg, DefineGroup):
                self.defined[msg.gid] = msg
            elif isinstance(msg, ForgetGroups):
                held = {q[2] for q in self.queued} | {r[0] for r in self.running.values()}
                for gid in msg.gids:
                    if gid not in held:  # a real node forgets the others once they end
                        self.defined.pop(gid, None)
            elif isinstance(msg, ComputeTasks):
                instances = msg.instances or (0,) * len(msg.keys)
                self.queued.extend(
                    (k, i, msg.gid) for k, i in zip(msg.keys, instances, strict=True)
                )
            elif isinstance(msg, RetractTasks):
                self.retract_asks.append(msg.keys)
            elif isinstance(msg, CancelTasks):
                doomed = set(msg.keys)
                self.queued = [q for q in self.queued if q[0] not in doomed]
                for key in doomed & set(self.running):
                    _, instance, amount = self.running.pop(key)
                    self.used -= amount
                    self.killed.append((key, instance))
        self.env.out.sent = [(w, m) for w, m in self.env.out.sent if w != self.worker.wid]

    def _amount(self, gid: int) -> int:
        variant = self.defined[gid].request.variants[0]
        return sum(e.amount for e in variant.entries if e.name == "cpus")

    def start_some(self, n: int) -> list[int]:
        keys = []
        for item in list(self.queued):
            if len(keys) >= n:
                break
            key, instance, gid = item
            amount = self._amount(gid)
            if self.used + amount > self.cpus * FRACTIONS:
                continue
            self.queued.remove(item)
            self.used += amount
            self.running[key] = (gid, instance, amount)
            self.started.append((key, instance, self.env.clock.now(), 0))
            keys.append(key)
        return keys

    def end_some(self, n: int, fail: bool = False, duration: float = 0.5) -> list[int]:
        keys = list(self.running)[:n]
        now = self.env.clock.now()
        for key in keys:
            _, instance, amount = self.running.pop(key)
            self.used -= amount
            if fail:
                self.failed.append((key, instance, now - duration, now, 0, "boom", True))
            else:
                self.finished.append((key, instance, now - duration, now, 0))
        return keys

    def report_killed(self) -> None:
        """Ends of canceled tasks may still arrive; the server must ignore them."""
        now = self.env.clock.now()
        self.failed.extend((k, i, now - 0.5, now, 0, "killed", False) for k, i in self.killed)
        self.killed.clear()

    def answer_retractions(self) -> None:
        for keys in self.retract_asks:
            wanted = set(keys)
            back = [q for q in self.queued if q[0] in wanted]
            self.queued = [q for q in self.queued if q[0] not in wanted]
            self.env.give_back(self.worker, [q[0] for q in back])
        self.retract_asks.clear()

    def flush(self) -> None:
        if self.started or self.finished or self.failed:
            msg = TaskUpdates(tuple(self.started), tuple(self.finished), tuple(self.failed))
            self.started, self.finished, self.failed = [], [], []
            self.env.updates(self.worker, msg)

    def holds(self) -> set[int]:
        return {q[0] for q in self.queued} | set(self.running)
