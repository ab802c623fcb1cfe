"""Scenarios of tasks sent early to the node (``ComputeTasks.after``, hqshm/node/core.py): a
task that waits for others on this node starts once they all ended well here, as any queued
task then (hand-off included); one whose prerequisite failed, was canceled or retracted stays
queued until the server's cancel drops it."""

from __future__ import annotations

import pytest
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import (
    CancelTasks,
    ComputeTasks,
    RetractTasks,
    TasksRetracted,
    TaskUpdates,
)
from node_env import Dispatch, NodeEnv, Skip, variant

from hqshm.node.core import CHAIN_DEPTH, HANDOFF_DEPTH, RECORDS_PER_TASK

JOB = 1


def key(i: int) -> int:
    return task_key(JOB, i)


def send(env: NodeEnv, gid: int, i: int, after: tuple[int, ...] = ()) -> int:
    env.deliver(ComputeTasks(gid, (key(i),), after=((*(key(a) for a in after),),)
                             if after else ()))
    return key(i)


def dispatched(env: NodeEnv) -> list[int]:
    return [d.key for d in env.out.take(Dispatch)]


def chained(env: NodeEnv) -> list[tuple[int, int, bool]]:
    """What was dispatched: (key, executor, to start only after the one before ends well)."""
    return [(d.key, d.executor, d.after_ok) for d in env.out.take(Dispatch)]


def test_a_chain_sent_early_queues_behind_its_prerequisites_on_one_executor() -> None:
    env = NodeEnv(cpus=2)
    gid = env.group()
    k0 = send(env, gid, 0)
    k1 = send(env, gid, 1, after=(0,))
    k2 = send(env, gid, 2, after=(1,))
    env.turn()
    # Each behind the one it waits for, flagged: the executor runs the chain by itself.
    assert chained(env) == [(k0, 0, False), (k1, 0, True), (k2, 0, True)]
    env.check()
    for k in (k0, k1, k2):
        env.start(k)
        env.end(k)
        env.turn()
        env.check()
    assert dispatched(env) == []
    assert not env.core.queued and not env.core.waiting and not env.core.waiters
    assert not env.core.running


def test_a_chain_step_of_other_resources_waits_for_its_prerequisites_end() -> None:
    env = NodeEnv(cpus=2)
    gid, other = env.group(), env.group(variant(cpus=2))
    k0 = send(env, gid, 0)
    k1 = send(env, other, 1, after=(0,))  # two CPUs: k0's allocation would not do
    env.turn()
    assert chained(env) == [(k0, 0, False)]
    env.start(k0)
    env.end(k0)
    env.turn()
    assert dispatched(env) == [k1]
    env.check()


def test_a_task_sent_after_its_prerequisite_finished_starts_at_once() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group()
    k0 = send(env, gid, 0)
    env.turn()
    assert dispatched(env) == [k0]
    env.start(k0)
    env.end(k0)  # the server has not heard yet when it sends k1 early
    k1 = send(env, gid, 1, after=(0,))
    env.turn()
    assert dispatched(env) == [k1]
    env.check()


def test_it_waits_for_every_task_it_names() -> None:
    env = NodeEnv(cpus=4)
    gid = env.group()
    k0, k1 = send(env, gid, 0), send(env, gid, 1)
    k2 = send(env, gid, 2, after=(0, 1))
    env.turn()
    assert dispatched(env) == [k0, k1]
    env.start(k0)
    env.start(k1)
    env.end(k0)
    env.turn()
    assert chained(env) == [(k2, env.executor_of(k1), True)]  # k1 is the one it waits for
    env.check()
    env.end(k1)
    env.turn()
    env.start(k2)
    env.end(k2)
    env.turn()
    env.check()
    assert not env.core.running and not env.core.queued


