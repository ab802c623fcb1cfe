"""The server's task core: where every unfinished task is.

A task is in exactly one place: pending in its group (never assigned, or given back), assigned
to a worker (sent, not reported started), running on a worker, or gone (ended or canceled;
the core forgets ended tasks, the product keeps their history). Tasks of one submit share a
``Group`` and are stored as a sorted key array plus a cursor, so a million-task array costs
eight bytes a task here and nothing per task until it is assigned.

Each placed task records the request variant it was placed with, so a group's later variants
add capacity where the first one is used up; the node reports the variant it really chose.

Dependencies come in two shapes. Tasks of a job file depend on other tasks one by one
(``deps_waiting``/``dependants``). A whole group can wait for a set of earlier tasks (a barrier,
``hq submit --after``): one counter for the group, nothing per task, so a million-task array
waiting for another job costs nothing extra. A task that fails, is canceled or is aborted aborts
what depends on it, transitively.

The groups with pending tasks are indexed in scheduling order (``PendingGroups``), kept up to
date wherever a pending count changes, so a scheduling pass walks the groups it places and
stops, instead of collecting and sorting every group of the core on every pass.

The handlers that move tasks between these places are in ``reactor``, the scheduling decisions in
``scheduler``.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from heapq import heapify, heappop, heappush
from typing import Protocol, TypeVar

from .crashlimit import DEFAULT_CRASH_LIMIT, NEVER_RESTART, UNLIMITED_CRASHES
from .firstuse import np
from .frozen import field, mutable
from .ids import GroupId, InstanceId, JobId, TaskKey, WorkerId
from .protocol import Finished, Started
from .resources import FRACTIONS, ResourceDescriptor, ResourceRequest

CPUS = "cpus"  # the pool nearly every task takes (``Core.cpu_room``)
SWEEP_AFTER_GROUPS = 1000
T = TypeVar("T")

Placed = tuple[GroupId, int]  # (gid, variant index) of a task placed on a worker
# A node's ``Failed`` report without its retryable flag: a failure for good, retries spent.
FailedForGood = tuple[TaskKey, InstanceId, float, float, int, str]


class TaskEvents(Protocol):
    """What the core tells the product. Batches, never one call per task on the hot path.

    ``now`` is the time of the handler that reports it, so the product reads no clock.
    """

    def tasks_started(self, worker: WorkerId, started: Sequence[Started],
                      now: float) -> None: ...

    def tasks_finished(self, worker: WorkerId, finished: Sequence[Finished],
                       now: float) -> None: ...

    def tasks_failed(self, worker: WorkerId, failed: Sequence[FailedForGood],
                     now: float) -> None: ...

    def tasks_requeued(self, keys: Sequence[TaskKey], instances: Sequence[InstanceId],
                       now: float, crashes: Sequence[int] = ()) -> None:
        """Tasks to run again; ``crashes`` (when not empty) holds each one's count of lost
        workers it was running on, which a restored server must know."""
        ...

    def tasks_crashed(self, worker: WorkerId, keys: Sequence[TaskKey], crashes: Sequence[int],
                      never_restart: bool, now: float) -> None: ...

    def tasks_aborted(self, keys: Sequence[TaskKey], gids: Sequence[GroupId],
                      now: float) -> None:
        """These tasks, and every unfinished task of these groups, lost a dependency."""
        ...

    def tasks_adopted(self, worker: WorkerId, keys: Sequence[TaskKey], now: float) -> None:
        """A reconnecting node took back these running tasks (``reactor.adopt``)."""
        ...

    def task_nodes(self, key: TaskKey, workers: Sequence[WorkerId], now: float) -> None:
        """A multi-node task was placed on these workers (the first runs it)."""
        ...


class Outbox(Protocol):
    """Where handlers put their decisions; the loop sends them, tests record them."""

    events: TaskEvents

    def send(self, worker: WorkerId, message: object) -> None: ...


@mutable
class Group:
    """Tasks of one submit: same request, priority, crash limit and program body."""

    gid: GroupId
    job_id: JobId
    request: ResourceRequest
    priority: int
    body: bytes
    keys: np.ndarray  # uint64, sorted ascending
    crash_limit: int = DEFAULT_CRASH_LIMIT  # or UNLIMITED_CRASHES, NEVER_RESTART
    retries: int = 0  # re-runs of a task whose program exited non-zero
    entries: Sequence[bytes] | None = None
    cursor: int = 0
    requeued: deque[TaskKey] = field(default_factory=deque)
    instances: dict[TaskKey, InstanceId] = field(default_factory=dict)  # sparse: absent = 0
    crashes: dict[TaskKey, int] = field(default_factory=dict)  # sparse: absent = 0
    attempts: dict[TaskKey, int] = field(default_factory=dict)  # sparse: retries used
    barrier: int = 0  # unfinished tasks the whole group waits for (--after)
    active: int = 0  # tasks not ended yet
    ran: int = 0  # tasks that ended after running, and their total run time: the mean
    ran_time: float = 0.0  # duration decides how deep nodes are prefilled
    # Workers sent its DefineGroup (since it was last dropped): told to forget it when it is.
    sent_to: list[WorkerId] = field(default_factory=list)
    # Groups with equal keys place alike (same request and priority). A string hashes once
    # and compares as bytes; equal requests of separate submits compare field by field.
    placement_key: tuple[int, str] = field(init=False)
    multi_node: bool = field(init=False)
    order: tuple[int, int, int] = field(init=False)  # higher priority, older job, older submit
    # The longest time request of its variants (``scheduler.retract_expired``).
    longest_time: float = field(init=False)
    # Whether every variant takes some amount of some pool: then a task fits only on a worker
    # with room in one of its pools, and a pass may look at those alone (``RoomIndex``).
    takes_room: bool = field(init=False)
    # Whether every variant takes CPUs: then only a worker with CPUs to spare can take a task
    # (``Core.cpu_room``), whatever room its other pools have (memory nobody asks for).
    takes_cpus: bool = field(init=False)
    # The core's index of pending groups while the group is in the core (``Core.register``).
    index: PendingGroups | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.active = len(self.keys)
        self.order = (-self.priority, self.job_id, self.gid)
        self.placement_key = (self.priority, repr(self.request))
        self.multi_node = self.request.is_multi_node
        self.longest_time = max((v.min_time for v in self.request.variants), default=0.0)
        self.takes_room = all(any(e.all or e.amount > 0 for e in v.entries)
                              for v in self.request.variants)
        self.takes_cpus = not self.multi_node and all(
            any(e.name == CPUS and (e.all or e.amount > 0) for e in v.entries)
            for v in self.request.variants)

    def reindex(self) -> None:
        """Its pending count (keys, cursor, requeued, barrier) or its mean duration changed:
        ``take`` and ``give_back`` call it themselves, whoever changes the rest must."""
        if self.index is not None:
            self.index.update(self)

    @property
    def mean_duration(self) -> float | None:
        return self.ran_time / self.ran if self.ran else None


    @property
    def never_restart(self) -> bool:
        return self.crash_limit == NEVER_RESTART

    def crash_fails(self, crashes: int) -> bool:
        """Whether a task that was running on this many lost workers fails for good."""
        return self.never_restart or (self.crash_limit != UNLIMITED_CRASHES
                                      and crashes >= self.crash_limit)

    @property
    def pending(self) -> int:
        if self.barrier:
            return 0
        return len(self.keys) - self.cursor + len(self.requeued)

    def position(self, key: TaskKey) -> int:
        """Where ``key`` is (or would go) in ``keys``: found by a subtraction when the keys
        up to it are consecutive (most groups: an array's tasks), else by a search."""
        keys = self.keys
        i = key - keys.item(0) if len(keys) else 0
        if 0 <= i < len(keys) and keys.item(i) == key:
            return i
        return int(np.searchsorted(keys, np.uint64(key)))

    def holds(self, key: TaskKey) -> bool:
        i = self.position(key)
        return i < len(self.keys) and int(self.keys[i]) == key

    def take(self, n: int) -> list[TaskKey]:
        """Up to n pending keys: given-back ones first, so they do not starve."""
        taken: list[TaskKey] = []
        while self.requeued and len(taken) < n:
            taken.append(self.requeued.popleft())
        if len(taken) < n and self.cursor < len(self.keys):
            end = min(len(self.keys), self.cursor + n - len(taken))
            taken.extend(self.keys[self.cursor : end].tolist())
            self.cursor = end
        if taken:
            self.reindex()
        return taken

    def give_back(self, keys: Iterable[TaskKey]) -> None:
        self.requeued.extendleft(reversed(list(keys)))
        self.reindex()

    def entry_of(self, key: TaskKey) -> bytes:
        assert self.entries is not None
        return self.entries[self.position(key)]

    def entries_of(self, keys: Sequence[TaskKey]) -> tuple[bytes, ...]:
        """``entry_of`` each key, found in one search."""
        assert self.entries is not None
        entries = self.entries
        at = np.searchsorted(self.keys, np.array(keys, dtype=np.uint64)).tolist()
        return tuple([entries[i] for i in at])


_ORDER = operator.attrgetter("order")
PlacementClass = tuple[int, str]  # ``Group.placement_key``: priority and request


class PendingGroups:
    """The core's groups with pending tasks, in scheduling order (``Group.order``), and what a
    scheduling pass needs to know of all of them: the most pending tasks of a group of each
    placement class, how many are multi-node, the shortest mean duration among those that ran.

    ``update`` follows each group's pending count, so a pass walks the groups it looks at and
    may stop, instead of collecting and sorting every group on every pass (with 4,000
    single-task jobs waiting, that was most of the server's time per job).

    The order is a sorted list from ``_head`` on that holds exactly the indexed groups. Job ids
    grow, so a new group is appended and the first one is the one that gets placed: both cost
    O(1) (the head moves on; the list drops what lies before it once that is half of it). A
    group elsewhere goes in or out by bisection and a move of the list's tail in C. The pending
    counts of a class are counted by value: the largest one is found again among its distinct
    values only when the last group holding it has fewer (distinct counts d of a class hold at
    least d(d+1)/2 tasks, so d is small). Mean durations are a heap with lazy deletion.
    """

    def __init__(self) -> None:
        self._sorted: list[Group] = []  # indexed groups from _head on, by Group.order
        self._head = 0
        self._moves = 0  # entries moved (not appended nor taken off the head): iterators re-find
        self._counts: dict[GroupId, int] = {}  # indexed group -> its pending count
        self._by_class: dict[PlacementClass, dict[int, int]] = {}  # -> pending count -> groups
        self._largest: dict[PlacementClass, int] = {}  # class -> its most pending (or more: stale)
        self._stale: set[PlacementClass] = set()
        self._multi_node = 0
        self._means: dict[GroupId, float] = {}  # indexed groups that ran -> mean duration
        self._by_mean: list[tuple[float, GroupId]] = []  # heap; entries not in _means are stale

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, group: Group) -> bool:
        return group.gid in self._counts

    def __iter__(self) -> Iterator[Group]:
        """The indexed groups in order; groups may leave meanwhile (those not reached yet
        are not yielded) or come (those after the last one yielded are)."""
        entries = self._sorted
        i = self._head
        moves = self._moves
        last: Group | None = None
        while True:
            if moves != self._moves:
                moves = self._moves
                i = (self._head if last is None
                     else bisect_right(entries, last.order, lo=self._head, key=_ORDER))
            elif i < self._head:
                i = self._head  # those it passed left by the head
            if i >= len(entries):
                return
            last = entries[i]
            i += 1
            yield last

    @property
    def multi_node(self) -> int:
        """How many indexed groups are multi-node (none of them is in a placement class)."""
        return self._multi_node

    def largest(self) -> Mapping[PlacementClass, int]:
        """Placement class (of groups that are not multi-node) -> its most pending tasks in
        one group. A live view: copy it to keep it across changes."""
        for cls in self._stale:
            self._largest[cls] = max(self._by_class[cls])
        self._stale.clear()
        return self._largest

    def shortest_mean(self) -> float | None:
        """The shortest mean duration of an indexed group that ran tasks (None: none did)."""
        heap = self._by_mean
        while heap and self._means.get(heap[0][1]) != heap[0][0]:
            heappop(heap)
        return heap[0][0] if heap else None

    def update(self, group: Group) -> None:
        """Follow the group's pending count and mean duration (it is in the core)."""
        self._set(group, group.pending)

    def remove(self, group: Group) -> None:
        """The group left the core."""
        self._set(group, 0)

    def _set(self, group: Group, pending: int) -> None:
        gid = group.gid
        old = self._counts.get(gid, 0)
        if pending != old:
            if not group.multi_node:
                self._recount(group.placement_key, old, pending)
            if not old:
                self._counts[gid] = pending
                self._multi_node += group.multi_node
                self._insert(group)
            elif not pending:
                del self._counts[gid]
                self._multi_node -= group.multi_node
                self._take_out(group)
            else:
                self._counts[gid] = pending
        mean = group.mean_duration if pending else None
        if mean is None:
            if gid in self._means:
                del self._means[gid]
        elif self._means.get(gid) != mean:
            self._means[gid] = mean
            heap = self._by_mean
            heappush(heap, (mean, gid))
            if len(heap) > 2 * len(self._means) + 64:
                heap[:] = [(m, g) for g, m in self._means.items()]
                heapify(heap)

    def _recount(self, cls: PlacementClass, old: int, new: int) -> None:
        counts = self._by_class.get(cls)
        if new:
            if counts is None:
                counts = self._by_class[cls] = {}
            counts[new] = counts.get(new, 0) + 1
            if new > self._largest.get(cls, 0):
                self._largest[cls] = new  # above every other count, and so the largest
                self._stale.discard(cls)
        if old:
            assert counts is not None
            left = counts[old] - 1
            if left:
                counts[old] = left
                return
            del counts[old]
            if not counts:
                del self._by_class[cls], self._largest[cls]
                self._stale.discard(cls)
            elif old == self._largest[cls]:
                self._stale.add(cls)

    def _insert(self, group: Group) -> None:
        entries = self._sorted
        if self._head == len(entries) or entries[-1].order < group.order:
            entries.append(group)
        else:
            insort(entries, group, lo=self._head, key=_ORDER)
            self._moves += 1

    def _take_out(self, group: Group) -> None:
        entries = self._sorted
        head = self._head
        if entries[head] is group:
            head += 1
            if head == len(entries):
                entries.clear()
                head = 0
                self._moves += 1
            elif head >= 64 and 2 * head >= len(entries):
                del entries[:head]
                head = 0
                self._moves += 1
            self._head = head
            return
        at = bisect_left(entries, group.order, lo=head, key=_ORDER)
        assert entries[at] is group, (group.gid, at)
        del entries[at]
        self._moves += 1

    def check(self, groups: Iterable[Group]) -> None:
        """The index is what a recount of the core's groups makes of them."""
        pending = sorted((g for g in groups if g.pending), key=_ORDER)
        assert self._sorted[self._head:] == pending, "index: not the groups with pending tasks"
        assert list(self) == pending
        assert self._counts == {g.gid: g.pending for g in pending}, "index: pending counts"
        largest: dict[PlacementClass, int] = {}
        by_class: dict[PlacementClass, dict[int, int]] = {}
        for g in pending:
            if not g.multi_node:
                key = g.placement_key
                largest[key] = max(largest.get(key, 0), g.pending)
                counts = by_class.setdefault(key, {})
                counts[g.pending] = counts.get(g.pending, 0) + 1
        assert by_class == self._by_class, "index: pending counts by class"
        assert all(self._largest[c] >= largest[c] for c in self._stale), "index: stale class"
        assert dict(self.largest()) == largest, "index: largest pending by class"
        assert self._multi_node == sum(g.multi_node for g in pending), "index: multi-node"
        means = {g.gid: g.ran_time / g.ran for g in pending if g.ran}
        assert self._means == means, "index: mean durations"
        assert self.shortest_mean() == min(means.values(), default=None), "index: shortest"


