"""The server's task core reacting to what happens: handlers of nodes' reports, lost workers,
new groups, cancels and retractions.

Handlers are functions of (core, outbox, input, now): no sockets and no clock inside, so tests
drive them directly. They keep every invariant of ``core.Core.check``: a task is in exactly one
place, a worker's committed amounts are what its placed tasks hold, and the index of groups with
pending tasks follows every count they change by hand (``Group.reindex``). Decisions are messages
in the outbox; what happened to tasks goes to the product through ``outbox.events``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from .core import Core, FailedForGood, Group, Outbox, Placed, Worker
from .firstuse import np
from .ids import FIRST_INSTANCE, GroupId, InstanceId, TaskKey, WorkerId, job_of
from .protocol import (
    MAX_FORGET,
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    Failed,
    Finished,
    ForgetGroups,
    ReserveNode,
    Resumed,
    RetractTasks,
    Started,
    StopReason,
    TaskUpdates,
    entry_ranges,
)
from .resources import ResourceDescriptor

logger = logging.getLogger(__name__)


def add_worker(core: Core, hostname: str, resources: ResourceDescriptor, group: str,
               time_limit: float | None, now: float, min_utilization: float = 0.0) -> Worker:
    wid = core.next_worker_id
    core.next_worker_id = WorkerId(wid + 1)
    deadline = None if time_limit is None else now + time_limit
    worker = Worker(wid, hostname, resources, group, deadline, last_seen=now,
                    min_utilization=min_utilization)
    core.add_worker(worker)
    core.changed()
    logger.debug("Worker %d added to the core", wid)
    return worker


def add_group(core: Core, group: Group, deps: Mapping[TaskKey, Sequence[TaskKey]] | None = None,
              after: Sequence[TaskKey] = ()) -> None:
    """Add a group; ``deps`` and ``after`` name only prerequisites that have not finished yet.

    With ``deps`` (per-task prerequisites, job files) every task without any is ready at once
    and the others wait; ``after`` holds the whole group until all those tasks finished.
    """
    if deps is not None:
        group.cursor = len(group.keys)
        for key in group.keys.tolist():
            prerequisites = deps.get(key, ())
            if not prerequisites:
                group.requeued.append(key)
                continue
            core.deps_waiting[key] = len(prerequisites)
            core.blocked_group[key] = group.gid
            for prerequisite in prerequisites:
                core.dependants.setdefault(prerequisite, []).append(key)
    group.barrier = len(after)
    for prerequisite in after:
        core.barrier_dependants.setdefault(prerequisite, []).append(group.gid)
    core.group_added(group)  # registers it, with its pending count as set up here


def assign(core: Core, out: Outbox, worker: Worker, group: Group, keys: list[TaskKey],
           variant: int = 0) -> None:
    """Send tasks to a worker (defining the group on that link first)."""
    if not keys:
        return
    amounts = worker.amounts(group, variant)
    assert amounts is not None
    if not core.define_on(worker, group):
        out.send(worker.wid, DefineGroup(group.gid, group.request, group.priority, group.body))
    placed = (group.gid, variant)
    for key in keys:
        worker.assigned[key] = placed
    worker.commit(amounts, len(keys))
    instances: tuple[InstanceId, ...] = ()
    if group.instances:
        instances = tuple(group.instances.get(k, FIRST_INSTANCE) for k in keys)
        if not any(instances):
            instances = ()
    entries: tuple[bytes, ...] = ()
    if group.entries is not None:
        entries = group.entries_of(keys)
    for start, end in entry_ranges(entries, len(keys)):
        out.send(worker.wid, ComputeTasks(group.gid, tuple(keys[start:end]),
                                          instances[start:end], entries[start:end]))


def assign_early(core: Core, out: Outbox, worker: Worker, group: Group, key: TaskKey,
                 variant: int, after: Sequence[TaskKey]) -> None:
    """Send a blocked task to the worker that holds all of its unfinished prerequisites
    (``after``), before they finished: the node starts it once they ended well there, with no
    round trip through us. It stays blocked here and takes no room (``Worker.early``) until
    they finish (``_task_done``)."""
    if not core.define_on(worker, group):
        out.send(worker.wid, DefineGroup(group.gid, group.request, group.priority, group.body))
    worker.early[key] = (group.gid, variant)
    core.early[key] = worker.wid
    instance = group.instances.get(key, FIRST_INSTANCE)
    entries = (group.entry_of(key),) if group.entries is not None else ()
    out.send(worker.wid, ComputeTasks(group.gid, (key,), (instance,) if instance else (),
                                      entries, after=(tuple(after),)))


def _withdraw_early(core: Core, out: Outbox, worker: Worker, keys: Iterable[TaskKey]) -> None:
    """These tasks leave the worker unfinished (given back, retried): what waits for them
    there early (transitively) is taken back too, to be sent again when it may run."""
    stack = list(keys)
    withdrawn: list[TaskKey] = []
    while stack:
        for dependant in core.dependants.get(stack.pop(), ()):
            if worker.early.pop(dependant, None) is not None:
                del core.early[dependant]
                withdrawn.append(dependant)
                stack.append(dependant)
    if withdrawn:
        out.send(worker.wid, CancelTasks(tuple(withdrawn)))
        core.changed()


def _drop_early(core: Core, out: Outbox | None, key: TaskKey) -> None:
    """An early task is aborted (or its worker is gone): off its worker, which drops it
    (a node keeps a task whose prerequisite failed queued until told)."""
    wid = core.early.pop(key, None)
    worker = core.workers.get(wid) if wid is not None else None
    if worker is not None and worker.early.pop(key, None) is not None and out is not None:
        out.send(worker.wid, CancelTasks((key,)))


def assign_multinode(core: Core, out: Outbox, members: Sequence[Worker], group: Group,
                     key: TaskKey, variant: int, now: float) -> None:
    """Reserve whole workers for one multi-node task; the first (root) runs it."""
    root = members[0]
    placed = (group.gid, variant)
    root.amounts_cache[placed] = {}  # it holds the node as a whole, not amounts of it
    if not core.define_on(root, group):
        out.send(root.wid, DefineGroup(group.gid, group.request, group.priority, group.body))
    root.assigned[key] = placed
    instance = group.instances.get(key, FIRST_INSTANCE)
    entries = (group.entry_of(key),) if group.entries is not None else ()
    out.send(root.wid, ComputeTasks(group.gid, (key,), (instance,) if instance else (),
                                    entries, tuple(w.hostname for w in members)))
    for member in members:
        member.reserved_for = key
        if member is not root:
            out.send(member.wid, ReserveNode(key))
    core.multinode[key] = [w.wid for w in members]
    out.events.task_nodes(key, [w.wid for w in members], now)


def send_forgets(core: Core, out: Outbox) -> None:
    """End of a turn: tell each worker, in one message (parts past MAX_FORGET), the groups
    dropped this turn that it was sent; at thousands of jobs a second, one a group would
    cost a frame each."""
    for wid, gids in core.forgetting.items():
        if not gids or wid not in core.workers:
            continue
        ordered = sorted(gids)
        for at in range(0, len(ordered), MAX_FORGET):
            out.send(wid, ForgetGroups(tuple(ordered[at : at + MAX_FORGET])))
    core.forgetting.clear()


def release_nodes(core: Core, out: Outbox, key: TaskKey) -> None:
    """A multi-node task ended or went back: its workers are free again."""
    for index, wid in enumerate(core.multinode.pop(key, ())):
        worker = core.workers.get(wid)
        if worker is None or worker.reserved_for != key:
            continue
        worker.reserved_for = None
        if index:  # the root knows: its task ended; secondary nodes are told
            out.send(wid, ReserveNode(TaskKey(0)))
    core.changed()


def _release(core: Core, worker: Worker, placed: Placed) -> Group | None:
    """Give back what a task held on a worker; works after its group is gone (canceled)."""
    worker.commit(worker.amounts_of(placed), -1)
    return core.groups.get(placed[0])


def _end(core: Core, group: Group | None) -> None:
    if group is not None:
        group.active -= 1
        if group.active <= 0:
            core.drop_group(group.gid)


def on_task_updates(core: Core, out: Outbox, wid: WorkerId, msg: TaskUpdates,
                    now: float) -> None:
    worker = core.workers.get(wid)
    if worker is None:
        return
    worker.last_seen = now
    started: list[Started] = []
    early: list[Started] = []
    for report in msg.started:
        key = report[0]
        if key in worker.early:
            # Sent early: the node started it after the ends of its prerequisites, which
            # come in this frame (or came before); it counts as started once they are in.
            early.append(report)
            continue
        placed = worker.assigned.pop(key, None)
        if placed is None:
            continue  # canceled meanwhile, or already retracted
        _drop_reservation(core, worker.retracting.pop(key, None), key)
        worker.running[key] = _as_chosen(core, worker, placed, report[3])
        started.append(report)
    if started:
        out.events.tasks_started(wid, started, now)
    if msg.finished:
        # Each end releases its dependants before the next is looked at: a task sent early
        # may end in the same report as its prerequisite, after it.
        finished = []
        freed = _Freed() if len(msg.finished) > 1 else None  # one end: released at once
        for item in msg.finished:
            if _ended(core, out, worker, item, freed):
                finished.append(item)
                _task_done(core, item[0])
        if freed is not None:
            freed.apply(worker)
        if finished:
            out.events.tasks_finished(wid, finished, now)
    if msg.failed:
        failed: list[FailedForGood] = []
        for failure in msg.failed:
            key = failure[0]
            placed = worker.running.get(key) or worker.assigned.get(key)
            # Looked up before _ended, which forgets a group whose last task ended.
            group = core.groups.get(placed[0]) if placed is not None else None
            if placed is None or not _ended(core, out, worker, failure):
                continue
            if failure[6] and group is not None and group.attempts.get(key, 0) < group.retries:
                _withdraw_early(core, out, worker, [key])  # it may run elsewhere next
                _retry(core, out, group, key, now)
            else:
                failed.append(failure[:6])
        if failed:
            out.events.tasks_failed(wid, failed, now)
            _tasks_dead(core, out, [item[0] for item in failed], (), now)
    if early:
        started = []
        for report in early:
            placed = worker.assigned.pop(report[0], None)
            if placed is None:
                continue  # aborted or canceled meanwhile (or, wrongly, not released yet)
            worker.running[report[0]] = _as_chosen(core, worker, placed, report[3])
            started.append(report)
        if started:
            out.events.tasks_started(wid, started, now)
    core.changed()


def _as_chosen(core: Core, worker: Worker, placed: Placed, variant: int) -> Placed:
    """The node may start a task with another variant than we counted: count what it uses."""
    group = core.groups.get(placed[0])
    if variant == placed[1] or group is None or variant >= len(group.request.variants):
        return placed
    chosen = worker.amounts(group, variant)
    if chosen is None:
        return placed  # a variant that never fits here: a confused node; keep our count
    worker.commit(worker.amounts_of(placed), -1)
    worker.commit(chosen, +1)
    return (placed[0], variant)


class _Freed:
    """What the ends in one report give back on their worker, applied once (``apply``): a
    report of thirty ends of one group commits and reindexes once, not thirty times."""

    __slots__ = ("amounts", "groups")

    def __init__(self) -> None:
        # Amounts taken when the task ends: a group dropped meanwhile may leave the cache.
        self.amounts: dict[Placed, tuple[dict[str, int], int]] = {}
        self.groups: dict[GroupId, Group] = {}

    def apply(self, worker: Worker) -> None:
        for amounts, count in self.amounts.values():
            worker.commit(amounts, -count)
        for group in self.groups.values():
            group.reindex()  # its mean duration; nothing if it was dropped


def _ended(core: Core, out: Outbox, worker: Worker, item: Finished | Failed,
           freed: _Freed | None = None) -> bool:
    """Take an ended task off its worker; False if it was no longer there (canceled). With
    ``freed``, what it held goes back when the caller applies that."""
    key = item[0]
    placed = worker.running.pop(key, None)
    if placed is None:
        placed = worker.assigned.pop(key, None)
        if placed is None:
            return False
    _drop_reservation(core, worker.retracting.pop(key, None), key)
    if freed is None:
        group = _release(core, worker, placed)
    else:
        held = freed.amounts.get(placed)
        freed.amounts[placed] = (worker.amounts_of(placed), 1 if held is None else held[1] + 1)
        group = core.groups.get(placed[0])
    if group is not None:
        group.ran += 1
        group.ran_time += max(0.0, item[3] - item[2])
        if freed is None:
            group.reindex()  # its mean duration
        else:
            freed.groups[group.gid] = group
    _end(core, group)
    release_nodes(core, out, key)
    return True


def _retry(core: Core, out: Outbox, group: Group, key: TaskKey, now: float) -> None:
    """Run a task that exited non-zero again, under a new instance id."""
    group.attempts[key] = group.attempts.get(key, 0) + 1
    instance = InstanceId(group.instances.get(key, FIRST_INSTANCE) + 1)
    group.instances[key] = instance
    group.active += 1  # _ended counted it as ended
    core.register(group)  # back, if its last task's failure had ended it
    group.give_back([key])
    out.events.tasks_requeued([key], [instance], now, [group.crashes.get(key, 0)])


def _task_done(core: Core, key: TaskKey) -> None:
    """A task finished: release what waited for it."""
    for dependant in core.dependants.pop(key, ()):
        left = core.deps_waiting.get(dependant)
        if left is None:
            continue
        if left > 1:
            core.deps_waiting[dependant] = left - 1
            continue
        del core.deps_waiting[dependant]
        group = core.groups.get(core.blocked_group.pop(dependant))
        wid = core.early.pop(dependant, None)
        if wid is not None:
            # Sent early: its node starts it now (or did); it is assigned there from now on.
            worker = core.workers[wid]
            placed = worker.early.pop(dependant)
            worker.assigned[dependant] = placed
            worker.commit(worker.amounts_of(placed), +1)
        elif group is not None:
            group.requeued.append(dependant)
            group.reindex()
    for gid in core.barrier_dependants.pop(key, ()):
        group = core.groups.get(gid)
        if group is not None and group.barrier > 0:
            group.barrier -= 1
            group.reindex()
    core.changed()


def _tasks_dead(core: Core, out: Outbox, keys: Iterable[TaskKey], groups: Iterable[Group],
                now: float) -> None:
    """Tasks and whole groups that will never finish: abort everything that depends on them.

    Aborted tasks die in turn, so this walks the dependants transitively. Groups held by a
    barrier die whole. The product hears once, with every aborted task and group.
    """
    stack = list(keys)
    dead = list(groups)
    aborted_keys: list[TaskKey] = []
    aborted: list[Group] = []
    while stack or dead:
        while dead:
            group = dead.pop()
            # Its blocked tasks die with it, and what others wait for inside it is dead too.
            for key in [k for k, g in core.blocked_group.items() if g == group.gid]:
                del core.blocked_group[key]
                core.deps_waiting.pop(key, None)
                _drop_early(core, out, key)
            stack.extend(k for k in [*core.dependants, *core.barrier_dependants]
                         if group.holds(k))
        if not stack:
            break
        key = stack.pop()
        for dependant in core.dependants.pop(key, ()):
            if core.deps_waiting.pop(dependant, None) is None:
                continue
            gid = core.blocked_group.pop(dependant)
            _drop_early(core, out, dependant)
            aborted_keys.append(dependant)
            stack.append(dependant)
            _end(core, core.groups.get(gid))
        for gid in core.barrier_dependants.pop(key, ()):
            waiting = core.groups.get(gid)
            if waiting is not None and waiting not in aborted:
                aborted.append(waiting)
                dead.append(waiting)
    if aborted:
        _drop_groups(core, out, [g.gid for g in aborted])
    if aborted_keys or aborted:
        out.events.tasks_aborted(aborted_keys, [g.gid for g in aborted], now)


def on_tasks_retracted(core: Core, out: Outbox, wid: WorkerId, keys: Sequence[TaskKey],
                       now: float) -> None:
    """Tasks given back by a node: hand them to the thief that asked, or back to the pool."""
    worker = core.workers.get(wid)
    if worker is None:
        return
    by_target: dict[WorkerId | None, dict[GroupId, list[TaskKey]]] = {}
    for key in keys:
        placed = worker.assigned.pop(key, None)
        if placed is None:
            continue
        thief_id = worker.retracting.pop(key, None)
        _withdraw_early(core, out, worker, [key])
        if _release(core, worker, placed) is None:
            continue
        by_target.setdefault(thief_id, {}).setdefault(placed[0], []).append(key)
    # Keys asked for but not returned have started there: the thief's reservation lapses.
    for key in [k for k in worker.retracting if k not in worker.assigned]:
        _drop_reservation(core, worker.retracting.pop(key), key)
    for thief_id, per_group in by_target.items():
        thief = core.workers.get(thief_id) if thief_id is not None else None
        for gid, group_keys in per_group.items():
            group = core.groups[gid]
            variant = None
            if thief is not None:
                for key in group_keys:
                    incoming = thief.incoming.get(key)
                    if incoming is not None:
                        variant = incoming[1]
                    _drop_reservation(core, thief_id, key)
            if thief is not None and variant is not None:
                assign(core, out, thief, group, group_keys, variant)
            else:
                group.give_back(group_keys)
    core.changed()


def reserve(core: Core, thief: Worker, key: TaskKey, gid: GroupId, variant: int) -> None:
    """Hold room on a thief for a task that is being retracted elsewhere for it."""
    amounts = thief.amounts(core.groups[gid], variant)
    assert amounts is not None
    thief.incoming[key] = (gid, variant)
    thief.commit(amounts, +1)


def _drop_reservation(core: Core, thief_id: WorkerId | None, key: TaskKey) -> None:
    thief = core.workers.get(thief_id) if thief_id is not None else None
    if thief is None:
        return
    placed = thief.incoming.pop(key, None)
    if placed is not None:
        _release(core, thief, placed)


def _drop_groups(core: Core, out: Outbox, gids: Iterable[GroupId]) -> None:
    """Forget every unfinished task of these groups, killing the running ones on their nodes."""
    gid_set = set(gids)
    for worker in core.workers.values():
        doomed = [k for k, p in worker.assigned.items() if p[0] in gid_set]
        doomed += [k for k, p in worker.running.items() if p[0] in gid_set]
        if not doomed:
            continue
        for key in doomed:
            placed = worker.assigned.pop(key, None) or worker.running.pop(key)
            _drop_reservation(core, worker.retracting.pop(key, None), key)
            _release(core, worker, placed)
        out.send(worker.wid, CancelTasks(tuple(doomed)))
        for key in doomed:
            release_nodes(core, out, key)
    for key in [k for k, g in core.blocked_group.items() if g in gid_set]:
        del core.blocked_group[key]
        core.deps_waiting.pop(key, None)
        _drop_early(core, out, key)
    for gid in gid_set:
        core.drop_group(gid)
    core.changed()


def cancel_groups(core: Core, out: Outbox, gids: Iterable[GroupId], now: float) -> None:
    """The product ends these groups (cancel, max-fails): their dependants are aborted."""
    groups = [core.groups[g] for g in gids if g in core.groups]
    _drop_groups(core, out, [g.gid for g in groups])
    _tasks_dead(core, out, (), groups, now)


def on_worker_lost(core: Core, out: Outbox, wid: WorkerId, reason: str, now: float) -> None:
    """Every task the worker held goes back with a new instance id; crashes are counted.

    Instances grow for assigned tasks too: a node that lost its link may already have started
    one without the news reaching us, and a task must never run twice under one instance.
    Only a lost connection or heartbeat counts as a crash (spec/jobs.md §8.3).
    """
    worker = core.remove_worker(wid)
    if worker is None:
        return
    core.forgetting.pop(wid, None)  # its node is gone, and so is what it knew
    # Reservations first: the events below may cancel groups (max-fails), and the thieves
    # must have their room back whatever happens to the tasks.
    for other in core.workers.values():
        for key, thief in other.retracting.items():
            if thief == wid:
                other.retracting[key] = None
    for key, thief in worker.retracting.items():
        _drop_reservation(core, thief, key)
    # A lost secondary node leaves its multi-node task alone (spec/jobs.md §8.3); a lost root
    # gives the task back below, and its other nodes are free again.
    held = worker.reserved_for
    if held is not None and held not in worker.assigned and held not in worker.running:
        members = core.multinode.get(held)
        if members is not None and wid in members:
            members.remove(wid)
    for key in [*worker.assigned, *worker.running]:
        release_nodes(core, out, key)
    crash = reason in (StopReason.CONNECTION_LOST, StopReason.HEARTBEAT_LOST)
    requeued_keys: list[TaskKey] = []
    requeued_instances: list[InstanceId] = []
    requeued_crashes: list[int] = []
    crashed: dict[bool, tuple[list[TaskKey], list[int]]] = {}
    for key, gid, was_running in [(k, p[0], False) for k, p in worker.assigned.items()] + [
        (k, p[0], True) for k, p in worker.running.items()
    ]:
        group = core.groups.get(gid)
        if group is None:
            continue
        instance = InstanceId(group.instances.get(key, FIRST_INSTANCE) + 1)
        group.instances[key] = instance
        never = group.never_restart
        if was_running and (crash or never):
            count = group.crashes.get(key, 0) + 1
            group.crashes[key] = count
            if group.crash_fails(count):
                keys, counts = crashed.setdefault(never, ([], []))
                keys.append(key)
                counts.append(count)
                _end(core, group)
                continue
        group.give_back([key])
        requeued_keys.append(key)
        requeued_instances.append(instance)
        requeued_crashes.append(group.crashes.get(key, 0))
    # Tasks sent early stay blocked here, to be sent again once they may run; they never ran
    # (no crash), but a node cut off from us may have started one: the next run is a new
    # instance, as for any task it held.
    for key, (gid, _variant) in worker.early.items():
        del core.early[key]
        group = core.groups.get(gid)
        if group is None:
            continue
        instance = InstanceId(group.instances.get(key, FIRST_INSTANCE) + 1)
        group.instances[key] = instance
        requeued_keys.append(key)
        requeued_instances.append(instance)
        requeued_crashes.append(group.crashes.get(key, 0))
    worker.early.clear()
    if requeued_keys:
        out.events.tasks_requeued(requeued_keys, requeued_instances, now, requeued_crashes)
    for never, (keys, counts) in crashed.items():
        out.events.tasks_crashed(wid, keys, counts, never, now)
        _tasks_dead(core, out, keys, (), now)
    logger.info(
        "Worker %d lost (%s); %d running and %d queued tasks returned",
        wid, reason, len(worker.running), len(worker.assigned),
    )
    core.changed()


def adopt(core: Core, out: Outbox, worker: Worker, resumed: Sequence[Resumed],
          now: float) -> list[TaskKey]:
    """A reconnecting node's tasks: those the core holds as orphans under the same instance
    become the worker's running tasks; returns the others, which the node must kill."""
    rejected: list[TaskKey] = []
    adopted: list[TaskKey] = []
    pending: list[Resumed] = []
    for key, instance, variant in resumed:
        orphan = core.orphans.get(key)
        if orphan is None and key not in core.blocked_group:
            pending.append((key, instance, variant))
            continue
        group = core.groups.get(orphan[0]) if orphan is not None else None
        amounts = (worker.amounts(group, variant)
                   if group is not None and 0 <= variant < len(group.request.variants)
                   else None)
        if orphan is None or group is None or orphan[1] != instance or amounts is None:
            rejected.append(key)
            continue
        del core.orphans[key]
        group.instances[key] = instance
        worker.running[key] = (group.gid, variant)
        worker.commit(amounts, 1)
        adopted.append(key)
    taken, left = _adopt_pending(core, worker, pending)
    adopted += taken
    rejected += left
    if adopted:
        out.events.tasks_adopted(worker.wid, adopted, now)
    core.changed()
    return rejected


