"""Which pending task goes to which worker: prefill in batches, then work stealing.

A pure function of the core's state and ``now``; it writes its decisions to the outbox.

Three passes, in order of group priority (higher priority, then older job, then older submit):

1. **Fill**: give each worker what it can start right now (its free resources). Lower-priority
   groups may use capacity that higher-priority groups cannot use, so different resource
   shapes never block each other. But a worker where a higher-priority task waits for pools
   that are busy now holds those pools for it (``Holds``): lower priorities get nothing there
   that would use them, so they cannot overtake it indefinitely as resources free up.
2. **Prefill**: queue more on each worker, so a node always has its next task at hand when one
   ends instead of waiting a round trip to the server. One extra round of tasks for long or
   unknown tasks; for short ones, enough to cover ``PREFILL_BUFFER`` seconds (at most
   ``MAX_PREFILL`` rounds), since nodes batch their reports for a few milliseconds.
3. **Steal**: a worker that still has free capacity while others hold queued, unstarted tasks
   it could run asks them to give some back (``RetractTasks``); when they come back they go
   straight to it. Only unstarted tasks move, so a task never runs twice for one instance.
4. **Early**: a blocked task whose last unfinished prerequisite is placed on a worker (queued,
   running, or itself sent early there) goes to that worker now, with ``after`` naming that
   prerequisite, if its request can run there (``place_early``): the node starts it when the
   prerequisite ended well, without a round trip through the server, which is what a chain of
   tasks waits for at every step. It takes no room until its prerequisite finished, and a
   worker holds at most ``Core.early_per_cpu`` of them per CPU (``core.early_bound``), and one
   per CPU of any one task's dependants.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

from .core import Core, Group, Outbox, Worker, early_bound
from .frozen import field, mutable
from .ids import TaskKey, WorkerId
from .reactor import assign, assign_early, assign_multinode, reserve, retract
from .resources import FRACTIONS
from .utilization import Candidate, choose

# Queue depth beyond free capacity, as a multiple of the worker's capacity. One extra round
# hides the server's round trip for tasks that take a while; short tasks get enough rounds to
# cover PREFILL_BUFFER seconds of work. Deeper queues only give work stealing more to do.
PREFILL = 1.0
PREFILL_BUFFER = 0.05
MAX_PREFILL = 32.0


def prefill_factor(group: Group) -> float:
    """How many rounds of this group's tasks a worker may hold beyond what it runs."""
    return _prefill_for(group.mean_duration)


def _prefill_for(mean: float | None) -> float:
    """Never more for a longer mean: the shortest mean of the waiting groups gives the most
    prefill any of them may want (``schedule``). Whole rounds (at least the buffer): with
    2.5 rounds a full one-CPU worker holds 3 tasks, a share of 3 below the limit of 3.5, so
    the room index offered every full worker to every pass, to find no room for a whole task."""
    if mean is None or mean >= PREFILL_BUFFER:
        return PREFILL
    rounds = min(MAX_PREFILL, max(PREFILL, PREFILL_BUFFER / max(mean, 1e-6)))
    return float(math.ceil(rounds - 1e-9))


def _fit_count(worker: Worker, amounts: dict[str, int], limit_factor: float) -> int:
    """How many more tasks of these amounts fit, with room up to limit_factor x capacity."""
    n: int | None = None
    for name, amount in amounts.items():
        if amount <= 0:
            continue
        room = int(worker.totals.get(name, 0) * limit_factor) - worker.committed.get(name, 0)
        fit = room // amount if room > 0 else 0
        n = fit if n is None else min(n, fit)
    if n is None:
        # A request of nothing (e.g. only zero amounts): one at a time per capacity unit.
        return 1 if not worker.assigned and not worker.running else 0
    return n


def _eligible(worker: Worker, group: Group, variant: int, now: float) -> dict[str, int] | None:
    """What a task of the group takes here with this variant, if it may run here now."""
    if worker.reserved_for is not None:
        return None  # held whole by a multi-node task
    amounts = worker.amounts(group, variant)
    if amounts is None:
        return None
    remaining = worker.remaining(now)
    if remaining is not None and group.request.variants[variant].min_time > remaining:
        return None
    return amounts


