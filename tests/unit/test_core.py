"""Scenarios of ``cluster.core``: worker loss, crash limits, cancel, late news, and a
randomized run that interleaves all of them with ``core.check()`` after every step."""

from __future__ import annotations

import pytest
from core_env import Env, SimNode
from hqshm.cluster import reactor
from hqshm.cluster.core import SWEEP_AFTER_GROUPS
from hqshm.cluster.crashlimit import NEVER_RESTART, UNLIMITED_CRASHES
from hqshm.cluster.protocol import (
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    ForgetGroups,
    RetractTasks,
    StopReason,
    TaskUpdates,
)
from hqshm.cluster.resources import FRACTIONS
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

COUNTED = (StopReason.CONNECTION_LOST, StopReason.HEARTBEAT_LOST)
NOT_COUNTED = (
    StopReason.STOPPED,
    StopReason.IDLE_TIMEOUT,
    StopReason.TIME_LIMIT,
    StopReason.SERVER_STOPPED,
)


@pytest.fixture
def env() -> Env:
    return Env()


def _run(env: Env, cpus: int = 2, crash_limit: int = 5) -> tuple[list[int], list[int]]:
    """One worker with ``cpus`` tasks running and as many queued; returns (running, queued)."""
    w = env.worker(cpus)
    env.group(2 * cpus, crash_limit=crash_limit)
    env.schedule()
    keys = env.out.take_keys(w.wid, ComputeTasks)
    env.out.discard(DefineGroup)
    env.start(w, keys[:cpus])
    env.events.take("started", count=cpus)
    return keys[:cpus], keys[cpus:]


# --- worker loss ----------------------------------------------------------------------------


def test_lost_worker_gives_back_queued_and_running_tasks_with_the_next_instance(
    env: Env,
) -> None:
    running, queued = _run(env, cpus=2)
    w = env.core.workers[1]
    env.lose(w)
    assert sorted(env.events.take("requeued")) == sorted((k, 1) for k in running + queued)
    group = env.group_of(running[0])
    assert group.pending == 4
    assert group.crashes == dict.fromkeys(running, 1)  # only running tasks crashed
    env.events.assert_empty()
    env.check()
    w2 = env.worker(2)
    env.schedule()
    sent = env.out.take(to=w2.wid, kind=ComputeTasks)
    assert all(m.instances == (1,) * len(m.keys) for m in sent)
    assert sorted(k for m in sent for k in m.keys) == sorted(running + queued)
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_reports_from_a_lost_worker_are_ignored(env: Env) -> None:
    running, _ = _run(env, cpus=1)
    w = env.core.workers[1]
    env.lose(w)
    env.events.take("requeued", count=2)
    env.finish(w, running)
    env.give_back(w, running)
    env.lose(w)  # lost twice: nothing more happens
    env.events.assert_empty()
    env.out.assert_empty()
    env.check()


@pytest.mark.parametrize("reason", COUNTED)
def test_lost_connection_or_heartbeat_counts_a_crash(env: Env, reason: str) -> None:
    running, queued = _run(env, cpus=1, crash_limit=1)
    env.lose(env.core.workers[1], reason)
    assert env.events.take("crashed") == [(1, running[0], 1, False)]
    assert env.events.take("requeued") == [(queued[0], 1)]  # queued: never a crash
    env.check()


@pytest.mark.parametrize("reason", NOT_COUNTED)
def test_stops_and_timeouts_do_not_count_a_crash(env: Env, reason: str) -> None:
    running, queued = _run(env, cpus=1, crash_limit=1)
    env.lose(env.core.workers[1], reason)
    assert sorted(env.events.take("requeued")) == sorted([(running[0], 1), (queued[0], 1)])
    env.events.assert_empty()
    assert env.group_of(running[0]).crashes == {}
    env.check()


