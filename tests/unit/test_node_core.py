"""Scenarios of the node's core (hqshm/node/core.py): the local queue, hand-offs, report
batching, timers, lost executors and a lost server, and a randomized run of executors that
start, end, die and are canceled, with ``core.check()`` after every step.

One file past 500 lines, as the core is one module: each section is one of its concerns, and
they share the scenario environment (node_env.py)."""

from __future__ import annotations

from collections import deque

import pytest
from core_env import list_pool
from hqshm.cluster.protocol import (
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    ForgetGroups,
    Heartbeat,
    NodeStopping,
    ReserveNode,
    RetractTasks,
    ServerHeartbeat,
    StopNode,
    StopReason,
    TaskNotification,
    TasksRetracted,
    TaskUpdates,
)
from hqshm.cluster.resources import ResourceRequest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from node_env import (
    Dispatch,
    ExecutorStarted,
    Forgotten,
    NodeEnv,
    RegisterAgain,
    Signaled,
    Skip,
    variant,
)

from hqshm import errors
from hqshm.node.core import (
    DRAIN_TICK,
    FLUSH_DELAY,
    HANDOFF_DEPTH,
    HANDOFF_LONG,
    HANDOFF_MAX,
    HANDOFF_SPAN,
    IDLE_POLL,
    KILL_GRACE,
    MAX_EXTRA_EXECUTORS,
    NOT_CONNECTED,
    NOT_RUNNING_HERE,
    OUTSIDE_KILL_HOLD,
    RECONNECT_LIMIT,
    NodeCore,
    Signal,
)

PAST_FLUSH_DELAY = 2 * FLUSH_DELAY  # comfortably: clock sums round


@pytest.fixture
def env() -> NodeEnv:
    return NodeEnv(cpus=2)


def short_group(env: NodeEnv, **group: object) -> int:
    """A group whose tasks are known to be short: the next one is handed off."""
    gid = env.group(**group)  # type: ignore[arg-type]
    [key] = env.run(gid)
    env.end(key, duration=HANDOFF_MAX / 4)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    return gid


# --- the local queue ------------------------------------------------------------------------


def test_tasks_start_on_free_executors_and_their_starts_share_a_frame(env: NodeEnv) -> None:
    gid = env.group()
    keys = env.compute(gid, 3)
    env.turn()
    dispatched = env.out.take(Dispatch, count=2)
    assert [(d.executor, d.key) for d in dispatched] == [(0, keys[0]), (1, keys[1])]
    assert sorted(d.cpu_labels for d in dispatched) == [["0"], ["1"]]
    env.out.assert_empty()  # a task still waits: the starts wait for company
    assert env.core.poll_timeout_ms(env.clock.mono()) <= int(FLUSH_DELAY * 1000) + 1
    launched = env.clock.now()
    env.clock.advance(PAST_FLUSH_DELAY)
    env.turn()
    msg = env.out.take_one(TaskUpdates)
    assert msg.started == tuple((k, 0, launched, 0) for k in keys[:2])
    env.out.assert_empty()
    env.check()


def test_an_idle_executor_with_nothing_queued_reports_at_once(env: NodeEnv) -> None:
    [key] = env.compute(env.group())
    env.turn()
    env.out.take(Dispatch, count=1)
    assert [s[0] for s in env.out.take_one(TaskUpdates).started] == [key]
    env.start(key)
    env.end(key)
    env.turn()
    finished = env.out.take_one(TaskUpdates).finished
    assert finished == ((key, 0, env.clock.now(), env.clock.now(), 0),)
    env.out.assert_empty()
    assert env.core.allocator.is_idle()
    env.check()


def test_a_task_that_ends_before_its_start_is_sent_is_reported_finished_only() -> None:
    env = NodeEnv(cpus=1)
    first, second = env.compute(env.group(), 2)
    env.turn()
    env.out.take(Dispatch, count=1)
    env.out.assert_empty()
    env.start(first)
    env.end(first)
    env.turn()
    assert env.out.take_one(Dispatch).key == second
    # At once, although the second runs on the only executor: the node has nothing left to
    # start, and the server refills it while the second runs.
    msg = env.out.take_one(TaskUpdates)
    assert [s[0] for s in msg.started] == [second]
    assert [f[0] for f in msg.finished] == [first]
    assert msg.failed == ()
    env.check()


def test_ends_go_at_once_when_the_node_has_done_half_of_what_it_holds() -> None:
    """Not FLUSH_DELAY later: a node of short tasks ran dry first, and its CPUs waited a round
    trip to the server for more."""
    env = NodeEnv(cpus=1)
    gid = group_of_mean(env, 2 * HANDOFF_LONG)  # one at a time: no hand-offs
    keys = env.compute(gid, 4)
    env.turn()
    assert env.out.take_one(Dispatch).key == keys[0]
    env.start(keys[0])
    env.end(keys[0])
    env.turn()
    assert env.out.take_one(Dispatch).key == keys[1]
    env.out.assert_empty()  # one end, two tasks still queued here
    env.start(keys[1])
    env.end(keys[1])
    env.turn()
    assert env.out.take_one(Dispatch).key == keys[2]
    msg = env.out.take_one(TaskUpdates)  # two ends, one queued
    assert [f[0] for f in msg.finished] == keys[:2]
    env.check()


def test_failed_tasks_are_retryable_only_when_their_program_ran(env: NodeEnv) -> None:
    gid = env.group()
    ran, never_ran = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=2)
    env.out.take(TaskUpdates)
    env.start(ran)
    env.end(ran, ok=False, error=errors.exit_code_error(1))
    env.end(never_ran, ok=False, error="Could not create working directory: x")
    env.turn()
    failed = env.out.take_one(TaskUpdates).failed
    assert [(f[0], f[5], f[6]) for f in failed] == [
        (ran, errors.exit_code_error(1), True),
        (never_ran, "Could not create working directory: x", False),
    ]
    env.check()


def test_groups_run_by_priority_then_by_job() -> None:
    env = NodeEnv(cpus=1)
    low, older, newer, high = (env.group(priority=p) for p in (0, 1, 1, 5))
    [low_key] = env.compute(low)
    [newer_key] = env.compute(newer, job=10)
    [older_key] = env.compute(older, job=5)
    [high_key] = env.compute(high)
    order = []
    for _ in range(4):
        env.turn()
        [dispatch] = env.out.take(Dispatch, count=1)
        order.append(dispatch.key)
        env.start(dispatch.key)
        env.end(dispatch.key, duration=1.0)
    assert order == [high_key, older_key, newer_key, low_key]
    env.check()


def test_a_group_that_does_not_fit_does_not_block_the_next(env: NodeEnv) -> None:
    big = env.group(variant(cpus=2), priority=5)
    small = env.group()
    [blocker] = env.run(small)
    [big_key] = env.compute(big)
    [small_key] = env.compute(small)
    env.turn()
    assert env.out.take_one(Dispatch).key == small_key
    env.end(blocker)
    env.end(small_key)
    env.turn()
    assert env.out.take_one(Dispatch).key == big_key
    env.check()


def test_tasks_of_an_undefined_group_are_ignored(env: NodeEnv) -> None:
    env.deliver(ComputeTasks(99, (1, 2)))
    env.turn()
    env.out.assert_empty()
    assert not env.core.queued
    env.check()


# --- what a task is given ---------------------------------------------------------------------