def _short_pools(worker: Worker, group: Group, now: float) -> set[str]:
    """Pools too busy now for a task of the group here (none if some variant fits now)."""
    short: set[str] = set()
    for variant in worker.variants_for(group):
        amounts = _eligible(worker, group, variant, now)
        if amounts is None:
            continue
        lacking = {name for name, amount in amounts.items()
                   if amount > worker.totals.get(name, 0) - worker.committed.get(name, 0)}
        if not lacking:
            return set()
        short |= lacking
    return short


def _queued_holds(core: Core, worker: Worker) -> dict[str, int]:
    """Over-committed pools of a worker, with the best priority of its queued tasks using them.

    Tasks queued on a worker beyond its capacity start as running ones end; the best of them
    wait for those pools. One pass over the worker's queue (bounded by prefill, not by the
    tasks waiting on the server), at most once a scheduling pass.
    """
    over = {name for name, total in worker.totals.items()
            if worker.committed.get(name, 0) > total}
    held: dict[str, int] = {}
    if not over:
        return held
    for placed in set(worker.assigned.values()):
        group = core.groups.get(placed[0])
        if group is None:
            continue
        for name, amount in worker.amounts_of(placed).items():
            if amount > 0 and name in over:
                _raise(held, name, group.priority)
    return held


def _raise(held: dict[str, int], name: str, priority: int) -> None:
    if held.get(name, priority) <= priority:
        held[name] = priority


@mutable
class Holds:
    """Pools of each worker held, during one scheduling pass, for higher-priority waiting tasks.

    A group that has tasks waiting for a worker's busy pools (queued there beyond what runs,
    or pending with no room left for them) holds those pools there at its priority: groups of
    lower priority take nothing on that worker that uses them, so the waiting tasks get the
    resources as they free up (HQ's rule). Other pools, and workers the waiting group can never
    use, stay open to everyone. Nothing is held from the best priority, so a cluster with one
    priority level never looks at any of this.
    """

    core: Core
    top: int = 0  # the best priority of any unfinished group: never held back
    bottom: int = 0  # the worst: holds for it would hold nothing back
    pools: dict[WorkerId, dict[str, int]] = field(default_factory=dict)
    scanned: set[WorkerId] = field(default_factory=set)  # queues already looked at

    def __post_init__(self) -> None:
        priorities = self.core.priorities  # of every group, counted
        self.top, self.bottom = max(priorities, default=0), min(priorities, default=0)

    def blocks(self, worker: Worker, group: Group, amounts: dict[str, int]) -> bool:
        """Whether these amounts of the group would use pools held here for better groups."""
        if group.priority >= self.top:
            return False
        used = [name for name, amount in amounts.items() if amount > 0]
        held = self.pools.setdefault(worker.wid, {})
        if worker.wid not in self.scanned and any(
                worker.committed.get(name, 0) > worker.totals.get(name, 0) for name in used):
            self.scanned.add(worker.wid)
            for name, priority in _queued_holds(self.core, worker).items():
                _raise(held, name, priority)
        return any(held.get(name, group.priority) > group.priority for name in used)

    def hold(self, worker: Worker, group: Group, now: float) -> None:
        """The group waits here: hold the pools it is short of for it."""
        if group.priority <= self.bottom:
            return
        held = self.pools.setdefault(worker.wid, {})
        for name in _short_pools(worker, group, now):
            _raise(held, name, group.priority)