def test_crash_limit_n_fails_the_task_on_its_nth_loss(env: Env) -> None:
    env.group(1, crash_limit=3)
    (key,) = env.groups[1].keys.tolist()
    for loss in (1, 2, 3):
        w = env.worker(1)
        env.schedule()
        assert env.out.take_keys(w.wid, ComputeTasks) == [key]
        env.out.discard(DefineGroup)
        env.start(w, [key])
        env.events.take("started", count=1)
        env.lose(w)
        if loss < 3:
            assert env.events.take("requeued") == [(key, loss)]
        else:
            assert env.events.take("crashed") == [(w.wid, key, 3, False)]
        env.events.assert_empty()
        env.check()
    assert not env.core.groups  # the task has ended: the core forgets its group
    env.worker(1)
    env.schedule()
    env.out.assert_empty()
    env.check()


@pytest.mark.parametrize("reason", COUNTED + NOT_COUNTED)
def test_never_restart_fails_on_any_loss_of_a_running_task(env: Env, reason: str) -> None:
    running, queued = _run(env, cpus=1, crash_limit=NEVER_RESTART)
    env.lose(env.core.workers[1], reason)
    assert env.events.take("crashed") == [(1, running[0], 1, True)]
    assert env.events.take("requeued") == [(queued[0], 1)]  # it never ran: back it goes
    env.events.assert_empty()
    env.check()


def test_unlimited_crashes_never_fail_a_task(env: Env) -> None:
    env.group(1, crash_limit=UNLIMITED_CRASHES)
    (key,) = env.groups[1].keys.tolist()
    for loss in range(1, 11):
        w = env.worker(1)
        env.schedule()
        env.out.take_keys(w.wid, ComputeTasks)
        env.out.discard(DefineGroup)
        env.start(w, [key])
        env.lose(w, StopReason.HEARTBEAT_LOST)
        assert env.events.take("requeued") == [(key, loss)]
    assert env.groups[1].crashes == {key: 10}
    env.events.take("started", count=10)
    env.events.assert_empty()
    env.check()


# --- ends, cancel and late news -------------------------------------------------------------


def test_task_may_end_without_a_start_report(env: Env) -> None:
    w = env.worker(2)
    g = env.group(2)
    env.schedule()
    k1, k2 = env.out.take_keys(w.wid, ComputeTasks)
    env.finish(w, [k1])
    env.fail(w, [k2], error="Cannot execute")
    assert env.events.take("finished") == [(w.wid, k1, 0)]
    assert env.events.take("failed") == [(w.wid, k2, 0, "Cannot execute")]
    assert w.committed["cpus"] == 0
    assert g.gid not in env.core.groups
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.events.assert_empty()
    env.check()


def test_updates_for_tasks_never_sent_to_that_worker_are_ignored(env: Env) -> None:
    w1, w2 = env.workers(1, 1)
    g = env.group(2)
    env.schedule()
    k1 = env.out.take_keys(w1.wid, ComputeTasks)[0]
    env.start(w2, [k1])
    env.finish(w2, [k1])
    env.events.assert_empty()
    assert k1 in w1.assigned and g.active == 2
    env.out.discard(ComputeTasks)
    env.out.discard(DefineGroup)
    env.check()


def test_cancel_tells_only_the_workers_holding_tasks_and_frees_their_capacity(env: Env) -> None:
    w1, w2, w3 = env.workers(2, 2, 2)
    a = env.group(4)
    b = env.group(2)
    pending = env.group(10, cpus=8)  # fits nowhere: stays pending
    env.schedule()
    a_on_w1 = env.out.take_keys(w1.wid, ComputeTasks)
    a_on_w2 = env.out.take_keys(w2.wid, ComputeTasks)
    b_on_w3 = env.out.take_keys(w3.wid, ComputeTasks)
    assert sorted(a_on_w1 + a_on_w2) == a.keys.tolist()
    assert b_on_w3 == b.keys.tolist()
    env.out.discard(DefineGroup)
    env.start(w1, a_on_w1[:1])  # one running, the rest queued
    env.start(w3, b_on_w3)
    env.events.take("started", count=3)

    env.cancel(a, pending)
    assert sorted(env.out.take_keys(w1.wid, CancelTasks)) == sorted(a_on_w1)
    assert sorted(env.out.take_keys(w2.wid, CancelTasks)) == sorted(a_on_w2)
    env.out.assert_empty()  # nothing to w3
    assert w1.committed["cpus"] == w2.committed["cpus"] == 0
    assert w3.committed["cpus"] == 2 * FRACTIONS
    assert set(env.core.groups) == {b.gid}
    env.check()

    # Late news about canceled tasks is ignored.
    env.finish(w1, a_on_w1[:1])
    env.start(w2, a_on_w2)
    env.fail(w2, a_on_w2)
    env.give_back(w1, a_on_w1[1:])
    env.events.assert_empty()
    env.schedule()
    # The pending group is gone too; the nodes that were sent a forget it (pending never was).
    for w in (w1, w2):
        assert env.out.take(w.wid, ForgetGroups) == [ForgetGroups((a.gid,))]
    env.out.assert_empty()
    env.check()