def test_a_task_gets_its_resources_in_its_environment() -> None:
    env = NodeEnv(2, list_pool("gpus/amd", "a0", "a1"), list_pool("gpus/nvidia", "n0", "n1"))
    gid = env.group(variant(cpus=1, gpus_nvidia=1, gpus_amd=2))
    [key] = env.compute(gid, entries=[b"entry \xff"])
    env.turn()
    dispatch = env.out.take_one(Dispatch)
    assert dispatch.env == {
        "HQ_RESOURCE_REQUEST_cpus": "1 compact",
        "HQ_RESOURCE_REQUEST_gpus_nvidia": "1 compact",
        "HQ_RESOURCE_REQUEST_gpus_amd": "2 compact",
        "HQ_RESOURCE_VALUES_cpus": "0",
        "HQ_RESOURCE_VALUES_gpus_amd": "a0,a1",
        "ROCR_VISIBLE_DEVICES": "a0,a1",
        "HQ_RESOURCE_VALUES_gpus_nvidia": "n0",
        "CUDA_VISIBLE_DEVICES": "n0",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    assert (dispatch.key, dispatch.entry, dispatch.cpu_labels) == (key, b"entry \xff", ["0"])
    assert (dispatch.cpus, dispatch.numa, dispatch.whole_cpus) == ([], -1, True)
    env.check()


def test_a_task_of_several_variants_is_told_which_one_it_got(env: NodeEnv) -> None:
    gid = env.group(variant(cpus=4), variant(cpus=1))
    [key] = env.compute(gid)
    env.turn()
    dispatch = env.out.take_one(Dispatch)
    assert dispatch.env["HQ_RESOURCE_VARIANT"] == "1"
    assert dispatch.env["HQ_RESOURCE_REQUEST_cpus"] == "1 compact"
    assert env.out.take_one(TaskUpdates).started[0][3] == 1  # the variant, for the server
    env.check()


def test_pinned_tasks_get_a_cpu_mask_and_the_numa_node_their_cpus_share() -> None:
    env = NodeEnv(4, pin=True, cpu_numa={0: 0, 1: 0, 2: 1, 3: 1})
    env.compute(env.group(variant(cpus=2)), 2)
    env.turn()
    first, second = env.out.take(Dispatch, count=2)
    assert (sorted(first.cpus), first.numa) == ([0, 1], 0)
    assert (sorted(second.cpus), second.numa) == ([2, 3], 1)
    env.check()


def test_cpus_of_two_numa_nodes_bind_no_memory() -> None:
    env = NodeEnv(2, pin=True, cpu_numa={0: 0, 1: 1})
    env.compute(env.group(variant(cpus=2)))
    env.turn()
    dispatch = env.out.take_one(Dispatch)
    assert (sorted(dispatch.cpus), dispatch.numa) == ([0, 1], -1)
    env.check()


def test_fractional_tasks_start_more_executors_up_to_a_limit() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group(variant(cpus=0.1))
    env.compute(gid, 6)
    env.turn()
    assert [e.index for e in env.out.take(ExecutorStarted)] == [1, 2, 3]
    dispatched = env.out.take(Dispatch, count=MAX_EXTRA_EXECUTORS)
    assert [d.executor for d in dispatched] == [0, 1, 2, 3]
    assert not any(d.whole_cpus for d in dispatched)
    env.check()


def test_a_multinode_task_takes_the_node_and_gets_no_resource_variables(env: NodeEnv) -> None:
    gid = env.group(variant(cpus=None, n_nodes=2))
    [key] = env.compute(gid, nodes=["node1", "node2"])
    env.turn()
    dispatch = env.out.take_one(Dispatch)
    assert (dispatch.key, dispatch.env, dispatch.cpu_labels) == (key, {}, [])
    assert dispatch.nodes == ("node1", "node2")
    env.start(key)
    env.end(key)
    assert env.core.allocator.is_idle()
    env.check()


# --- hand-offs --------------------------------------------------------------------------------


def test_the_next_short_task_waits_behind_the_running_one_on_its_cpus() -> None:
    env = NodeEnv(cpus=1)
    gid = short_group(env)
    first, second, third = env.compute(gid, 3)
    env.turn()
    running, handed = env.out.take(Dispatch, count=2)
    assert (running.key, handed.key) == (first, second)
    assert handed.executor == running.executor and handed.cpu_labels == running.cpu_labels
    env.out.assert_empty()
    # Reported only when it starts: until then the loop collects every DRAIN_TICK.
    assert env.core.poll_timeout_ms(env.clock.mono()) == int(DRAIN_TICK * 1000) + 1
    env.clock.advance(PAST_FLUSH_DELAY)
    env.turn()
    assert [s[0] for s in env.out.take_one(TaskUpdates).started] == [first]
    env.start(first)
    env.end(first, duration=0.001)
    began = env.clock.now() - 0.0005
    env.start(second, at=began)
    env.turn()
    assert env.out.take_one(Dispatch).key == third  # handed off behind the second
    env.clock.advance(PAST_FLUSH_DELAY)
    env.turn()
    msg = env.out.take_one(TaskUpdates)
    assert msg.started == ((second, 0, began, 0),)
    assert [f[0] for f in msg.finished] == [first]
    env.check()


def very_short_group(env: NodeEnv) -> int:
    """A group so short that HANDOFF_DEPTH of its tasks wait behind a running one."""
    gid = env.group()
    [key] = env.run(gid)
    env.end(key, duration=HANDOFF_SPAN / (2 * HANDOFF_DEPTH))
    env.turn()
    env.out.take(TaskUpdates, count=1)
    return gid


def test_very_short_tasks_queue_deeper_spread_over_the_executors() -> None:
    env = NodeEnv(cpus=2)
    gid = very_short_group(env)
    keys = env.compute(gid, 2 + 2 * HANDOFF_DEPTH + 1)
    env.turn()
    dispatched = env.out.take(Dispatch, count=2 + 2 * HANDOFF_DEPTH)
    # One behind each running task a round, not all behind the first.
    assert [d.executor for d in dispatched] == [0, 1] * (1 + HANDOFF_DEPTH)
    assert [d.key for d in dispatched] == keys[:-1]
    for d in dispatched[2:]:
        assert d.cpu_labels == dispatched[d.executor].cpu_labels
    env.out.assert_empty()  # the last waits in the local queue
    for key in keys[:-1:2]:  # executor 0 runs its five
        env.start(key)
        env.end(key, duration=0.0001)
    env.turn()
    assert env.out.take_one(Dispatch).key == keys[-1]
    env.check()


def test_a_group_queues_hand_offs_for_a_span_of_its_work() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group()
    [key] = env.run(gid)
    env.end(key, duration=HANDOFF_SPAN / 2.5)  # two cover the span, not three
    env.turn()
    env.out.take(TaskUpdates, count=1)
    env.compute(gid, 5)
    env.turn()
    env.out.take(Dispatch, count=3)
    env.out.assert_empty()
    env.check()


def test_canceling_hand_offs_deep_in_the_queue_skips_each() -> None:
    env = NodeEnv(cpus=1)
    gid = very_short_group(env)
    keys = env.compute(gid, 1 + HANDOFF_DEPTH)
    env.turn()
    env.out.take(Dispatch, count=1 + HANDOFF_DEPTH)
    env.start(keys[0])
    env.deliver(CancelTasks(tuple(keys[1:3])))
    assert env.out.take(Skip) == [Skip(0, keys[1]), Skip(0, keys[2])]
    env.out.assert_empty()
    env.end(keys[0], duration=0.0001)
    env.end(keys[1], ok=False, skipped=True)
    env.end(keys[2], ok=False, skipped=True)
    assert not env.core.allocator.is_idle()  # the next hand-off's now
    for key in keys[3:]:
        env.start(key)
        env.end(key, duration=0.0001)
    env.turn()
    msg = env.out.take_one(TaskUpdates)
    assert sorted(f[0] for f in msg.finished) == sorted([keys[0], *keys[3:]])
    assert msg.failed == ()
    assert env.core.allocator.is_idle()
    env.check()


def group_of_mean(env: NodeEnv, mean: float) -> int:
    """A group whose one task so far ran for ``mean`` seconds."""
    gid = env.group()
    [key] = env.run(gid)
    env.end(key, duration=mean)
    env.clock.advance(PAST_FLUSH_DELAY)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    return gid


def test_a_longer_group_hands_off_one_task_whose_start_its_executor_tells() -> None:
    env = NodeEnv(cpus=1)
    gid = group_of_mean(env, (HANDOFF_MAX + HANDOFF_LONG) / 2)
    first, second, third = env.compute(gid, 3)
    env.turn()
    dispatched = env.out.take(Dispatch, count=2)
    assert [(d.key, d.tell_start) for d in dispatched] == [(first, False), (second, True)]
    env.start(first)
    env.clock.advance(PAST_FLUSH_DELAY)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    # The executor rings when it starts the hand-off: the loop need not tick for it.
    assert env.core.poll_timeout_ms(env.clock.mono()) > int(DRAIN_TICK * 1000) + 1
    env.end(first, duration=HANDOFF_MAX)
    env.start(second)
    env.turn()
    assert [(d.key, d.tell_start) for d in env.out.take(Dispatch)] == [(third, True)]
    env.check()


def test_short_hand_offs_are_collected_on_the_tick() -> None:
    env = NodeEnv(cpus=1)
    gid = short_group(env)
    env.compute(gid, 2)
    env.turn()
    assert not any(d.tell_start for d in env.out.take(Dispatch, count=2))
    assert env.core.poll_timeout_ms(env.clock.mono()) <= int(DRAIN_TICK * 1000) + 1
    env.check()


def test_a_group_longer_than_handoff_long_is_dispatched_one_at_a_time() -> None:
    env = NodeEnv(cpus=1)
    gid = group_of_mean(env, 2 * HANDOFF_LONG)
    env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=1)
    env.out.assert_empty()
    env.check()


