"""The core's index of the groups with pending tasks (``core.PendingGroups``).

A scheduling pass walks it instead of collecting and sorting every group, so it must always
hold exactly the core's groups with pending tasks, in ``Group.order``, with what a pass reads of
all of them (the most pending tasks of a group per placement class, the multi-node ones, the
shortest mean duration). ``Core.check`` recounts all of that; the scenarios here also run
``core_env.reference_schedule`` (the pass as a scan of every group) beside every pass, and
insist on the same messages.
"""

from __future__ import annotations

import numpy as np
from core_env import Env, SimNode, request
from hqshm.cluster.core import Core, Group
from hqshm.cluster.ids import GroupId, JobId, TaskKey, task_key
from hqshm.cluster.protocol import ComputeTasks, StopReason
from hqshm.cluster.resources import RequestVariant, ResourceRequest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)


def make_group(gid: int, n: int = 1, *, job: int | None = None, priority: int = 0,
               cpus: float = 1, multi_node: bool = False) -> Group:
    job_id = gid if job is None else job
    keys = np.array([task_key(job_id, gid * 100 + i) for i in range(n)], dtype=np.uint64)
    req = (ResourceRequest((RequestVariant(n_nodes=2),)) if multi_node
           else request(cpus=cpus))
    return Group(gid=GroupId(gid), job_id=JobId(job_id), request=req, priority=priority,
                 body=b"", keys=keys)


def core_of(*groups: Group) -> Core:
    core = Core()
    for group in groups:
        core.register(group)
    core.check()
    return core


def gids(core: Core) -> list[int]:
    return [g.gid for g in core.pending]


def test_groups_are_in_scheduling_order_however_they_come() -> None:
    """Higher priority first, then the older job, then the older submit."""
    groups = [make_group(1, job=5), make_group(2, job=3), make_group(3, job=5, priority=2),
              make_group(4, job=1, priority=-1), make_group(5, job=3), make_group(6, job=9)]
    core = core_of(*groups)
    assert gids(core) == [3, 2, 5, 1, 6, 4]
    assert len(core.pending) == 6 and groups[0] in core.pending


def test_a_group_leaves_with_its_last_pending_task_and_comes_back_in_its_place() -> None:
    a, b, c = make_group(1, 2), make_group(2, 1), make_group(3, 1)
    core = core_of(a, b, c)
    first = a.take(1)
    assert gids(core) == [1, 2, 3]
    second = b.take(1)
    assert gids(core) == [1, 3] and b not in core.pending
    core.check()
    b.give_back(second)
    a.take(1)
    assert gids(core) == [2, 3]
    core.check()
    a.give_back(first)
    assert gids(core) == [1, 2, 3]
    core.check()


def test_groups_that_left_the_core_leave_the_index() -> None:
    a, b = make_group(1, 3), make_group(2, 1)
    core = core_of(a, b)
    core.drop_group(a.gid)
    assert gids(core) == [2] and a.index is None
    a.take(1)  # no longer the core's: nothing to follow
    core.register(a)  # back (a failed task runs again): indexed as it is now
    assert gids(core) == [1, 2]
    core.check()


def test_taking_the_first_group_costs_no_move_of_the_rest() -> None:
    """Single-task jobs are placed in order: the head moves on, and what lies before it is
    dropped once it is half of the list (amortised O(1) a group)."""
    groups = [make_group(i) for i in range(1, 1001)]
    core = core_of(*groups)
    for done, group in enumerate(groups, start=1):
        group.take(1)
        assert len(core.pending) == 1000 - done
        assert len(core.pending._sorted) <= 2 * (1000 - done) + 64  # noqa: SLF001
        if done % 97 == 0:
            core.check()
    assert gids(core) == []
    core.check()


def test_a_walk_goes_on_while_groups_leave_and_come() -> None:
    """A pass places groups as it walks the index: the one at hand leaves (at the head or
    anywhere else), and those it has not reached yet may leave too."""
    groups = [make_group(i, 2) for i in range(1, 9)]
    core = core_of(*groups)
    walked = []
    for group in core.pending:
        walked.append(group.gid)
        if group.gid in (1, 3):
            group.take(2)  # the head leaves; then one in the middle
        if group.gid == 4:
            groups[5].take(2)  # one ahead leaves: not reached
            groups[4].take(1)  # one ahead stays
        if group.gid == 5:
            groups[7].take(2)
            groups[0].give_back([task_key(1, 100)])  # behind the walk: not reached again
    assert walked == [1, 2, 3, 4, 5, 7]
    assert gids(core) == [1, 2, 4, 5, 7]
    core.check()