def test_a_failed_prerequisite_keeps_it_queued_until_the_server_cancels_it() -> None:
    env = NodeEnv(cpus=2)
    gid = env.group()
    k0 = send(env, gid, 0)
    k1 = send(env, gid, 1, after=(0,))
    k2 = send(env, gid, 2, after=(1,))
    env.turn()
    assert dispatched(env) == [k0, k1, k2]  # chained behind k0
    env.start(k0)
    env.end(k0, ok=False, error="boom")
    env.end(k1, skipped=True)  # the executor does not start them
    env.end(k2, skipped=True)
    env.turn()
    assert dispatched(env) == []  # never started, nor reported
    assert env.core.queued.keys() == {k1, k2} and not env.core.running
    assert [u for u in env.out.take(TaskUpdates) if {s[0] for s in u.started} & {k1, k2}] == []
    env.check()
    env.deliver(CancelTasks((k1, k2)))  # the server aborted them
    env.turn()
    assert dispatched(env) == [] and not env.core.queued and not env.core.waiting
    env.check()


def test_a_task_sent_after_its_prerequisite_failed_never_starts() -> None:
    env = NodeEnv(cpus=2)
    gid = env.group()
    k0 = send(env, gid, 0)
    env.turn()
    dispatched(env)
    env.start(k0)
    env.end(k0, ok=False, error="boom")
    k1 = send(env, gid, 1, after=(0,))
    env.turn()
    assert dispatched(env) == []
    env.deliver(CancelTasks((k1,)))
    env.check()
    assert not env.core.queued


def test_a_canceled_or_retracted_prerequisite_blocks_it() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group()
    k0, k1 = send(env, gid, 0), send(env, gid, 1)  # k1 queued behind k0 (one CPU)
    k2 = send(env, gid, 2, after=(0,))
    k3 = send(env, gid, 3, after=(1,))
    env.turn()
    assert chained(env) == [(k0, 0, False), (k2, 0, True)]  # k1 waits for the CPU
    env.deliver(RetractTasks((k1,)))
    assert env.out.take_one(TasksRetracted).keys == (k1,)
    env.deliver(CancelTasks((k0,)))
    env.end(k0, ok=False, error="killed")
    env.end(k2, skipped=True)
    env.turn()
    assert dispatched(env) == []
    assert env.core.queued.keys() == {k2, k3}
    env.deliver(CancelTasks((k2, k3)))
    env.check()


def test_a_released_task_is_handed_off_like_any_queued_one() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group()
    group = env.core.groups[gid]
    group.ran, group.ran_time = 10, 0.01  # a short group: hand-offs
    k0 = send(env, gid, 0)
    k1 = send(env, gid, 1, after=(0,))
    k2 = send(env, gid, 2)
    env.turn()
    assert dispatched(env) == [k0, k2]  # k2 handed off behind k0; k1 waits
    env.start(k0)
    env.end(k0, duration=0.001)
    env.turn()
    # k2 runs now on the executor; k1, released, is handed off behind it.
    assert dispatched(env) == [k1]
    env.check()


def test_a_group_with_a_waiting_task_is_not_dropped() -> None:
    from hqshm.cluster.protocol import ForgetGroups
    env = NodeEnv(cpus=1)
    gid = env.group()
    other = env.group()
    k0 = send(env, other, 0)
    k1 = send(env, gid, 1, after=(0,))
    env.deliver(ForgetGroups((gid,)))
    assert gid in env.core.groups  # its waiting task holds it
    env.turn()
    assert dispatched(env) == [k0, k1]
    env.start(k0)
    env.end(k0)
    env.turn()
    env.start(k1)
    env.end(k1)
    env.turn()
    env.check()
    assert gid not in env.core.groups  # forgotten once its last task ended


def test_a_chained_task_whose_executor_dies_waits_again() -> None:
    """Behind the task the executor died running, it is blocked (the server cancels it);
    behind a task that goes back to the queue unstarted, it waits for that one again."""
    env = NodeEnv(cpus=1)
    gid = env.group()
    group = env.core.groups[gid]
    group.ran, group.ran_time = 10, 0.01  # short: a hand-off of its own group behind k0
    k0, k1 = send(env, gid, 0), send(env, gid, 1)
    k2 = send(env, gid, 2, after=(0,))
    k3 = send(env, gid, 3, after=(1,))
    env.turn()
    assert chained(env) == [(k0, 0, False), (k1, 0, False), (k3, 0, True)]
    env.start(k0)
    env.die(0)
    env.check()
    assert env.core.waiting[k3].after == {k1} and not env.core.waiting[k3].blocked
    assert env.core.waiting[k2].blocked  # it waited for k0 all along
    env.turn()
    assert chained(env) == [(k1, 0, False), (k3, 0, True)]  # on the new executor
    env.start(k1)
    env.end(k1)
    env.start(k3)
    env.end(k3)
    env.deliver(CancelTasks((k2,)))
    env.turn()
    env.check()
    assert not env.core.running and not env.core.queued