def test_a_hand_off_never_jumps_over_a_better_group() -> None:
    env = NodeEnv(cpus=1)
    short = short_group(env)
    better = env.group(priority=5)
    [short_key] = env.compute(short)
    env.turn()
    assert env.out.take_one(Dispatch).key == short_key
    env.compute(better)
    env.compute(short)
    env.turn()
    env.out.take(TaskUpdates)
    env.out.assert_empty()  # the better group's task waits for the CPU instead
    env.check()


def test_a_handed_off_task_is_timed_from_its_start() -> None:
    env = NodeEnv(cpus=1, heartbeat=100.0)
    gid = short_group(env, time_limit=10.0)
    first, second = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=2)
    env.start(first)
    env.end(first, duration=0.001)
    env.clock.advance(3.0)
    pid = env.start(second, at=env.clock.now() - 2.0)  # the executor started it 2 s ago
    env.clock.advance(7.5)
    env.turn()
    env.out.take(TaskUpdates)
    env.out.assert_empty()
    env.clock.advance(0.5)
    env.turn()
    assert env.out.take(Signaled) == [Signaled(pid, Signal.INTERRUPT)]
    env.check()


def test_canceling_a_handed_off_task_skips_it_and_keeps_the_cpus_for_the_running_one() -> None:
    env = NodeEnv(cpus=1)
    gid = short_group(env)
    first, second = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=2)
    env.start(first)
    env.deliver(CancelTasks((second,)))
    assert env.out.take(Skip) == [Skip(0, second)]
    env.out.assert_empty()  # no pid yet: the signal waits for one
    env.end(first, duration=0.001)
    assert not env.core.allocator.is_idle()  # still the second's, until it is skipped
    env.end(second, ok=False, skipped=True)
    env.turn()
    msg = env.out.take_one(TaskUpdates)
    assert [f[0] for f in msg.finished] == [first] and msg.failed == ()
    env.out.take(Signaled, count=0)
    env.out.assert_empty()
    assert env.core.allocator.is_idle()
    env.check()


# --- canceling, retracting ------------------------------------------------------------------


def test_a_canceled_task_gets_sigint_then_sigkill_and_is_not_reported() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group()
    [key] = env.run(gid)
    pid = env.pids[key]
    env.deliver(CancelTasks((key,)))
    assert env.out.take(Signaled) == [Signaled(pid, Signal.INTERRUPT)]
    env.clock.advance(KILL_GRACE)
    env.turn()
    assert env.out.take(Signaled) == [Signaled(pid, Signal.KILL)]
    env.end(key, ok=False, error=errors.signal_error(9))
    # Its main process is gone; what else lives in its process group goes too.
    assert env.out.take(Signaled) == [Signaled(pid, Signal.KILL)]
    env.turn()
    env.out.assert_empty()
    env.check()


def test_a_task_canceled_before_it_has_a_pid_is_signaled_when_it_starts(env: NodeEnv) -> None:
    [key] = env.compute(env.group())
    env.turn()
    env.out.take(Dispatch, count=1)
    env.out.take(TaskUpdates, count=1)
    env.deliver(CancelTasks((key,)))
    env.out.assert_empty()
    pid = env.start(key)
    assert env.out.take(Signaled) == [Signaled(pid, Signal.INTERRUPT)]
    env.check()


def test_queued_tasks_are_canceled_and_retracted_without_a_trace() -> None:
    env = NodeEnv(cpus=1)
    running, canceled, retracted, kept = env.compute(env.group(), 4)
    env.turn()
    env.out.take(Dispatch, count=1)
    env.deliver(CancelTasks((canceled,)))
    env.deliver(RetractTasks((running, canceled, retracted)))
    assert env.out.take(TasksRetracted) == [TasksRetracted((retracted,))]
    env.start(running)
    env.end(running)
    env.turn()
    assert env.out.take_one(Dispatch).key == kept
    env.check()


# --- executors that die -----------------------------------------------------------------------


DIED = "The executor running the task on worker 7 (node1) died: killed by signal 9 (SIGKILL)"


def test_a_dead_executor_fails_its_task_with_a_cause_naming_worker_and_host() -> None:
    env = NodeEnv(cpus=1)
    env.register(worker_id=7)
    gid = env.group()
    [first] = env.run(gid)
    env.die(0, "killed by signal 9 (SIGKILL)")
    env.turn()
    [failed] = env.out.take_one(TaskUpdates).failed
    assert (failed[0], failed[5], failed[6]) == (first, DIED, True)
    assert env.core.allocator.is_idle()
    env.check()
    env.compute(gid)
    env.turn()
    assert env.out.take_one(Dispatch).executor == 0  # on the fresh executor


def test_a_hand_off_behind_a_task_that_killed_its_executor_runs_again() -> None:
    """Issue 8 item 5: the task queued behind the killer was failed with it."""
    env = NodeEnv(cpus=1)
    env.register(worker_id=7)
    gid = short_group(env)
    first, second = env.compute(gid, 2, instances=[0, 3], entries=[b"a", b"b"])
    env.turn()
    env.out.take(Dispatch, count=2)
    env.start(first)
    env.die(0, "killed by signal 9 (SIGKILL)")
    env.check()
    env.turn()
    [again] = env.out.take(Dispatch)
    assert (again.executor, again.key, again.instance, again.entry) == (0, second, 3, b"b")
    env.clock.advance(PAST_FLUSH_DELAY)
    env.turn()
    [update] = env.out.take(TaskUpdates)
    assert [(f[0], f[5]) for f in update.failed] == [(first, DIED)]
    assert [s[0] for s in update.started] == [second]  # started anew, never failed
    env.start(second)
    env.end(second)
    env.turn()
    env.check()
    assert env.out.take_one(TaskUpdates).finished[0][0] == second
    assert env.core.allocator.is_idle()


def test_a_canceled_hand_off_behind_a_dead_executor_ends_quietly() -> None:
    env = NodeEnv(cpus=1)
    gid = short_group(env)
    first, second = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=2)
    env.deliver(CancelTasks((second,)))
    env.out.take(Skip, count=1)
    env.die(0)
    env.turn()
    [update] = env.out.take(TaskUpdates)
    assert [f[0] for f in update.failed] == [first]
    env.out.assert_empty()
    assert not env.core.running and not env.core.queued
    env.check()


# --- timers -----------------------------------------------------------------------------------


def test_the_time_limit_interrupts_then_kills_until_the_task_ends() -> None:
    env = NodeEnv(cpus=1)
    gid = env.group(time_limit=2.0)
    [key] = env.run(gid)
    pid = env.pids[key]
    env.clock.advance(1.5)
    env.turn()
    env.out.assert_empty()
    env.clock.advance(0.5)
    env.turn()
    assert env.out.take(Signaled) == [Signaled(pid, Signal.INTERRUPT)]
    for _ in range(2):  # once a grace period, until it ends
        env.clock.advance(KILL_GRACE)
        env.turn()
        assert env.out.take(Signaled) == [Signaled(pid, Signal.KILL)]
        env.turn()
        env.out.assert_empty()
    env.end(key, ok=False, error=errors.signal_error(9))
    assert env.out.take(Signaled) == [Signaled(pid, Signal.KILL)]
    env.turn()
    [failed] = env.out.take_one(TaskUpdates).failed
    assert (failed[0], failed[5], failed[6]) == (key, errors.TIME_LIMIT_REACHED, False)
    env.out.assert_empty()
    env.check()