def test_the_most_pending_of_a_class_follows_taken_tasks() -> None:
    big, mid, other, urgent = (make_group(1, 5), make_group(2, 3), make_group(3, 3),
                               make_group(4, 2, priority=1))
    multi = make_group(5, 1, multi_node=True)
    core = core_of(big, mid, other, urgent, multi)
    (cls,), (hot,) = {big.placement_key}, {urgent.placement_key}
    assert dict(core.pending.largest()) == {cls: 5, hot: 2}
    assert core.pending.multi_node == 1
    taken = big.take(3)
    assert dict(core.pending.largest()) == {cls: 3, hot: 2}  # found again among the counts
    mid.take(3)
    other.take(1)
    assert dict(core.pending.largest()) == {cls: 2, hot: 2}
    big.give_back(taken)
    assert dict(core.pending.largest()) == {cls: 5, hot: 2}
    urgent.take(2)
    multi.take(1)
    assert dict(core.pending.largest()) == {cls: 5} and core.pending.multi_node == 0
    core.check()


def test_the_shortest_mean_of_waiting_groups_that_ran() -> None:
    a, b, c = make_group(1, 4), make_group(2, 4), make_group(3, 1)
    core = core_of(a, b, c)
    assert core.pending.shortest_mean() is None
    for group, mean in ((a, 0.5), (b, 0.01), (c, 0.001)):
        group.ran, group.ran_time = 1, mean
        group.reindex()
    assert core.pending.shortest_mean() == 0.001
    c.take(1)  # no longer waiting: its mean does not count
    assert core.pending.shortest_mean() == 0.01
    for _ in range(500):  # many changes of one mean: the heap is rebuilt, not grown
        b.ran += 1
        b.ran_time += 1.0
        b.reindex()
    assert core.pending.shortest_mean() == 0.5
    assert len(core.pending._by_mean) <= 2 * 2 + 64  # noqa: SLF001
    core.check()


# --- any sequence of changes -----------------------------------------------------------------


class IndexChanges(RuleBasedStateMachine):
    """Random takes, give-backs, barriers, durations, drops and returns of standalone groups:
    the index is always what a recount makes of the core's groups."""

    def __init__(self) -> None:
        super().__init__()
        self.core = Core()
        self.groups: list[Group] = []
        self.taken: dict[int, list[TaskKey]] = {}

    @rule(n=st.integers(1, 5), job=st.integers(1, 6), priority=st.integers(-1, 1),
          cpus=st.sampled_from([1, 2]), multi_node=st.booleans())
    def add(self, n: int, job: int, priority: int, cpus: float, multi_node: bool) -> None:
        group = make_group(len(self.groups) + 1, n, job=job, priority=priority, cpus=cpus,
                           multi_node=multi_node and n == 1)
        self.groups.append(group)
        self.taken[group.gid] = []
        self.core.register(group)

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), n=st.integers(1, 3))
    def take(self, data: st.DataObject, n: int) -> None:
        group = data.draw(st.sampled_from(self.groups))
        self.taken[group.gid] += group.take(n)

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), n=st.integers(1, 3))
    def give_back(self, data: st.DataObject, n: int) -> None:
        group = data.draw(st.sampled_from(self.groups))
        keys, self.taken[group.gid] = self.taken[group.gid][:n], self.taken[group.gid][n:]
        group.give_back(keys)

    @precondition(lambda self: self.groups)
    @rule(data=st.data())
    def barrier(self, data: st.DataObject) -> None:
        group = data.draw(st.sampled_from(self.groups))
        group.barrier = 0 if group.barrier else 1
        group.reindex()

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), duration=st.sampled_from([0.0, 0.001, 0.02, 1.0]))
    def ran(self, data: st.DataObject, duration: float) -> None:
        group = data.draw(st.sampled_from(self.groups))
        group.ran += 1
        group.ran_time += duration
        group.reindex()

    @precondition(lambda self: self.groups)
    @rule(data=st.data())
    def drop_or_return(self, data: st.DataObject) -> None:
        group = data.draw(st.sampled_from(self.groups))
        if group.gid in self.core.groups:
            self.core.drop_group(group.gid)
        else:
            self.core.register(group)

    @precondition(lambda self: self.groups)
    @rule(data=st.data())
    def walk(self, data: st.DataObject) -> None:
        """Walk the index taking every pending task of some of the groups on the way."""
        expected = [g for g in self.core.pending]
        walked = []
        for group in self.core.pending:
            walked.append(group)
            if data.draw(st.booleans()):
                self.taken[group.gid] += group.take(group.pending)
        assert walked == expected

    @invariant()
    def index_is_a_recount(self) -> None:
        self.core.check()


IndexChanges.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                          deadline=None)
test_index_changes = IndexChanges.TestCase


# --- the pass walking the index decides as a scan of every group -----------------------------