def schedule(core: Core, out: Outbox, now: float) -> None:
    if now < core.paused_until:
        return  # still needs scheduling: the loop's timer asks again when the pause ends
    core.needs_scheduling = False
    if not core.workers:
        return  # nothing to place, hold, steal or retract: waiting jobs cost nothing per turn
    workers = list(core.workers.values())  # in id order
    if core.nothing_new_fits():
        core.new_groups.clear()
        retract_expired(core, out, workers, now)
        return
    core.dirty = False
    core.new_groups.clear()
    # The groups with pending tasks, in order, kept so by the core as counts change: a pass
    # walks as far as it places, not over every waiting group (collecting and sorting them
    # all was 40% of the server's time per job with thousands of single-task jobs waiting).
    # During a pass pending counts only fall: a group that runs out leaves the index, and
    # neither the rest of this walk nor a later one reaches it.
    groups = core.pending
    # Placement class -> its most pending tasks in one group, as the pass starts.
    largest = dict(groups.largest())
    multi_node = groups.multi_node > 0
    # Groups that never ran a task prefill PREFILL rounds; the shortest mean, the most.
    most_prefill = max(PREFILL, _prefill_for(groups.shortest_mean()))
    holds = Holds(core)
    # Whether each pass ended with no room for any class: then so will the next, until
    # something changes (``Core.nothing_new_fits``).
    all_full = not multi_node and not core.set_takers
    for prefill in (False, True):
        # Room only shrinks while a pass assigns: once no worker has any, the groups left
        # cannot be placed (nor need holds, which only later placements and steals read, and
        # a steal needs room too), so a full cluster costs O(workers) per turn, not
        # O(groups x workers): 3,500 waiting single-task jobs took 27 ms a submit.
        factor = 1.0 + most_prefill if prefill else 1.0
        if not _room_left(core, factor):
            continue
        if not groups:
            all_full = False  # room, and nothing waits: whatever comes may fit
        # Room can stay in pools nobody asks for (a worker's memory), so the stop above does
        # not end a pass that only single-CPU jobs wait for. A group that placed nothing
        # tells the same of every later group with its request and priority and no more
        # pending tasks (same holds, less room): 650 waiting single-task jobs were 650 futile
        # placements on every turn, and the server fell behind a steady 100 jobs/s. Once
        # every class is full, the rest of the list is not even looked at.
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
                if not _room_left(core, factor):
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
    for worker in core.set_takers.values():
        fill_min_utilization(core, out, worker, groups, now)
    steal(core, out, workers, now, holds)
    retract_expired(core, out, workers, now)
    place_early(core, out, workers, now)