def test_heartbeats_go_out_every_heartbeat() -> None:
    env = NodeEnv(heartbeat=2.0)
    for _ in range(3):
        env.clock.advance(1.5)
        env.turn()
        env.out.assert_empty()
        env.clock.advance(0.5)
        env.turn()
        env.out.take(Heartbeat, count=1)
        env.deliver(ServerHeartbeat())
    env.check()


def pass_time(env: NodeEnv, seconds: float, step: float = 0.5) -> None:
    """Time passes with the loop turning (it does at least once a heartbeat and a second)."""
    for _ in range(round(seconds / step)):
        env.clock.advance(step)
        env.turn()


@pytest.mark.parametrize("heartbeat, limit", [(1.0, 10.0), (8.0, 24.0)])
def test_a_silent_server_is_lost(heartbeat: float, limit: float) -> None:
    env = NodeEnv(heartbeat=heartbeat)
    pass_time(env, limit / 2)
    env.deliver(ServerHeartbeat())
    pass_time(env, limit)
    assert not env.core.stopping
    env.clock.advance(0.01)
    env.turn()
    assert env.core.stopping and env.core.exit_code == 1 and not env.core.dropped
    env.out.discard(Heartbeat)
    env.out.assert_empty()
    env.check()


def test_the_next_heartbeat_bounds_the_poll() -> None:
    env = NodeEnv(heartbeat=0.3)
    assert env.core.poll_timeout_ms(env.clock.mono()) == 301


def dropped_with_tasks(env: NodeEnv) -> tuple[int, int, int]:
    """A node running one task (its pid), with one more queued and a start not yet sent."""
    gid = env.group()
    [running] = env.run(gid)
    [fresh, queued] = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=1)
    return running, fresh, queued


def assert_dropped_kills_unreported(env: NodeEnv, running: int, fresh: int) -> None:
    """Stopping at once, exit 1; shutdown kills every task without grace, reports nothing."""
    assert env.core.stopping and env.core.dropped and env.core.exit_code == 1
    assert not env.core.queued
    mono = env.clock.mono()
    env.core.begin_shutdown(mono)
    assert env.out.take(Signaled) == [Signaled(env.pids[running], Signal.KILL)]
    late = env.start(fresh)
    assert env.out.take(Signaled) == [Signaled(late, Signal.KILL)]
    env.end(running, ok=False, error=errors.signal_error(9))
    env.end(fresh, ok=False, error=errors.signal_error(9))
    # Their process groups, once their main processes ended (as after any kill).
    assert env.out.take(Signaled) == [Signaled(env.pids[k], Signal.KILL) for k in (running, fresh)]
    env.core.flush(mono, force=True)
    env.out.discard(Heartbeat)
    env.out.assert_empty()  # neither their start nor their end: they run elsewhere
    env.check()


@pytest.mark.parametrize("on_server_lost", ["stop", "finish-running"])
def test_a_dropped_node_kills_its_tasks_unreported_and_exits_1(on_server_lost: str) -> None:
    """Issue 8 item 4: the server dropped the node and gave its tasks to others."""
    env = NodeEnv(cpus=2, heartbeat=1.0, on_server_lost=on_server_lost)
    running, fresh, _ = dropped_with_tasks(env)
    env.deliver(StopNode(StopReason.DROPPED))
    env.turn()
    env.out.take(Dispatch, count=0)
    assert_dropped_kills_unreported(env, running, fresh)


def test_a_node_frozen_past_its_heartbeat_timeout_knows_it_was_dropped() -> None:
    env = NodeEnv(cpus=2, heartbeat=1.0)
    running, fresh, queued = dropped_with_tasks(env)
    env.clock.advance(4.0)  # the server waits 3 heartbeats + 1 s: not yet
    env.turn()
    assert not env.core.stopping
    env.out.take(TaskUpdates, count=1)  # the start of `fresh`, before the freeze
    env.out.discard(Heartbeat)
    env.clock.advance(4.01)  # SIGSTOP, then SIGCONT
    env.deliver(ServerHeartbeat())  # old words from the server, read first, change nothing
    env.turn()
    env.out.take(Dispatch, count=0)  # the queued task does not start
    assert_dropped_kills_unreported(env, running, fresh)


def test_a_node_that_took_long_to_register_is_not_dropped() -> None:
    env = NodeEnv(heartbeat=1.0)
    env.clock.advance(30.0)  # connecting: up to 20 tries, 2 s apart
    env.register()
    env.turn()
    assert not env.core.stopping


def test_a_node_frozen_between_its_timers_and_its_starts_starts_nothing() -> None:
    env = NodeEnv(cpus=1, heartbeat=1.0)
    gid = env.group()
    env.compute(gid)
    env.clock.advance(4.01)
    env.core.start_tasks(env.clock.now(), env.clock.mono())
    env.out.assert_empty()
    env.turn()
    assert env.core.dropped


def test_with_finish_running_a_lost_server_lets_running_tasks_end() -> None:
    env = NodeEnv(cpus=1, on_server_lost="finish-running")
    gid = env.group()
    running, queued = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=1)
    env.core.connection_lost(env.clock.mono())
    assert env.core.finishing and not env.core.stopping and not env.core.queued
    env.start(running)
    env.end(running)
    env.turn()
    env.out.take(Dispatch, count=0)
    assert env.core.finished and env.core.exit_code == 1
    env.check()


def test_the_worker_time_limit_sends_what_it_has_then_leaves() -> None:
    env = NodeEnv(cpus=1, time_limit=5.0)
    [first, _] = env.compute(env.group(), 2)
    env.turn()
    env.out.take(Dispatch, count=1)
    env.clock.advance(5.0)
    env.turn()
    updates, stopping = env.out.take(object, count=2)
    assert isinstance(updates, TaskUpdates) and [s[0] for s in updates.started] == [first]
    assert stopping == NodeStopping(StopReason.TIME_LIMIT)
    assert env.core.stopping and env.core.exit_code == 0
    env.check()


def test_an_idle_node_leaves_after_its_idle_timeout() -> None:
    env = NodeEnv(idle_timeout=3.0, heartbeat=100.0)
    env.register(idle_timeout=100.0)  # the server's default does not override the node's
    [key] = env.run(env.group())
    env.clock.advance(5.0)
    env.end(key)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    env.clock.advance(2.5)
    env.turn()
    env.out.assert_empty()
    env.clock.advance(0.5)
    env.turn()
    assert env.out.take(NodeStopping) == [NodeStopping(StopReason.IDLE_TIMEOUT)]
    assert env.core.stopping and env.core.exit_code == 0
    env.check()


def test_the_servers_idle_timeout_applies_when_the_node_has_none() -> None:
    env = NodeEnv()
    env.register(idle_timeout=3.0)
    env.clock.advance(3.0)
    env.turn()
    assert env.out.take(NodeStopping) == [NodeStopping(StopReason.IDLE_TIMEOUT)]


def test_a_node_reserved_for_a_multinode_task_does_not_idle_out() -> None:
    env = NodeEnv(idle_timeout=3.0)
    env.deliver(ReserveNode(123))
    env.clock.advance(10.0)
    env.deliver(ServerHeartbeat())
    env.turn()
    env.out.discard(Heartbeat)
    env.out.assert_empty()
    env.deliver(ReserveNode(0))  # released: idle from now
    env.clock.advance(2.5)
    env.turn()
    env.out.assert_empty()
    env.clock.advance(0.5)
    env.turn()
    assert env.out.take(NodeStopping) == [NodeStopping(StopReason.IDLE_TIMEOUT)]


def test_poll_timeout_is_the_next_due_timer_or_flush(env: NodeEnv) -> None:
    assert env.core.poll_timeout_ms(env.clock.mono()) == 1001  # nothing due: a second
    gid = env.group(time_limit=0.5)
    env.run(gid)
    assert env.core.poll_timeout_ms(env.clock.mono()) == 501
    env.clock.advance(0.7)
    assert env.core.poll_timeout_ms(env.clock.mono()) == 1  # overdue: poll, do not wait