@mutable
class Worker:
    wid: WorkerId
    hostname: str
    resources: ResourceDescriptor
    group: str
    deadline: float | None  # server-clock time at which the worker ends; None = never
    totals: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)  # assigned + running
    # key -> (gid, variant): sent but not started / running / stolen for us and in flight
    assigned: dict[TaskKey, Placed] = field(default_factory=dict)
    running: dict[TaskKey, Placed] = field(default_factory=dict)
    # key -> thief or None
    retracting: dict[TaskKey, WorkerId | None] = field(default_factory=dict)
    incoming: dict[TaskKey, Placed] = field(default_factory=dict)
    # key -> (gid, variant): sent early, before its dependencies (all on this worker) finished;
    # the node starts it once they ended there. Not committed: it takes nothing from the
    # worker's room until the core releases it (``reactor._task_done`` moves it to assigned).
    early: dict[TaskKey, Placed] = field(default_factory=dict)
    sent_groups: set[GroupId] = field(default_factory=set)
    amounts_cache: dict[Placed, dict[str, int] | None] = field(default_factory=dict)
    fitting: dict[GroupId, tuple[int, ...]] = field(default_factory=dict)  # gid -> variants
    reserved_for: TaskKey | None = None  # key of the multi-node task this worker belongs to
    min_utilization: float = 0.0  # spec/resources.md §2.2
    last_seen: float = 0.0
    # The core's index of workers by fill, told of every change of ``committed`` (``commit``).
    room: RoomIndex | None = field(default=None, repr=False, compare=False)
    cpu_room: RoomIndex | None = field(default=None, repr=False, compare=False)  # by CPUs
    _sized: list[tuple[str, int]] = field(init=False, repr=False)  # pools with a total

    def __post_init__(self) -> None:
        self.totals = self.resources.totals()
        self.committed = dict.fromkeys(self.totals, 0)
        self._sized = [(name, total) for name, total in self.totals.items() if total > 0]

    def remaining(self, now: float) -> float | None:
        return None if self.deadline is None else self.deadline - now

    def forget_groups(self, live: dict[GroupId, Group]) -> None:
        """Drop what was cached of groups that are over and hold nothing here."""
        held = {p[0] for p in (*self.assigned.values(), *self.running.values(),
                               *self.incoming.values(), *self.early.values())}

        def kept(gid: GroupId) -> bool:
            return gid in live or gid in held

        self.sent_groups = {g for g in self.sent_groups if kept(g)}
        self.fitting = {g: v for g, v in self.fitting.items() if kept(g)}
        self.amounts_cache = {p: a for p, a in self.amounts_cache.items() if kept(p[0])}

    def variants_for(self, group: Group) -> tuple[int, ...]:
        """Indices of the group's variants that can ever run here, in order of preference."""
        fitting = self.fitting.get(group.gid)
        if fitting is None:
            fitting = tuple(v for v in range(len(group.request.variants))
                            if self.amounts(group, v) is not None)
            self.fitting[group.gid] = fitting
        return fitting

    def amounts(self, group: Group, variant: int) -> dict[str, int] | None:
        """What one task of the group takes here with this variant (None: never fits)."""
        placed = (group.gid, variant)
        if placed not in self.amounts_cache:
            v = group.request.variants[variant]
            self.amounts_cache[placed] = None if v.n_nodes else v.amount_on(self.totals)
        return self.amounts_cache[placed]

    def amounts_of(self, placed: Placed) -> dict[str, int]:
        """What a placed task holds; known even after its group is gone (canceled)."""
        amounts = self.amounts_cache.get(placed)
        assert amounts is not None, placed
        return amounts

    def commit(self, amounts: dict[str, int], count: int) -> None:
        """Hold (count > 0) or free (< 0) ``count`` times these amounts: every change of
        ``committed`` comes through here, so that the room index follows it."""
        for name, amount in amounts.items():
            self.committed[name] += count * amount
        if self.room is not None:
            self.room.update(self)
        if self.cpu_room is not None:
            self.cpu_room.update(self)

    def fill(self, pool: str | None = None) -> float:
        """The least committed share of any of its pools (or of ``pool``; infinite without
        it): a task that takes something of a pool fits within ``factor`` x the totals only
        where that pool's share is below ``factor``, and so only if this is."""
        if pool is not None:
            total = self.totals.get(pool, 0)
            return self.committed[pool] / total if total > 0 else math.inf
        if len(self._sized) == 1:  # CPUs alone, most workers
            name, total = self._sized[0]
            return self.committed[name] / total
        return min((self.committed[name] / total for name, total in self._sized),
                   default=math.inf)