def test_cancel_during_a_retraction_frees_the_thiefs_reservation(env: Env) -> None:
    running, queued = _run(env, cpus=4)
    victim = env.core.workers[1]
    thief = env.worker(4)
    env.schedule()
    asked = env.out.take_keys(victim.wid, RetractTasks)
    assert len(asked) == 2 and thief.committed["cpus"] == 2 * FRACTIONS
    env.cancel(env.group_of(asked[0]))
    assert thief.committed["cpus"] == 0 and not thief.incoming
    assert len(env.out.take_keys(victim.wid, CancelTasks)) == 8
    env.give_back(victim, asked)
    env.out.assert_empty()
    env.events.assert_empty()
    env.check()


def test_mean_duration_comes_from_ended_tasks(env: Env) -> None:
    w = env.worker(2)
    g = env.group(4)
    env.schedule()
    k1, k2 = env.out.take_keys(w.wid, ComputeTasks)[:2]
    assert g.mean_duration is None
    env.finish(w, [k1], duration=1.0)
    env.updates(w, TaskUpdates(failed=((k2, 0, 10.0, 13.0, 0, "x", True),)))
    assert g.mean_duration == pytest.approx(2.0)
    env.events.take("finished", count=1)
    env.events.take("failed", count=1)
    env.check()


# --- randomized scenario --------------------------------------------------------------------

REASONS = st.sampled_from(COUNTED + NOT_COUNTED)