# --- the server says stop; the node stops -----------------------------------------------------


def test_stopped_by_the_server_the_node_exits_zero(env: NodeEnv) -> None:
    env.deliver(StopNode(StopReason.STOPPED))
    assert env.core.stopping and env.core.exit_code == 0
    env.core.connection_lost(env.clock.mono())  # the server closes the link after stopping us: no matter
    assert env.core.exit_code == 0
    env.out.assert_empty()


def test_a_stopping_server_is_a_lost_server(env: NodeEnv) -> None:
    env.deliver(StopNode(StopReason.SERVER_STOPPED))
    assert env.core.stopping and env.core.exit_code == 1


def test_shutdown_interrupts_every_task_and_kills_what_outlives_the_grace(env: NodeEnv) -> None:
    gid = env.group()
    started, unstarted = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=2)
    pid = env.start(started)
    mono = env.clock.mono()
    assert env.core.begin_shutdown(mono) == mono + KILL_GRACE + 1.0
    assert env.out.take(Signaled) == [Signaled(pid, Signal.INTERRUPT)]
    env.core.escalate_shutdown(mono + KILL_GRACE)
    env.out.assert_empty()
    env.core.escalate_shutdown(mono + KILL_GRACE + 0.01)
    assert env.out.take(Signaled) == [Signaled(pid, Signal.KILL)]
    env.core.escalate_shutdown(mono + KILL_GRACE + 0.02)  # once
    env.out.assert_empty()
    late = env.start(unstarted)  # too late to be interrupted: killed at once
    assert env.out.take(Signaled) == [Signaled(late, Signal.KILL)]
    env.check()


def test_a_task_killed_by_the_signal_that_then_reaches_the_node_is_not_a_failure() -> None:
    """A batch system ending a job (walltime, preemption, scancel) signals all its processes
    at once: a task that died of SIGTERM a moment before the node got its own is a loss of the
    node, run again elsewhere, not a failure. Such failures are held back OUTSIDE_KILL_HOLD;
    other failures, and these once the hold is over, go at once."""
    env = NodeEnv(cpus=3)
    gid = env.group()
    term, broken, shell = env.run(gid, 3)
    env.end(term, ok=False, error=errors.signal_error(15))
    env.end(broken, ok=False, error=errors.exit_code_error(1))
    env.end(shell, ok=False, error=errors.exit_code_error(143))
    env.core.flush(env.clock.mono())
    report = env.out.take_one(TaskUpdates)
    assert [f[0] for f in report.failed] == [broken]
    assert env.core.poll_timeout_ms(env.clock.mono()) <= OUTSIDE_KILL_HOLD * 1000 + 1
    env.core.signaled()
    env.core.flush(env.clock.mono(), force=True)
    env.out.assert_empty()  # the server sees the disconnect: both run again

    env = NodeEnv(cpus=1)
    gid = env.group()
    (killed,) = env.run(gid)
    env.end(killed, ok=False, error=errors.signal_error(9))  # the OOM killer, say
    env.core.flush(env.clock.mono())
    env.out.assert_empty()
    env.clock.advance(OUTSIDE_KILL_HOLD)
    env.core.flush(env.clock.mono())
    report = env.out.take_one(TaskUpdates)
    assert [(f[0], f[5]) for f in report.failed] == [(killed, errors.signal_error(9))]
    env.check()


def test_a_signaled_node_kills_its_tasks_unreported_and_sends_what_ended_before() -> None:
    """SIGINT/SIGTERM to the worker is CONNECTION LOST (spec/deployment.md §4.2): the server
    must see only the disconnect, and give the running tasks back with a crash; the tasks
    that ended before the signal are reported as they ended."""
    env = NodeEnv(cpus=3)
    gid = env.group()
    done, broken, running = env.run(gid, 3)
    fresh, late, queued = env.compute(gid, 3)
    env.end(done)
    env.end(broken, ok=False, error=errors.exit_code_error(1))
    env.core.start_tasks(env.clock.now(), env.clock.mono())  # no flush yet
    assert [d.key for d in env.out.take(Dispatch)] == [fresh, late]
    late_pid = env.start(late)
    env.core.signaled()
    assert env.core.stopping and env.core.exit_code == 1 and not env.core.dropped
    assert queued not in env.core.queued
    env.out.assert_empty()  # no NodeStopping: a stop on purpose would count no crash
    mono = env.clock.mono()
    env.core.begin_shutdown(mono)  # with grace, as any shutdown
    assert env.out.take(Signaled) == [Signaled(env.pids[running], Signal.INTERRUPT),
                                      Signaled(late_pid, Signal.INTERRUPT)]
    fresh_pid = env.start(fresh)
    assert env.out.take(Signaled) == [Signaled(fresh_pid, Signal.INTERRUPT)]
    for key in (running, late, fresh):
        env.end(key, ok=False, error=errors.signal_error(2))
    assert env.out.take(Signaled) == [Signaled(env.pids[k], Signal.KILL)
                                      for k in (running, late, fresh)]
    env.core.flush(mono, force=True)
    report = env.out.take_one(TaskUpdates)
    assert [s[0] for s in report.started] == [fresh, late]  # running: a crash when lost
    assert [f[0] for f in report.finished] == [done]
    assert [(f[0], f[5], f[6]) for f in report.failed] == [
        (broken, errors.exit_code_error(1), True)]
    env.out.assert_empty()
    env.check()


# --- outliving the server (--on-server-lost reconnect) ----------------------------------------


def reconnecting(cpus: int = 2, **settings: object) -> NodeEnv:
    """A reconnect-mode node registered with the server "uid" as worker 1."""
    env = NodeEnv(cpus=cpus, on_server_lost="reconnect", **settings)
    env.register(worker_id=1)
    return env


def lose_server(env: NodeEnv) -> None:
    """The connection drops; the loop's next turn asks to register again at once."""
    env.core.connection_lost(env.clock.mono())
    assert env.core.lost and not env.core.stopping
    env.turn()


def test_a_node_that_lost_its_server_keeps_its_tasks_and_registers_again(
        caplog: pytest.LogCaptureFixture) -> None:
    env = reconnecting(cpus=1, heartbeat=2.0)
    gid = env.group()
    [running] = env.run(gid)
    [queued] = env.compute(gid)
    env.turn()
    lose_server(env)
    assert "Server lost; running tasks go on" in caplog.text
    assert not env.core.queued and list(env.core.running) == [running]
    assert env.out.take_one(RegisterAgain) == RegisterAgain("uid", ((running, 0, 0),), None)
    env.out.assert_empty()  # the running task is not signaled, nothing goes to the server
    for _ in range(3):  # once a second; no heartbeats to nobody, no silence rule
        pass_time(env, 0.5)
        env.out.assert_empty()
        pass_time(env, 0.5)
        env.out.take(RegisterAgain, count=1)
    assert not env.core.stopping
    env.register(worker_id=5)
    env.turn()
    env.out.assert_empty()  # the server took it back: its start is known there
    assert env.core.worker_id == 5 and not env.core.lost
    env.end(running)
    env.turn()
    assert [f[0] for f in env.out.take_one(TaskUpdates).finished] == [running]
    assert env.out.take(Forgotten) == [Forgotten(gid)]  # the old server's group
    env.out.assert_empty()
    assert queued not in env.core.running
    env.check()


def test_reports_of_a_lost_server_wait_for_the_next_one() -> None:
    env = reconnecting()
    gid = env.group()
    first, second = env.run(gid, 2)
    lose_server(env)
    env.out.take(RegisterAgain, count=1)
    env.end(first)
    env.end(second, ok=False, error="boom")
    env.turn()
    env.out.assert_empty()  # kept
    assert env.core.poll_timeout_ms(env.clock.mono()) > 100  # no flush due: no busy loop
    env.clock.advance(1.0)
    env.turn()
    [again] = env.out.take(RegisterAgain, count=1)
    assert sorted(again.resumed) == sorted([(first, 0, 0), (second, 0, 0)])
    env.register(worker_id=2)
    msg = env.out.take_one(TaskUpdates)  # at once
    assert [f[0] for f in msg.finished] == [first] and msg.started == ()
    assert [(f[0], f[5], f[6]) for f in msg.failed] == [(second, "boom", True)]
    assert env.out.take(Forgotten) == [Forgotten(gid)]  # the old server's group
    env.out.assert_empty()
    env.check()