def place_early(core: Core, out: Outbox, workers: Sequence[Worker], now: float) -> None:
    """Send blocked tasks early to the worker that holds their one unfinished prerequisite.

    Only tasks with one prerequisite left (a chain's next step, or the last of several) are
    sent: the prerequisite is then the worker's task whose dependants it is. Tasks waiting for
    tasks on several workers are released by the server as before. The walk looks at each
    worker's placed tasks only while the core holds dependencies and the worker has room for
    early tasks; it costs O(tasks placed) a pass then, bounded by prefill."""
    if not core.dependants or core.early_per_cpu <= 0:
        return
    for worker in workers:
        bound = early_bound(core, worker)
        if (len(worker.early) >= bound or worker.reserved_for is not None
                or worker.min_utilization > 0):
            continue
        placed = deque(k for k in (*worker.running, *worker.assigned, *worker.early)
                       if k not in worker.retracting)
        # Of one task's dependants, at most one a CPU: a chain goes deep (its node runs each
        # step behind the one before), a fan-out is not hoarded by the worker that runs its
        # root while others idle.
        per_task = max(1, worker.totals.get("cpus", 0) // FRACTIONS)
        while placed and len(worker.early) < bound:
            key = placed.popleft()
            dependants = core.dependants.get(key, ())
            here = sum(core.early.get(dependant) == worker.wid for dependant in dependants)
            for dependant in dependants:
                if (core.deps_waiting.get(dependant) != 1 or dependant in core.early
                        or len(worker.early) >= bound or here >= per_task):
                    continue
                group = core.groups.get(core.blocked_group[dependant])
                if group is None or group.multi_node or group.barrier:
                    continue
                variant = next((v for v in worker.variants_for(group)
                                if _eligible(worker, group, v, now) is not None), None)
                if variant is None:
                    continue
                assign_early(core, out, worker, group, dependant, variant, (key,))
                here += 1
                placed.append(dependant)  # a chain goes on from it, up to the bound


def place(core: Core, out: Outbox, group: Group, workers: Sequence[Worker], holds: Holds,
          prefill: bool, now: float) -> int:
    """Give the group's pending tasks to workers with room (free room, or queue room when
    prefilling), then hold pools for it where it waits: on workers where its tasks were queued
    beyond what can start, and on as many others as it still has pending tasks. Returns how
    many it assigned."""
    if group.pending == 0:
        return 0
    before = group.pending
    limit = 1.0 + prefill_factor(group) if prefill else 1.0
    if group.takes_room and group.priority <= holds.bottom:
        # Workers without room get nothing, and no holds from a group of the lowest priority.
        # A group that takes CPUs looks only where CPUs are left, whatever other pools have.
        room = core.cpu_room if group.takes_cpus else core.room
        workers = [core.workers[wid] for wid in room.below(limit)]
    waiting: list[Worker] = []
    for worker in workers:
        if worker.min_utilization > 0:
            continue  # chooses its whole set in fill_min_utilization
        usable = queued = False
        # Earlier variants first; a later one takes what the earlier left unused.
        for variant in worker.variants_for(group):
            if group.pending == 0:
                break
            amounts = _eligible(worker, group, variant, now)
            if amounts is None or holds.blocks(worker, group, amounts):
                continue
            usable = True
            n = min(group.pending, _fit_count(worker, amounts, limit))
            if n > 0:
                assign(core, out, worker, group, group.take(n), variant)
                queued = queued or prefill
        if queued:
            holds.hold(worker, group, now)
        elif usable:
            waiting.append(worker)
    for worker in waiting[:group.pending]:
        holds.hold(worker, group, now)
    return before - group.pending


def fill_min_utilization(core: Core, out: Outbox, worker: Worker, groups: Iterable[Group],
                         now: float) -> None:
    """Start the most valuable set of tasks that keeps the worker busy enough, or none."""
    total = worker.totals.get("cpus", 0)
    used = worker.committed.get("cpus", 0)
    candidates = []
    options: list[tuple[Group, int]] = []
    for group in groups:
        if group.pending == 0 or group.multi_node:
            continue
        for variant in worker.variants_for(group):
            amounts = _eligible(worker, group, variant, now)
            if amounts is None or not amounts.get("cpus"):
                continue
            count = min(group.pending, _fit_count(worker, amounts, 1.0))
            if count > 0:
                weight = group.request.variants[variant].weight
                candidates.append(Candidate(len(options), amounts["cpus"], weight, count))
                options.append((group, variant))
            break
    chosen = choose(candidates, total - used, used, int(worker.min_utilization * total))
    for index, count in chosen.items():
        group, variant = options[index]
        assign(core, out, worker, group, group.take(count), variant)


def steal(core: Core, out: Outbox, workers: Sequence[Worker], now: float,
          holds: Holds | None = None) -> None:
    """Let idle capacity pull queued tasks from loaded workers (never into held pools)."""
    if holds is None:
        holds = Holds(core)
    # With every group taking CPUs, only a worker with CPUs left can steal anything.
    room = core.room if core.cpuless_groups else core.cpu_room
    thieves = [thief for thief in (core.workers[wid] for wid in room.below(1.0))
               # whole sets only (fill_min_utilization), or no room to steal for
               if thief.min_utilization <= 0 and _has_room(thief)]
    wanted = _stealable_groups(core, workers) if thieves else []
    for thief in thieves:
        # Room in a pool that no queued task asks for (a node's memory, while its CPUs are
        # all promised) is room for nothing here: without this look at the groups queued,
        # every such worker walked every other worker's queue on every pass (on 8 one-CPU
        # nodes with memory, half the server's time).
        if not any(_variant_with_room(thief, group, now, holds) is not None
                   for group in wanted):
            continue
        for victim in sorted(workers, key=lambda w: -_stealable(w)):
            if victim is thief or _stealable(victim) == 0:
                continue
            keys: list[TaskKey] = []
            candidates = [
                (k, p[0]) for k, p in reversed(victim.assigned.items())
                if k not in victim.retracting
            ]
            budget = (len(candidates) + 1) // 2  # at most half of what the victim has queued
            for key, gid in candidates:
                if len(keys) >= budget:
                    break
                group = core.groups.get(gid)
                if group is None:
                    continue
                variant = _variant_with_room(thief, group, now, holds)
                if variant is None:
                    continue
                # Reserve room on the thief now, so that neither this pass nor the next ones
                # promise it more than it can start while the retraction is in flight.
                reserve(core, thief, key, gid, variant)
                keys.append(key)
            if keys:
                retract(out, victim, keys, thief.wid)
            if not _has_room(thief):
                break


def _stealable_groups(core: Core, workers: Sequence[Worker]) -> list[Group]:
    """The groups of the tasks that could be stolen now (queued where they cannot start)."""
    gids = {placed[0] for victim in workers if _stealable(victim)
            for key, placed in victim.assigned.items() if key not in victim.retracting}
    return [group for gid in gids if (group := core.groups.get(gid)) is not None]


def _variant_with_room(worker: Worker, group: Group, now: float, holds: Holds) -> int | None:
    for variant in worker.variants_for(group):
        amounts = _eligible(worker, group, variant, now)
        if (amounts is not None and _fit_count(worker, amounts, 1.0) > 0
                and not holds.blocks(worker, group, amounts)):
            return variant
    return None


def place_multinode(core: Core, out: Outbox, group: Group, workers: Sequence[Worker],
                    now: float) -> None:
    """Give each waiting multi-node task N idle workers of one worker group, if there are.

    Only workers with nothing assigned are taken, so a multi-node task waits for whole nodes
    rather than sharing them; every member must live long enough for the time request.
    """
    variant = next(i for i, v in enumerate(group.request.variants) if v.n_nodes > 0)
    wanted = group.request.variants[variant]
    while group.pending:
        free: dict[str, list[Worker]] = {}
        for worker in workers:
            remaining = worker.remaining(now)
            if (worker.reserved_for is None and not worker.assigned and not worker.running
                    and not worker.incoming and not worker.early
                    and (remaining is None or remaining >= wanted.min_time)):
                free.setdefault(worker.group, []).append(worker)
        chosen = next((ws for ws in free.values() if len(ws) >= wanted.n_nodes), None)
        if chosen is None:
            return
        assign_multinode(core, out, chosen[:wanted.n_nodes], group, group.take(1)[0], variant,
                         now)


def _stealable(worker: Worker) -> int:
    """Tasks a worker holds that it cannot start now: only those are worth taking away.

    A worker that was just sent tasks it can start at once (nothing over-committed) is not a
    victim, even though it has not reported them started yet; nor is a multi-node task's node.
    """
    if worker.reserved_for is not None:
        return 0
    if all(worker.committed.get(n, 0) <= t for n, t in worker.totals.items()):
        return 0
    return len(worker.assigned) - len(worker.retracting)


def _has_room(worker: Worker, factor: float = 1.0) -> bool:
    """Whether some resource of the worker is committed below ``factor`` x its total (1.0:
    free room; more: room to queue)."""
    return any(worker.committed.get(n, 0) < int(t * factor) for n, t in worker.totals.items())


def _any_room(workers: Sequence[Worker], factor: float) -> bool:
    return any(_has_room(worker, factor) for worker in workers)


def _room_left(core: Core, factor: float) -> bool:
    """``_any_room`` of every worker, looking only at those the room index says may have it."""
    return any(_has_room(core.workers[wid], factor) for wid in core.room.below(factor))


def retract_expired(core: Core, out: Outbox, workers: Sequence[Worker], now: float) -> None:
    """Queued tasks a worker can no longer start in its remaining lifetime go elsewhere."""
    if not core.with_deadline:
        return  # nothing expires: the longest time request (a scan of every group) is moot
    longest = max(core.longest_times, default=0.0)  # of every group, counted
    for worker in workers:
        remaining = worker.remaining(now)
        # A worker that outlives the longest time request holds nothing to give back.
        if remaining is None or remaining >= longest or worker.reserved_for is not None:
            continue
        keys = []
        for key, (gid, variant) in worker.assigned.items():
            if key in worker.retracting:
                continue
            group = core.groups.get(gid)
            if group is not None and group.request.variants[variant].min_time > remaining:
                keys.append(key)
        if keys:
            retract(out, worker, keys, None)