def _adopt_pending(core: Core, worker: Worker, resumed: Sequence[Resumed]
                   ) -> tuple[list[TaskKey], list[TaskKey]]:
    """Tasks a node started whose start never reached the journal: still pending in their
    group under the same instance, they are taken out of it and run on as the node's.
    Returns (taken, rejected)."""
    taken: list[TaskKey] = []
    rejected: list[TaskKey] = []
    cut: dict[GroupId, list[int]] = {}
    for key, instance, variant in resumed:
        group = _pending_group(core, key)
        amounts = (worker.amounts(group, variant)
                   if group is not None and 0 <= variant < len(group.request.variants)
                   else None)
        if group is None or group.instances.get(key, FIRST_INSTANCE) != instance \
                or amounts is None:
            rejected.append(key)
            continue
        if key in group.requeued:
            group.requeued.remove(key)
            group.reindex()
        else:
            cut.setdefault(group.gid, []).append(
                int(np.searchsorted(group.keys, np.uint64(key))))
        worker.running[key] = (group.gid, variant)
        worker.commit(amounts, 1)
        taken.append(key)
    for gid, positions in cut.items():  # one copy of the key array per group
        group = core.groups[gid]
        group.keys = np.delete(group.keys, positions)
        if group.entries is not None:  # aligned with the keys
            gone = set(positions)
            group.entries = [e for i, e in enumerate(group.entries) if i not in gone]
        group.reindex()
    return taken, rejected