class RoomIndex:
    """The core's workers ordered by ``Worker.fill``, so that a scheduling pass looks only at
    those that may have room rather than at every worker: with 100 busy one-CPU workers, a scan
    of all of them (twice, with prefill) on every task's end was most of the server's CPU a
    task. Entries are (fill, worker id), sorted; a change costs a bisection and a move of the
    list's tail in C."""

    def __init__(self, pool: str | None = None) -> None:
        self.pool = pool  # the share of this pool alone (None: the least of any pool's)
        self._entries: list[tuple[float, WorkerId]] = []
        self._fills: dict[WorkerId, float] = {}
        # ``below``'s answers since the last change: a pass asks the same few questions
        # several times (room left? who has it? who may steal?).
        self._answers: dict[float, list[WorkerId]] = {}

    def update(self, worker: Worker) -> None:
        fill = worker.fill(self.pool)
        old = self._fills.get(worker.wid)
        if old == fill:
            return
        if old is not None:
            del self._entries[bisect_left(self._entries, (old, worker.wid))]
        self._fills[worker.wid] = fill
        insort(self._entries, (fill, worker.wid))
        self._answers.clear()

    def remove(self, wid: WorkerId) -> None:
        old = self._fills.pop(wid, None)
        if old is not None:
            del self._entries[bisect_left(self._entries, (old, wid))]
            self._answers.clear()

    def below(self, factor: float) -> list[WorkerId]:
        """The workers whose fill is below ``factor``, by id: every worker with room at that
        factor for a task that takes something is one of them. Not to be changed."""
        answer = self._answers.get(factor)
        if answer is None:
            end = bisect_left(self._entries, (factor, WorkerId(0)))  # ids start at 1
            answer = self._answers[factor] = sorted(wid for _fill, wid in self._entries[:end])
        return answer

    def check(self, workers: Mapping[WorkerId, Worker]) -> None:
        assert self._fills == {wid: w.fill(self.pool) for wid, w in workers.items()}, \
            "room index"
        assert self._entries == sorted((f, w) for w, f in self._fills.items()), "room order"