class CoreScenario(RuleBasedStateMachine):
    """Random interleavings of schedule, node reports, retractions, losses and cancels.

    Nodes follow the protocol (``SimNode``); the core must keep its invariants after every step,
    never place one task on two live nodes, never start one instance twice, report each task's
    end at most once and nothing about a canceled task, and in the end run every task that was
    not canceled exactly once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.env = Env()
        self.nodes: dict[int, SimNode] = {}
        self.canceled: set[int] = set()  # keys canceled before they ended
        self.ended: dict[int, int] = {}
        self.started: set[tuple[int, int]] = set()

    @initialize()
    def first_worker(self) -> None:
        self.add_worker(2, None)

    @rule(cpus=st.integers(1, 4), time_limit=st.sampled_from([None, None, 30.0, 120.0]))
    def add_worker(self, cpus: int, time_limit: float | None) -> None:
        w = self.env.worker(cpus, time_limit=time_limit)
        self.nodes[w.wid] = SimNode(self.env, w, cpus)

    @rule(
        n=st.integers(1, 6),
        cpus=st.sampled_from([0.5, 1, 2]),
        priority=st.integers(-1, 1),
        crash_limit=st.sampled_from([1, NEVER_RESTART, 2, UNLIMITED_CRASHES]),
        min_time=st.sampled_from([0.0, 0.0, 60.0]),
    )
    def submit(self, n: int, cpus: float, priority: int, crash_limit: int, min_time: float) -> None:
        self.env.group(n, cpus=cpus, priority=priority, crash_limit=crash_limit, min_time=min_time)

    @rule()
    def schedule(self) -> None:
        self.env.schedule()

    @rule()
    def busy_round(self) -> None:
        """Schedule, and let every node take its messages and start what fits."""
        self.env.schedule()
        for node in self.nodes.values():
            node.receive()
            self._start(node, 2)
            node.flush()

    def _start(self, node: SimNode, n: int) -> None:
        for key in node.start_some(n):
            instance = node.running[key][1]
            assert (key, instance) not in self.started, "one instance started twice"
            self.started.add((key, instance))

    @rule(seconds=st.sampled_from([1.0, 20.0, 60.0]))
    def time_passes(self, seconds: float) -> None:
        self.env.clock.advance(seconds)

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def node_acts(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(sorted(self.nodes.values(), key=lambda n: n.worker.wid)))
        action = data.draw(
            st.sampled_from(["receive", "start", "finish", "fail", "flush", "retract", "killed"])
        )
        n = data.draw(st.integers(1, 3))
        if action == "receive":
            node.receive()
        elif action == "start":
            self._start(node, n)
        elif action in ("finish", "fail"):
            node.end_some(n, fail=action == "fail")
        elif action == "flush":
            node.flush()
        elif action == "retract":
            node.answer_retractions()
        else:
            node.report_killed()

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), reason=REASONS)
    def lose_worker(self, data: st.DataObject, reason: str) -> None:
        wid = data.draw(st.sampled_from(sorted(self.nodes)))
        node = self.nodes.pop(wid)
        self.env.lose(node.worker, reason)
        # The link is gone: what was on its way to the node is dropped with it.
        self.env.out.sent = [(w, m) for w, m in self.env.out.sent if w != wid]

    @precondition(lambda self: self.env.core.groups)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        gid = data.draw(st.sampled_from(sorted(self.env.core.groups)))
        group = self.env.core.groups[gid]
        self._absorb_events()
        self.canceled |= {k for k in group.keys.tolist() if k not in self.ended}
        self.env.cancel(group)

    def _absorb_events(self) -> None:
        log, self.env.events.log = self.env.events.log, []
        for kind, record in log:
            if kind == "started":
                key = record[1]
                assert key not in self.canceled and key not in self.ended, (kind, key)
            elif kind in ("finished", "failed", "crashed"):
                key = record[1]
                assert key not in self.canceled, f"{kind} reported for canceled task {key}"
                self.ended[key] = self.ended.get(key, 0) + 1
                assert self.ended[key] == 1, f"task {key} ended twice"

    @invariant()
    def core_is_consistent(self) -> None:
        self._absorb_events()
        self.env.check()
        seen: set[int] = set()
        for node in self.nodes.values():
            held = node.holds()
            assert not held & seen, f"tasks {held & seen} are on two live nodes"
            seen |= held

    def teardown(self) -> None:
        """Give the cluster a long-lived worker and run until nothing is left."""
        self._absorb_events()
        self.add_worker(4, None)
        for _ in range(200):
            if not self.env.core.groups:
                break
            self.env.schedule()
            for node in list(self.nodes.values()):
                node.receive()
                node.answer_retractions()
                node.report_killed()
                self._start(node, 100)
                node.flush()
                node.end_some(100)
                node.flush()
            self.env.clock.advance(1.0)
            self.core_is_consistent()
        assert not self.env.core.groups, "tasks left unfinished"
        for group in self.env.groups.values():
            for key in group.keys.tolist():
                if key not in self.canceled:
                    assert self.ended.get(key) == 1, f"task {key} did not end exactly once"


CoreScenario.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_core_scenario = CoreScenario.TestCase


# --- what workers cache of groups -----------------------------------------------------------


def test_workers_forget_the_groups_that_are_over(env: Env) -> None:
    """A server lives through millions of single-task jobs: what each worker cached of a
    group (its fitting variants, its amounts, that it was sent) must not outlive it."""
    env.compare_passes = False  # 3,000 passes: a copy of the core each would take minutes
    idle, busy = env.worker(1), env.worker(1)
    long = env.group(1)
    env.schedule()
    (held,) = env.out.take_keys(idle.wid, ComputeTasks) or env.out.take_keys(busy.wid,
                                                                             ComputeTasks)
    holder = idle if held in idle.assigned else busy
    env.start(holder, [held])
    for _ in range(3 * SWEEP_AFTER_GROUPS):
        env.group(1)
        env.schedule()
        for worker in (idle, busy):
            keys = env.out.take_keys(worker.wid, ComputeTasks)
            env.start(worker, keys)
            env.finish(worker, keys)
    env.out.discard(DefineGroup)
    env.check()
    for worker in (idle, busy):
        assert len(worker.fitting) <= SWEEP_AFTER_GROUPS + 2
        assert len(worker.amounts_cache) <= SWEEP_AFTER_GROUPS + 2
        assert len(worker.sent_groups) <= SWEEP_AFTER_GROUPS + 2
    # The task still running keeps what it holds, and ends as any other.
    assert long.gid in holder.fitting and (long.gid, 0) in holder.amounts_cache
    env.finish(holder, [held])
    env.check()


# --- telling nodes to forget groups ----------------------------------------------------------


def test_groups_over_in_one_turn_are_forgotten_in_one_message_per_node(env: Env) -> None:
    """Single-task jobs at thousands a second: one ForgetGroups per node and turn, naming
    only the groups that node was sent."""
    w1, w2, idle = env.worker(4), env.worker(4), env.worker(4)
    groups = [env.group(1) for _ in range(6)]
    env.schedule()
    on: dict[int, list[int]] = {}
    for worker in (w1, w2, idle):
        for msg in env.out.take(worker.wid, ComputeTasks):
            on.setdefault(worker.wid, []).append(msg.gid)
    env.out.discard(DefineGroup)
    holders = [w for w in (w1, w2, idle) if w.wid in on]
    for worker in holders:
        keys = [int(env.groups[g].keys[0]) for g in on[worker.wid]]
        env.start(worker, keys)
        env.finish(worker, keys)
    assert not env.core.groups
    env.out.assert_empty()  # nothing before the turn ends
    env.schedule()
    for worker in holders:
        assert env.out.take(worker.wid, ForgetGroups) == [
            ForgetGroups(tuple(sorted(on[worker.wid])))]
    env.out.assert_empty()
    assert sorted(g for gids in on.values() for g in gids) == [g.gid for g in groups]
    assert not env.core.forgetting
    assert all(not w.sent_groups for w in (w1, w2, idle))


def test_a_group_defined_again_after_it_was_forgotten(env: Env) -> None:
    """A retried task brings its group back after the node was told to forget it: the node
    gets a DefineGroup again before the task (the outbox checks the order)."""
    w = env.worker(1)
    group = env.group(1, retries=1)
    (key,) = group.keys.tolist()
    env.schedule()
    env.out.discard(DefineGroup)
    env.out.take(w.wid, ComputeTasks)
    env.start(w, [key])
    other = env.worker(1)  # the retry may run on either
    # The retry runs on a later turn than the one in which the group was forgotten.
    env.fail(w, [key])
    reactor.send_forgets(env.core, env.out)
    assert env.out.take(w.wid, ForgetGroups) == [ForgetGroups((group.gid,))]
    env.schedule()
    holder = w if env.out.take(w.wid, DefineGroup) else other
    if holder is other:
        assert env.out.take(other.wid, DefineGroup, count=1)
    assert env.out.take_keys(holder.wid, ComputeTasks) == [key]
    env.start(holder, [key])
    env.finish(holder, [key])
    env.schedule()
    assert env.out.take(holder.wid, ForgetGroups) == [ForgetGroups((group.gid,))]
    env.out.assert_empty()
    env.check()


def test_a_lost_worker_is_not_told_to_forget(env: Env) -> None:
    w = env.worker(1)
    group = env.group(1)
    env.schedule()
    env.out.discard(DefineGroup)
    env.out.take(w.wid, ComputeTasks)
    env.cancel(group)
    env.out.take(w.wid, CancelTasks, count=1)
    env.lose(w, StopReason.STOPPED)
    env.schedule()
    env.out.assert_empty()
    assert not env.core.forgetting