def test_a_report_the_lost_server_may_not_have_journaled_is_resumed_and_sent_again() -> None:
    env = reconnecting()
    gid = env.group()
    acked, unacked = env.run(gid, 2)
    env.end(acked)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    env.clock.advance(0.6)
    env.deliver(ServerHeartbeat())  # said after that report was read and journaled
    env.end(unacked)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    env.clock.advance(0.1)
    env.deliver(ServerHeartbeat())  # too soon to count: it may have been sent before
    lose_server(env)
    assert env.out.take_one(RegisterAgain).resumed == ((unacked, 0, 0),)
    env.register(worker_id=2)
    assert [f[0] for f in env.out.take_one(TaskUpdates).finished] == [unacked]
    env.check()


def test_tasks_the_new_server_rejects_are_killed_and_never_reported() -> None:
    env = reconnecting(cpus=3)
    gid = env.group()
    kept, rejected, ended = env.run(gid, 3)
    lose_server(env)
    env.out.take(RegisterAgain, count=1)
    env.end(ended)
    env.register(worker_id=3, rejected=[rejected, ended])
    assert env.out.take(Signaled) == [Signaled(env.pids[rejected], Signal.INTERRUPT)]
    env.clock.advance(KILL_GRACE)
    env.turn()
    assert env.out.take(Signaled) == [Signaled(env.pids[rejected], Signal.KILL)]
    env.end(rejected, ok=False, error=errors.signal_error(9))
    env.end(kept)
    env.turn()
    env.out.take(Signaled)  # the killed task's process group
    msg = env.out.take_one(TaskUpdates)
    assert [f[0] for f in msg.finished] == [kept] and msg.failed == ()
    env.out.discard(Heartbeat)
    assert env.out.take(Forgotten) == [Forgotten(gid)]  # the old server's group
    env.out.assert_empty()
    env.check()


def test_a_new_server_rejects_everything_and_the_node_goes_on_as_a_new_worker() -> None:
    env = reconnecting(cpus=1, idle_timeout=5.0)
    gid = env.group()
    [old] = env.run(gid)
    lose_server(env)
    env.out.take(RegisterAgain, count=1)
    pass_time(env, 10.0)  # no idle timeout without a server
    assert not env.core.stopping
    env.out.take(RegisterAgain, count=10)
    env.register(worker_id=1, server_uid="fresh", rejected=[old])
    env.out.take(Signaled, count=1)
    env.end(old, ok=False, error=errors.signal_error(2))
    assert env.out.take(Forgotten) == [Forgotten(gid)]  # the old server's, once its task ended
    gid = env.group()  # the new server's first group, under an id the old one used
    [new] = env.run(gid)
    env.end(new)
    env.turn()
    assert [f[0] for f in env.out.take_one(TaskUpdates).finished] == [new]
    env.out.take(Signaled)
    env.out.assert_empty()
    assert env.core.server_uid == "fresh"
    env.clock.advance(5.0)  # idle from the registration on
    env.turn()
    assert env.out.take(NodeStopping) == [NodeStopping(StopReason.IDLE_TIMEOUT)]
    env.check()


def hand_off_when_the_server_is_lost() -> tuple[NodeEnv, int, int]:
    """A reconnecting node whose server is lost while ``first`` runs, its start reported, and
    ``second`` waits behind it on the same executor as a hand-off."""
    env = reconnecting(cpus=1)
    gid = short_group(env)
    env.clock.advance(1.0)
    env.deliver(ServerHeartbeat())  # the server has journaled the end of the first task
    first, second = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=2)
    env.start(first)
    env.clock.advance(PAST_FLUSH_DELAY)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    lose_server(env)
    return env, first, second


def test_a_hand_off_queued_when_the_server_is_lost_runs_and_is_taken_back() -> None:
    """Killing it instead raced with its executor popping it: a task killed after it did its
    work was then run again by the restored server (the soak's "run twice")."""
    env, first, second = hand_off_when_the_server_is_lost()
    assert env.out.take(Skip) == []
    assert env.out.take_one(RegisterAgain).resumed == ((first, 0, 0), (second, 0, 0))
    env.end(first)
    env.start(second)
    env.end(second)
    env.turn()
    env.out.assert_empty()  # nothing goes out without a server
    env.register(worker_id=2)
    msg = env.out.take_one(TaskUpdates)
    assert sorted(f[0] for f in msg.finished) == [first, second] and msg.failed == ()
    assert len(env.out.take(Forgotten)) == 1  # the old server's group
    env.out.assert_empty()
    env.check()


def test_a_hand_off_whose_executor_dies_without_a_server_is_dropped_not_started() -> None:
    """Requeued, it would start with no server to report to (found by ReconnectScenario)."""
    env, first, second = hand_off_when_the_server_is_lost()
    env.out.take(RegisterAgain, count=1)
    env.die(0)
    env.turn()
    env.out.assert_empty()  # nothing dispatched while lost
    assert [item[0] for item in env.core.resumed()] == [first]  # its failure, kept
    env.check()


def test_the_lost_servers_last_messages_change_nothing() -> None:
    env = reconnecting()
    gid = env.group()
    [running] = env.run(gid)
    lose_server(env)
    env.out.take(RegisterAgain, count=1)
    env.deliver(ComputeTasks(gid, (12345,)))
    env.deliver(CancelTasks((running,)))
    env.deliver(RetractTasks((running,)))
    env.turn()
    env.out.assert_empty()
    assert list(env.core.running) == [running] and not env.core.queued
    assert env.core.on_notification(running, 0, b"hi") == NOT_CONNECTED
    env.check()


@pytest.mark.parametrize("seconds", [10.0, 30.0])
def test_a_silent_server_is_lost_but_outlived(seconds: float) -> None:
    env = reconnecting(heartbeat=seconds / 3)
    [running] = env.run(env.group())
    pass_time(env, seconds + 0.5)
    assert env.core.lost and not env.core.stopping
    env.turn()
    assert env.out.take_one(RegisterAgain).resumed == ((running, 0, 0),)


def test_a_stopped_server_stops_a_reconnecting_node() -> None:
    env = reconnecting()
    env.run(env.group())
    env.deliver(StopNode(StopReason.SERVER_STOPPED))
    assert env.core.stopping and env.core.exit_code == 1 and not env.core.lost
    env.turn()
    env.out.assert_empty()


def test_a_node_without_a_server_gives_up_after_a_bound() -> None:
    env = reconnecting(heartbeat=100.0)
    [running] = env.run(env.group())
    lose_server(env)
    env.clock.advance(RECONNECT_LIMIT - 0.01)
    env.turn()
    assert not env.core.stopping
    env.clock.advance(0.01)
    env.turn()
    assert env.core.stopping and env.core.exit_code == 1
    env.core.begin_shutdown(env.clock.mono())
    assert env.out.take(Signaled) == [Signaled(env.pids[running], Signal.INTERRUPT)]
    env.end(running, ok=False, error=errors.signal_error(2))
    env.core.flush(env.clock.mono(), force=True)
    env.out.discard(RegisterAgain)
    env.out.take(Signaled, count=1)  # its process group
    env.out.assert_empty()  # nobody to report to
    env.check()


def test_a_node_without_a_server_gives_up_at_its_time_limit() -> None:
    env = reconnecting(time_limit=60.0)
    env.run(env.group())
    env.clock.advance(20.0)
    lose_server(env)
    assert env.out.take_one(RegisterAgain).time_limit == pytest.approx(40.0)
    env.clock.advance(40.0)
    env.turn()
    assert env.core.stopping and env.core.exit_code == 1
    env.out.discard(RegisterAgain)
    env.out.assert_empty()  # no NodeStopping: nobody to tell


# --- notifications ----------------------------------------------------------------------------