def _pending_group(core: Core, key: TaskKey) -> Group | None:
    """The group in which ``key`` waits to be assigned, if it does."""
    job_id = job_of(key)
    for group in core.groups.values():
        if group.job_id != job_id or not group.holds(key):
            continue
        position = int(np.searchsorted(group.keys, np.uint64(key)))
        if position >= group.cursor or key in group.requeued:
            return group
    return None


def expire_orphans(core: Core, out: Outbox, now: float) -> None:
    """Orphans whose node did not come back in time run again, under the next instance; and
    scheduling resumes once the pause after a restore is over."""
    if core.paused_until and now >= core.paused_until:
        core.paused_until = 0.0
        core.changed()
    expired = [(key, gid, instance) for key, (gid, instance, deadline) in core.orphans.items()
               if deadline <= now]
    keys: list[TaskKey] = []
    instances: list[InstanceId] = []
    for key, gid, instance in expired:
        del core.orphans[key]
        group = core.groups.get(gid)
        if group is None:  # canceled meanwhile
            continue
        group.instances[key] = InstanceId(instance + 1)
        group.give_back([key])
        keys.append(key)
        instances.append(InstanceId(instance + 1))
    if keys:
        out.events.tasks_requeued(keys, instances, now)
        logger.info("%d tasks of a node that did not reconnect run again", len(keys))
        core.changed()


def retract(out: Outbox, worker: Worker, keys: list[TaskKey], thief: WorkerId | None) -> None:
    for key in keys:
        worker.retracting[key] = thief
    out.send(worker.wid, RetractTasks(tuple(keys)))