class PassScenario(RuleBasedStateMachine):
    """Jobs of several classes, priorities and sizes, some waiting for others, short and long
    tasks (short ones prefill deeper), nodes that come, go, run, fail and give back: every
    pass sends what a pass scanning every group sends (``Env.compare_passes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.env = Env()
        assert self.env.compare_passes
        self.nodes: dict[int, SimNode] = {}
        self.keys: list[int] = []

    @initialize()
    def first_worker(self) -> None:
        self.add_worker(2, None, False)

    @rule(cpus=st.integers(1, 4), time_limit=st.sampled_from([None, None, 30.0]),
          picky=st.booleans())
    def add_worker(self, cpus: int, time_limit: float | None, picky: bool) -> None:
        picky = (picky and cpus > 1
                 and not any(n.worker.min_utilization for n in self.nodes.values()))
        w = self.env.worker(cpus, time_limit=time_limit, min_utilization=0.5 if picky else 0.0)
        self.nodes[w.wid] = SimNode(self.env, w, cpus)

    @rule(n=st.integers(1, 8), cpus=st.sampled_from([0.5, 1, 1, 2]),
          priority=st.integers(-1, 1), min_time=st.sampled_from([0.0, 0.0, 60.0]),
          retries=st.integers(0, 1), waits=st.booleans(), same_job=st.booleans())
    def submit(self, n: int, cpus: float, priority: int, min_time: float, retries: int,
               waits: bool, same_job: bool) -> None:
        after = self.keys[-2:] if waits else []
        job = self.env.core.groups[max(self.env.core.groups)].job_id if (
            same_job and self.env.core.groups) else None
        group = self.env.group(n, cpus=cpus, priority=priority, min_time=min_time,
                               retries=retries, after=after, job=job,
                               first_id=1000 * len(self.env.groups))
        self.keys += group.keys.tolist()

    @rule()
    def schedule(self) -> None:
        self.env.schedule()

    @rule(duration=st.sampled_from([0.001, 0.01, 0.5]))
    def busy_round(self, duration: float) -> None:
        self.env.schedule()
        for node in list(self.nodes.values()):
            node.receive()
            node.answer_retractions()
            node.start_some(3)
            node.end_some(1, duration=duration)
            node.flush()

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), duration=st.sampled_from([0.001, 0.01, 0.5]))
    def node_acts(self, data: st.DataObject, duration: float) -> None:
        node = data.draw(st.sampled_from(sorted(self.nodes.values(), key=lambda n: n.worker.wid)))
        action = data.draw(st.sampled_from(["receive", "start", "finish", "fail", "flush",
                                            "retract"]))
        if action == "receive":
            node.receive()
        elif action == "start":
            node.start_some(2)
        elif action in ("finish", "fail"):
            node.end_some(2, fail=action == "fail", duration=duration)
        elif action == "flush":
            node.flush()
        else:
            node.answer_retractions()

    @rule(seconds=st.sampled_from([1.0, 40.0]))
    def time_passes(self, seconds: float) -> None:
        self.env.clock.advance(seconds)

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(data=st.data())
    def lose_worker(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.nodes)))
        node = self.nodes.pop(wid)
        self.env.lose(node.worker, StopReason.CONNECTION_LOST)
        self.env.out.sent = [(w, m) for w, m in self.env.out.sent if w != wid]

    @precondition(lambda self: self.env.core.groups)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        gid = data.draw(st.sampled_from(sorted(self.env.core.groups)))
        self.env.cancel(self.env.core.groups[gid])

    @invariant()
    def consistent(self) -> None:
        self.env.events.log.clear()
        self.env.check()


PassScenario.TestCase.settings = settings(max_examples=60, stateful_step_count=50,
                                          deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_pass_scenario = PassScenario.TestCase


def test_the_shortest_waiting_mean_sets_how_deep_a_pass_prefills() -> None:
    """A long group first in order, a short one behind it: the pass goes on prefilling past
    the long one's single extra round, as deep as the short one wants."""
    env = Env()
    w = env.worker(1)
    long = env.group(10)  # the older job: first in order
    short = env.group(40)
    env.schedule()
    first, queued = env.out.take_keys(w.wid, ComputeTasks)  # one to run, one extra round
    env.start(w, [first])
    env.finish(w, [first], duration=1.0)
    short.ran, short.ran_time = 1, 0.001  # as if one of its tasks had run elsewhere
    short.reindex()
    assert env.core.pending.shortest_mean() == 0.001
    env.schedule()
    sent = env.out.take(w.wid, ComputeTasks)
    assert [(m.gid, len(m.keys)) for m in sent] == [(long.gid, 1), (short.gid, 31)]
    assert queued in w.assigned
    env.check()