def test_notifications_of_running_tasks_are_forwarded(env: NodeEnv) -> None:
    [key] = env.run(env.group(), instances=[3])
    assert env.core.on_notification(key, 3, b"hello") == ""
    assert env.out.take(TaskNotification) == [TaskNotification(key, 3, b"hello")]
    assert env.core.on_notification(key, 2, b"old") == NOT_RUNNING_HERE
    assert env.core.on_notification(key + 1, 0, b"stranger") == NOT_RUNNING_HERE
    env.out.assert_empty()


# --- a randomized run -------------------------------------------------------------------------


CPUS = (1, 0.5, 2)  # of the scenarios' three groups


class NodeScenario(RuleBasedStateMachine):
    """Tasks arrive, executors start and end them in order, die, tasks are canceled and
    retracted, time passes; the core's bookkeeping must match what it dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.env = NodeEnv(cpus=2, heartbeat=1000.0)
        self.gids = [self.env.group(variant(cpus=c)) for c in CPUS]
        self.told_to_forget: set[int] = set()  # a server defines these again before tasks
        self.executors: dict[int, deque[int]] = {}
        self.skipped: set[int] = set()
        self.started: set[int] = set()
        self.canceled: set[int] = set()
        self.reported: dict[int, str] = {}  # key -> how it ended

    def _absorb(self) -> None:
        for item in list(self.env.out.log):
            if isinstance(item, Dispatch):
                self.executors.setdefault(item.executor, deque()).append(item.key)
            elif isinstance(item, Skip):
                self.skipped.add(item.key)
            elif isinstance(item, TaskUpdates):
                for end in (*item.finished, *item.failed):
                    key = end[0]
                    assert key not in self.canceled, f"canceled task {key} reported"
                    assert key not in self.reported, f"task {key} reported twice"
                    self.reported[key] = "finished" if end in item.finished else "failed"
        self.env.out.log.clear()

    @rule(group=st.integers(0, 2), n=st.integers(1, 4))
    def compute(self, group: int, n: int) -> None:
        gid = self.gids[group]
        if gid in self.told_to_forget or gid not in self.env.core.groups:
            # As a server does after a ForgetGroups, or a new server after a reconnection.
            self.told_to_forget.discard(gid)
            request = ResourceRequest((variant(cpus=CPUS[group]),))
            self.env.deliver(DefineGroup(gid, request, 0, self.env.bodies[gid]))
        self.env.compute(gid, n)

    @rule(group=st.integers(0, 2))
    def server_forgets(self, group: int) -> None:
        """A server forgets a group once none of its tasks is here as far as it knows; a
        canceled one may still be dying (this forgets it at any time)."""
        self.told_to_forget.add(self.gids[group])
        self.env.deliver(ForgetGroups((self.gids[group],)))

    @rule()
    def turn(self) -> None:
        self.env.turn()

    @rule(seconds=st.sampled_from([0.001, FLUSH_DELAY, 0.5]))
    def time_passes(self, seconds: float) -> None:
        self.env.clock.advance(seconds)

    @precondition(lambda self: any(self.executors.values()))
    @rule(data=st.data(), ok=st.booleans(), duration=st.sampled_from([0.001, 1.0]))
    def executor_acts(self, data: st.DataObject, ok: bool, duration: float) -> None:
        self._absorb()
        busy = sorted(i for i, keys in self.executors.items() if keys)
        self._step(data.draw(st.sampled_from(busy)), ok, duration)

    def _step(self, index: int, ok: bool = True, duration: float = 1.0) -> None:
        """The executor's next move: skip, start or end its first task."""
        key = self.executors[index][0]
        if key in self.skipped:
            self.executors[index].popleft()
            self.env.end(key, ok=False, skipped=True)
        elif key not in self.started:
            self.started.add(key)
            self.env.start(key)
        else:
            self.executors[index].popleft()
            self.env.end(key, ok=ok, error="" if ok else "boom", duration=duration)

    @precondition(lambda self: any(self.executors.values()))
    @rule(data=st.data())
    def executor_dies(self, data: st.DataObject) -> None:
        self._absorb()
        index = data.draw(st.sampled_from(sorted(i for i, k in self.executors.items() if k)))
        self.executors[index].clear()
        self.env.die(index)

    @precondition(lambda self: self.env.core.queued or self.env.core.running)
    @rule(data=st.data(), retract=st.booleans())
    def server_takes_back(self, data: st.DataObject, retract: bool) -> None:
        self._absorb()
        keys = sorted([*self.env.core.queued, *self.env.core.running])
        chosen = tuple(data.draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)))
        if retract:
            self.env.deliver(RetractTasks(chosen))
            self._absorb()
        else:
            self.canceled |= set(chosen) - set(self.reported)
            self.env.deliver(CancelTasks(chosen))

    @invariant()
    def consistent(self) -> None:
        self._absorb()
        self.env.check()
        core = self.env.core
        used = {q.gid for q in core.queued.values()} | {t.gid for t in core.running.values()}
        assert used <= core.groups.keys(), "a task here lost its group"
        assert core.forgotten <= used, "a forgotten group without tasks was kept"
        held = {k for keys in self.executors.values() for k in keys}
        assert held == set(self.env.core.running), (held, set(self.env.core.running))
        for index, keys in self.executors.items():
            for key in keys:
                assert self.env.executor_of(key) == index

    def teardown(self) -> None:
        """Executors run everything to its end; then nothing is held."""
        for _ in range(500):
            self.env.turn()
            self._absorb()
            busy = [i for i, keys in self.executors.items() if keys]
            if not busy and not self.env.core.queued:
                break
            for index in busy:
                self._step(index)
            self.env.clock.advance(PAST_FLUSH_DELAY)
        self.env.core.flush(self.env.clock.mono(), force=True)
        self._absorb()
        assert not self.env.core.running and not self.env.core.queued
        assert self.env.core.allocator.is_idle()
        self.env.check()


NodeScenario.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_node_scenario = NodeScenario.TestCase


class ReconnectScenario(NodeScenario):
    """The same, with a node in reconnect mode whose server is lost and comes back, taking
    back some of its tasks: nothing starts without a server, no task is reported twice to one
    server, and no task the new server rejected is reported to it."""

    def __init__(self) -> None:
        super().__init__()
        self.env = NodeEnv(cpus=2, heartbeat=1000.0, on_server_lost="reconnect")
        self.env.register(worker_id=1)
        self.gids = [self.env.group(variant(cpus=c)) for c in CPUS]
        self.server = 0  # which server the node reports to
        self.sent: set[tuple[int, int]] = set()  # (server, key) of every end reported

    def _absorb(self) -> None:
        for item in self.env.out.log:
            assert not (self.env.core.lost and isinstance(item, Dispatch)), "started, lost"
            if isinstance(item, TaskUpdates):
                for end in (*item.finished, *item.failed):
                    assert (self.server, end[0]) not in self.sent, f"{end[0]} reported twice"
                    self.sent.add((self.server, end[0]))
        self.reported.clear()  # ends may go to the next server again: counted in ``sent``
        super()._absorb()

    @precondition(lambda self: not self.env.core.lost)
    @rule()
    def server_lost(self) -> None:
        self._absorb()
        self.env.core.connection_lost(self.env.clock.mono())
        self.env.turn()

    @precondition(lambda self: self.env.core.lost)
    @rule(data=st.data())
    def server_back(self, data: st.DataObject) -> None:
        self._absorb()
        held = sorted(item[0] for item in self.env.core.resumed())
        rejected = data.draw(st.lists(st.sampled_from(held), unique=True) if held
                             else st.just([]))
        self.server += 1
        self.env.register(worker_id=self.server + 1, rejected=rejected)
        self.canceled |= set(rejected)

    # A lost node ignores what its lost server still sends: cancels come from a live server.
    @precondition(lambda self: not self.env.core.lost
                  and (self.env.core.queued or self.env.core.running))
    @rule(data=st.data(), retract=st.booleans())
    def server_takes_back(self, data: st.DataObject, retract: bool) -> None:
        super().server_takes_back(data, retract)