@mutable
class Core:
    # Every unfinished group (``register`` and ``drop_group``), and those of them with pending
    # tasks, in scheduling order.
    groups: dict[GroupId, Group] = field(default_factory=dict)
    pending: PendingGroups = field(default_factory=PendingGroups)
    # How many of the groups have each priority, and each longest time request: a pass reads
    # their extremes without a scan of every group.
    priorities: dict[int, int] = field(default_factory=dict)
    longest_times: dict[float, int] = field(default_factory=dict)
    # Workers by id, in the order they came (ids grow): ``add_worker``, ``remove_worker``.
    workers: dict[WorkerId, Worker] = field(default_factory=dict)
    room: RoomIndex = field(default_factory=RoomIndex)
    cpu_room: RoomIndex = field(default_factory=lambda: RoomIndex(CPUS))
    cpuless_groups: int = 0  # registered groups that do not take CPUs (``Group.takes_cpus``)
    # The workers that take whole task sets (``min_utilization``), and how many workers have
    # a deadline: a pass reads both without a scan of every worker.
    set_takers: dict[WorkerId, Worker] = field(default_factory=dict)
    with_deadline: int = 0
    next_worker_id: WorkerId = WorkerId(1)
    needs_scheduling: bool = False
    # per-task dependencies (job files): unfinished prerequisites, and who waits on a task
    deps_waiting: dict[TaskKey, int] = field(default_factory=dict)
    dependants: dict[TaskKey, list[TaskKey]] = field(default_factory=dict)
    blocked_group: dict[TaskKey, GroupId] = field(default_factory=dict)  # blocked key -> gid
    # Blocked tasks sent early to the worker that holds their last unfinished prerequisite
    # (key -> that worker; ``Worker.early``), at most ``early_per_cpu`` x its CPUs a worker
    # (and one a CPU of one task's dependants: ``scheduler.place_early``); 0 sends none early.
    # Eight a CPU keep a chain's node several steps ahead, each queued behind the one before
    # on its executor, without waiting for the server's answer to each step's end; the node
    # asks for more once half of them ran (hqshm/node/core.py, CHAIN_DEPTH).
    early: dict[TaskKey, WorkerId] = field(default_factory=dict)
    early_per_cpu: float = 8.0
    # group barriers (--after): prerequisite key -> groups waiting for it
    barrier_dependants: dict[TaskKey, list[GroupId]] = field(default_factory=dict)
    # multi-node tasks: key -> the workers it holds, its root (which runs it) first
    multinode: dict[TaskKey, list[WorkerId]] = field(default_factory=dict)
    # Tasks a restored server found running on a node that reconnects after losing its server
    # (--on-server-lost reconnect): key -> (gid, instance, deadline). Counted in their group's
    # ``active`` but not pending: the node takes them back when it registers again
    # (``reactor.adopt``), or they run again after the deadline (``reactor.expire_orphans``).
    orphans: dict[TaskKey, tuple[GroupId, InstanceId, float]] = field(default_factory=dict)
    # After a restore, nothing is assigned until this time or until the nodes that reconnect
    # (``reconnecting``, counted down as they register again) are all back: a task such a node
    # started without the news reaching the journal is still pending here, and must be taken
    # back from the node, not run a second time under the same instance.
    paused_until: float = 0.0
    reconnecting: int = 0
    # Groups over since the workers' caches were last swept of them (``drop_group``).
    dropped: int = 0
    # What the last scheduling pass learnt, so that the next one may be skipped: a pass that
    # ended with no room for any class of waiting task (a placement class: priority and
    # request) stays right until room frees, pending tasks change, or a group of another class
    # comes. ``dirty`` is any change but new groups, which are listed instead.
    dirty: bool = True
    new_groups: list[Group] = field(default_factory=list)
    full_classes: frozenset[tuple[int, str]] | None = None

    def add_worker(self, worker: Worker) -> None:
        """A new worker, with an id above every other (``workers`` stays in id order)."""
        self.workers[worker.wid] = worker
        worker.room, worker.cpu_room = self.room, self.cpu_room
        self.room.update(worker)
        self.cpu_room.update(worker)
        if worker.min_utilization > 0:
            self.set_takers[worker.wid] = worker
        self.with_deadline += worker.deadline is not None

    def remove_worker(self, wid: WorkerId) -> Worker | None:
        worker = self.workers.pop(wid, None)
        if worker is not None:
            worker.room = worker.cpu_room = None
            self.room.remove(wid)
            self.cpu_room.remove(wid)
            self.set_takers.pop(wid, None)
            self.with_deadline -= worker.deadline is not None
        return worker

    def changed(self) -> None:
        """Room or pending tasks changed: the next pass must look at everything."""
        self.needs_scheduling = True
        self.dirty = True

    def register(self, group: Group) -> None:
        """The group is in the core (new, or back to run a task again); see ``drop_group``."""
        if group.gid in self.groups:
            return
        self.groups[group.gid] = group
        _count(self.priorities, group.priority, +1)
        _count(self.longest_times, group.longest_time, +1)
        self.cpuless_groups += not group.takes_cpus
        group.index = self.pending
        self.pending.update(group)

    def group_added(self, group: Group) -> None:
        """A new group, its tasks and barrier set up: it is registered and waits for a pass."""
        self.register(group)
        self.needs_scheduling = True
        self.new_groups.append(group)

    def nothing_new_fits(self) -> bool:
        """Whether a pass would place nothing: the last one found every class full, and
        since then only groups of those classes came (a full cluster under a stream of
        submits then costs O(1) a submit, not a scan of every waiting group)."""
        full = self.full_classes
        return (not self.dirty and full is not None
                and all(not g.multi_node and g.placement_key in full for g in self.new_groups))
    # Groups dropped this turn, per worker that was sent them: one ``ForgetGroups`` a worker
    # at the end of the turn (``reactor.send_forgets``).
    forgetting: dict[WorkerId, set[GroupId]] = field(default_factory=dict)

    def drop_group(self, gid: GroupId) -> None:
        """A group is over. Every worker caches what the groups it was offered take there;
        a server runs millions of groups in its life (one per single-task job), so those
        caches are swept once as many groups ended as are left (amortised O(1) a group).
        The nodes it was sent are told to forget it too, at the end of the turn."""
        group = self.groups.pop(gid, None)
        if group is not None:
            _count(self.priorities, group.priority, -1)
            _count(self.longest_times, group.longest_time, -1)
            self.cpuless_groups -= not group.takes_cpus
            self.pending.remove(group)
            group.index = None
            self._forget_on_workers(group)
        self.dropped += 1
        if self.dropped > max(SWEEP_AFTER_GROUPS, len(self.groups)):
            self.dropped = 0
            for worker in self.workers.values():
                worker.forget_groups(self.groups)

    def _forget_on_workers(self, group: Group) -> None:
        """Queue the group's forgetting on every worker it was sent to; a later assignment
        there defines it again (or takes the forgetting back, within the same turn)."""
        for wid in group.sent_to:
            worker = self.workers.get(wid)
            if worker is not None and group.gid in worker.sent_groups:
                worker.sent_groups.discard(group.gid)
                self.forgetting.setdefault(wid, set()).add(group.gid)
        group.sent_to.clear()

    def define_on(self, worker: Worker, group: Group) -> bool:
        """Record that ``worker`` knows ``group``; False when it must be sent a DefineGroup
        (True: it knew it already, or it still does, its forgetting not sent yet)."""
        if group.gid in worker.sent_groups:
            return True
        worker.sent_groups.add(group.gid)
        group.sent_to.append(worker.wid)
        pending = self.forgetting.get(worker.wid)
        if pending is not None and group.gid in pending:
            pending.discard(group.gid)
            return True
        return False

    def check(self) -> None:
        """Invariants; tests call it at the end of every scenario."""
        seen: set[TaskKey] = set()
        for worker in self.workers.values():
            for key in list(worker.assigned) + list(worker.running):
                assert key not in seen, f"task {key} is in two places"
                seen.add(key)
            expected = dict.fromkeys(worker.totals, 0)
            held = [*worker.assigned.values(), *worker.running.values(),
                    *worker.incoming.values()]
            for placed in held:
                for name, amount in worker.amounts_of(placed).items():
                    expected[name] += amount
            assert expected == worker.committed, (expected, worker.committed)
            for key in worker.early:
                assert key not in seen, f"early task {key} is also placed"
                assert self.early.get(key) == worker.wid, f"early task {key} not indexed"
                assert key in self.deps_waiting, f"early task {key} is not blocked"
            assert len(worker.early) <= early_bound(self, worker), "too many early tasks"
            assert worker.room is self.room, f"worker {worker.wid} is not indexed"
            assert worker.cpu_room is self.cpu_room, f"worker {worker.wid} is not indexed"
        assert list(self.workers) == sorted(self.workers), "workers out of id order"
        self.room.check(self.workers)
        self.cpu_room.check(self.workers)
        assert self.cpuless_groups == sum(not g.takes_cpus for g in self.groups.values())
        assert self.set_takers == {w: x for w, x in self.workers.items() if x.min_utilization > 0}
        assert self.with_deadline == sum(w.deadline is not None for w in self.workers.values())
        assert sum(len(w.early) for w in self.workers.values()) == len(self.early), "early"
        for group in self.groups.values():
            assert not seen.intersection(group.requeued), "requeued task is also placed"
            assert not self.blocked_group.keys() & set(group.requeued), "blocked task is ready"
        for key, count in self.deps_waiting.items():
            assert count > 0 and key in self.blocked_group, key
        for group in self.groups.values():
            assert group.index is self.pending, f"group {group.gid} is not indexed"
        self.pending.check(self.groups.values())
        priorities: dict[int, int] = {}
        longest_times: dict[float, int] = {}
        for group in self.groups.values():
            _count(priorities, group.priority, +1)
            _count(longest_times, group.longest_time, +1)
        assert (priorities, longest_times) == (self.priorities, self.longest_times)


def early_bound(core: Core, worker: Worker) -> int:
    """How many tasks may wait on the worker for their dependencies (``Worker.early``): so
    many per CPU, at least one (none when ``early_per_cpu`` is 0), so that a worker never
    hoards a graph."""
    if core.early_per_cpu <= 0:
        return 0
    return max(1, int(core.early_per_cpu * worker.totals.get("cpus", 0) / FRACTIONS))


def _count(counts: dict[T, int], value: T, sign: int) -> None:
    left = counts.get(value, 0) + sign
    if left:
        counts[value] = left
    else:
        del counts[value]