def test_a_chained_task_canceled_before_it_starts_is_skipped() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group()
    k0 = send(env, gid, 0)
    k1 = send(env, gid, 1, after=(0,))
    env.turn()
    assert dispatched(env) == [k0, k1]
    env.deliver(CancelTasks((k1,)))
    assert Skip(0, k1) in env.out.take(Skip)
    env.start(k0)
    env.end(k0)
    env.end(k1, skipped=True)
    env.turn()
    env.check()
    assert not env.core.running and not env.core.queued and not env.core.waiting


def test_after_keys_are_checked_on_arrival() -> None:
    import pytest
    with pytest.raises(ValueError):
        ComputeTasks(1, (key(1),), after=((task_key(2, 0),),))  # another job's task
    with pytest.raises(ValueError):
        ComputeTasks(1, (key(1),), after=((key(1),),))  # itself
    with pytest.raises(ValueError):
        ComputeTasks(1, (key(1),), after=(tuple(key(i) for i in range(2, 100)),))  # too many
    with pytest.raises(ValueError):
        ComputeTasks(1, (key(1), key(2)), after=((key(0),),))  # not aligned


def test_failures_are_remembered_for_early_tasks_within_a_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed array of a million tasks must not leave a million keys on its node: the node
    remembers the last MAX_FAILED_HERE failures, oldest forgotten first."""
    from hqshm.node import core as node_core

    monkeypatch.setattr(node_core, "MAX_FAILED_HERE", 3)
    env = NodeEnv(cpus=1)
    gid = env.group()
    keys = [send(env, gid, i) for i in range(5)]
    for key in keys:
        env.turn()
        env.start(key)
        env.end(key, ok=False, error="boom")
    env.turn()
    assert list(env.core.failed_here) == keys[2:]
    env.check()


def test_a_chain_s_ends_go_a_few_to_a_frame_before_its_node_runs_dry() -> None:
    """A chain step's end frees no CPU the server could fill (the next step goes on with its
    CPUs), so it waits for company, though the node has a free CPU and nothing to start;
    once half the chain the node holds is done, the ends go, for the server to send more."""
    env = NodeEnv(cpus=2)
    gid = env.group()
    keys = [send(env, gid, 0), *(send(env, gid, i, after=(i - 1,)) for i in range(1, 8))]
    env.turn()
    assert len(chained(env)) == 8
    assert [s[0] for s in env.out.take_one(TaskUpdates).started] == keys[:1]
    for k in keys[:3]:
        env.start(k)
        env.end(k)
        env.turn()
        env.out.assert_empty()
    env.start(keys[3])
    env.end(keys[3])  # four done, four left
    env.turn()
    assert [f[0] for f in env.out.take_one(TaskUpdates).finished] == keys[:4]
    for k in keys[4:]:
        env.start(k)
        env.end(k)
    env.turn()  # the last end gives its CPU back: it goes at once
    assert [f[0] for f in env.out.take_one(TaskUpdates).finished] == keys[4:]
    env.check()


def test_a_chain_queues_past_the_hand_off_depth_only_where_the_ring_has_room() -> None:
    """The submission ring is sized for HANDOFF_DEPTH tasks of three records each: a step
    beyond goes behind only while the ring can take three more records (a chain of one group
    takes one each), so that no push waits."""
    env = NodeEnv(cpus=1)
    gid = env.group()
    keys = [send(env, gid, 0), *(send(env, gid, i, after=(i - 1,)) for i in range(1, 20))]
    env.out.rooms[0] = RECORDS_PER_TASK - 1
    env.turn()
    assert [d[0] for d in chained(env)] == keys[:1 + HANDOFF_DEPTH]
    env.out.rooms[0] = RECORDS_PER_TASK
    env.turn()
    assert [d[0] for d in chained(env)] == keys[1 + HANDOFF_DEPTH:1 + CHAIN_DEPTH]  # up to depth
    env.check()