ReconnectScenario.TestCase.settings = NodeScenario.TestCase.settings
test_reconnect_scenario = ReconnectScenario.TestCase


# --- forgetting groups ------------------------------------------------------------------------


def test_a_group_without_tasks_here_is_forgotten_at_once(env: NodeEnv) -> None:
    gid, other = env.group(), env.group()
    [key] = env.run(gid)
    env.end(key)
    env.turn()
    env.out.take(TaskUpdates, count=1)
    env.deliver(ForgetGroups((gid, other, 999)))  # 999: never defined, ignored
    assert env.out.take(Forgotten) == [Forgotten(gid), Forgotten(other)]
    assert not env.core.groups and not env.core.queue and not env.core.forgotten
    env.out.assert_empty()
    env.check()


def test_a_group_is_forgotten_when_its_last_task_here_ends(env: NodeEnv) -> None:
    """The server forgets a group once its tasks ended there; a task canceled here may still
    be dying, and it needs its group until it ends."""
    gid = env.group()
    first, second = env.run(gid, 2)
    env.deliver(CancelTasks((first, second)))
    env.out.discard(Signaled)
    env.deliver(ForgetGroups((gid,)))
    env.out.assert_empty()
    env.end(first, ok=False, error="killed")
    env.out.discard(Signaled)  # what is left of its process group
    env.out.assert_empty()
    env.end(second, ok=False, error="killed")
    assert env.out.take(Forgotten) == [Forgotten(gid)]
    assert not env.core.groups and not env.core.forgotten
    env.turn()
    env.out.discard(Signaled)
    env.out.assert_empty()  # canceled: never reported
    env.check()


def test_a_hand_off_keeps_its_group_until_it_ends() -> None:
    env = NodeEnv(cpus=1)
    gid = short_group(env)
    first, second = env.compute(gid, 2)
    env.turn()
    env.out.take(Dispatch, count=2)  # the second waits in the executor's ring
    env.deliver(CancelTasks((first, second)))
    env.out.discard(Skip)
    env.out.discard(Signaled)
    env.deliver(ForgetGroups((gid,)))
    env.end(first, ok=False, error="killed")
    env.out.assert_empty()  # the hand-off's record still names the group
    env.end(second, skipped=True)
    assert env.out.take(Forgotten) == [Forgotten(gid)]
    env.check()


def test_a_group_defined_again_after_it_was_forgotten_runs_its_tasks(env: NodeEnv) -> None:
    """A retried task brings its group back at the server, which defines it again."""
    gid = env.group()
    [key] = env.run(gid)
    env.end(key, ok=False, error="boom")
    env.turn()
    env.out.take(TaskUpdates, count=1)
    env.deliver(ForgetGroups((gid,)))
    assert env.out.take(Forgotten) == [Forgotten(gid)]
    env.deliver(DefineGroup(gid, ResourceRequest((variant(),)), 0, env.bodies[gid]))
    env.deliver(ComputeTasks(gid, (key,), (1,)))
    env.turn()
    assert [(d.key, d.instance) for d in env.out.take(Dispatch)] == [(key, 1)]
    env.start(key)
    env.end(key)
    env.turn()
    updates = env.out.take(TaskUpdates)
    assert [f[:2] for u in updates for f in u.finished] == [(key, 1)]
    env.out.assert_empty()
    env.check()


def test_a_definition_takes_back_a_forgetting_that_waits_for_a_task(env: NodeEnv) -> None:
    """Forgotten while a canceled task dies, then defined again: the group stays when that
    task ends, for the tasks the server sends next."""
    gid = env.group()
    [key] = env.run(gid)
    env.deliver(CancelTasks((key,)))
    env.out.discard(Signaled)
    env.deliver(ForgetGroups((gid,)))
    env.deliver(DefineGroup(gid, ResourceRequest((variant(),)), 0, env.bodies[gid]))
    env.end(key, ok=False, error="killed")
    env.out.discard(Signaled)
    env.out.assert_empty()
    assert gid in env.core.groups
    [again] = env.compute(gid)
    env.turn()
    assert [d.key for d in env.out.take(Dispatch)] == [again]
    env.check()


def test_memory_follows_the_live_groups(env: NodeEnv) -> None:
    """A thousand single-task jobs, each forgotten after its end: nothing of them stays."""
    for _ in range(1000):
        gid = env.group()
        [key] = env.run(gid)
        env.end(key)
        env.turn()
        env.deliver(ForgetGroups((gid,)))
    assert len(env.out.take(Forgotten)) == 1000
    assert not env.core.groups and not env.core.queue and not env.core.forgotten
    env.check()


def scanned_poll_timeout_ms(core: NodeCore, mono: float) -> int:
    """The poll timeout as a scan of every running task finds it (the core keeps a heap)."""
    if core.lost_since is not None:
        timeout = min(IDLE_POLL, max(0.0, core.next_attempt - mono))
    else:
        timeout = min(IDLE_POLL, max(0.0, core.last_beat + core.settings.heartbeat - mono))
    if core.updates and core.lost_since is None:
        timeout = max(0.0, core.last_flush + FLUSH_DELAY - mono)
    if any(not t.reported for t in core.running.values()):
        timeout = min(timeout, DRAIN_TICK)
    if core.held:
        timeout = min(timeout, max(0.0, core.held[0][0] - mono))
    for task in core.running.values():
        for due in (task.deadline, task.kill_at):
            if due is not None:
                timeout = min(timeout, max(0.0, due - mono))
    return int(timeout * 1000) + 1


class TimedScenario(NodeScenario):
    """The same with time limits, some shorter than a task: the core's timer heap fires every
    time limit and kill escalation that is due (as a scan of every running task would) and
    its poll timeout is the scan's."""

    def __init__(self) -> None:
        super().__init__()
        self.env = NodeEnv(cpus=2, heartbeat=1000.0)
        self.gids = [self.env.group(variant(cpus=c), time_limit=limit)
                     for c, limit in zip(CPUS, (0.3, None, 1.2), strict=False)]

    @rule()
    def turn(self) -> None:
        self.env.turn()
        mono = self.env.clock.mono()
        for task in self.env.core.running.values():
            assert not (task.deadline is not None and mono >= task.deadline
                        and task.kill_at is None), f"task {task.key}: time limit not fired"
            assert task.kill_at is None or mono < task.kill_at, f"task {task.key}: no SIGKILL"

    @rule(seconds=st.sampled_from([0.001, 0.2, 0.5, KILL_GRACE]))
    def time_passes(self, seconds: float) -> None:
        self.env.clock.advance(seconds)

    @invariant()
    def polls_as_a_scan(self) -> None:
        core, mono = self.env.core, self.env.clock.mono()
        assert core.poll_timeout_ms(mono) == scanned_poll_timeout_ms(core, mono)


TimedScenario.TestCase.settings = settings(NodeScenario.TestCase.settings, max_examples=120)
test_timed_scenario = TimedScenario.TestCase


class _Drawn:
    """A scenario's ``data`` that draws given values, to replay a case hypothesis found."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def draw(self, _strategy: object) -> object:
        return self.values.pop(0)


def test_an_executor_death_gives_a_chain_s_allocation_back_once() -> None:
    """Found by ``test_timed_scenario``: a hand-off chain of three on one allocation, the
    last canceled; the executor dies, the middle one goes back to the queue, and the running
    one and the canceled one both released the allocation, so the node counted two CPUs
    free twice over and its next allocation failed."""
    s = TimedScenario()
    s.compute(group=2, n=2)
    s.turn()
    s.compute(group=2, n=2)
    s.executor_acts(_Drawn(0), ok=False, duration=0.001)  # starts the first task
    s.executor_acts(_Drawn(0), ok=False, duration=0.001)  # which fails
    s.turn()  # the next three are handed off to that executor, one allocation
    chain = [s.env.core.running[key] for key in s.env.core.slots[0].inflight]
    assert len(chain) == 3 and all(t.allocation is chain[0].allocation for t in chain)
    s.server_takes_back(_Drawn([chain[2].key]), retract=False)
    s.executor_dies(_Drawn(0))
    s.env.check()
    assert s.env.core.allocator.indexed["cpus"].free == [10000, 10000]
    s.teardown()
