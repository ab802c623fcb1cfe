"""Scenarios of tasks sent early (``scheduler.place_early``): a blocked task whose last
unfinished prerequisite is on a worker goes there before it finished, takes no room there
until it did, and keeps the failure semantics of dependencies: aborted with its prerequisite,
back to waiting (no crash) when its worker is lost, canceled with its job."""

from __future__ import annotations

import pytest
from core_env import Env
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import (
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    ForgetGroups,
    TaskUpdates,
)

JOB = 1


@pytest.fixture
def env() -> Env:
    env = Env(early=True)
    env.core.early_per_cpu = 1.0  # these scenarios follow a bound of one a CPU
    return env


def chain(env: Env, n: int) -> list[int]:
    deps = {task_key(JOB, i): [task_key(JOB, i - 1)] for i in range(1, n)}
    return env.group(n, job=JOB, deps=deps).keys.tolist()


def sent(env: Env, wid: int) -> list[tuple[int, tuple[int, ...]]]:
    """(key, after) of every task sent to the worker."""
    env.out.discard(DefineGroup)
    env.out.discard(ForgetGroups)
    return [(k, m.after[i] if m.after else ())
            for m in env.out.take(wid, ComputeTasks) for i, k in enumerate(m.keys)]


def test_a_chain_is_sent_early_up_to_the_bound_and_takes_no_room(env: Env) -> None:
    w = env.worker(2)
    k = chain(env, 5)
    env.schedule()
    assert sent(env, w.wid) == [(k[0], ()), (k[1], (k[0],)), (k[2], (k[1],))]
    assert list(w.early) == [k[1], k[2]]  # bound: one a CPU
    assert w.committed["cpus"] == 10_000  # only k0 counts
    env.out.assert_empty()
    # The node finished k0 and started k1 in one report: k1 is running, k3 goes early.
    now = env.clock.now()
    env.updates(w, TaskUpdates(started=((k[1], 0, now, 0),), finished=((k[0], 0, now, now, 0),)))
    assert env.events.take("finished") == [(w.wid, k[0], 0)]
    assert env.events.take("started") == [(w.wid, k[1], 0)]
    assert list(w.running) == [k[1]] and list(w.early) == [k[2]]
    env.schedule()
    assert sent(env, w.wid) == [(k[3], (k[2],))]
    # A task that started and ended in one report: only its end comes.
    env.finish(w, [k[1], k[2]])
    # k3 is released (its node may start it now): it counts as assigned from now on.
    assert list(w.assigned) == [k[3]] and not w.early
    assert w.committed["cpus"] == 10_000
    env.schedule()
    assert sent(env, w.wid) == [(k[4], (k[3],))]
    env.finish(w, [k[3], k[4]])
    env.events.take("finished", 4)
    env.schedule()
    sent(env, w.wid)
    assert not env.core.groups and not env.core.early and not w.early
    env.events.assert_empty()
    env.check()


def test_a_failed_dependency_aborts_the_early_dependants(env: Env) -> None:
    w = env.worker(4)
    k = chain(env, 4)
    env.schedule()
    assert [s[0] for s in sent(env, w.wid)] == k
    env.start(w, [k[0]])
    env.fail(w, [k[0]], retryable=False)
    env.events.take("started")
    env.events.take("failed", 1)
    assert sorted(env.events.take("aborted")) == [(k[1],), (k[2],), (k[3],)]
    cancels = [c for m in env.out.take(w.wid, CancelTasks) for c in m.keys]
    assert sorted(cancels) == k[1:]  # the node drops them: they never start
    assert not w.early and not env.core.early and not env.core.groups
    env.schedule()
    env.out.discard(ForgetGroups)
    env.out.assert_empty()
    env.check()


def test_a_retried_dependency_takes_its_early_dependants_back(env: Env) -> None:
    w = env.worker(2)
    deps = {task_key(JOB, 1): [task_key(JOB, 0)]}
    k0, k1 = env.group(2, job=JOB, deps=deps, retries=1).keys.tolist()
    env.schedule()
    assert sent(env, w.wid) == [(k0, ()), (k1, (k0,))]
    env.start(w, [k0])
    env.fail(w, [k0])
    assert env.out.take_keys(w.wid, CancelTasks) == [k1]
    assert not w.early and k1 in env.core.deps_waiting
    env.events.take("started")
    assert env.events.take("requeued") == [(k0, 1)]
    env.schedule()
    assert sent(env, w.wid) == [(k0, ()), (k1, (k0,))]
    env.check()


def test_a_lost_worker_gives_its_early_tasks_back_without_a_crash(env: Env) -> None:
    w1 = env.worker(2)
    k = chain(env, 3)
    env.schedule()
    assert len(sent(env, w1.wid)) == 3
    env.start(w1, [k[0]])
    env.events.take("started")
    env.lose(w1)
    # k0 ran: a crash; k1 and k2 never ran: a new instance each, no crash, still blocked.
    assert env.events.take("crashed") == []  # one crash is below the crash limit
    assert sorted(env.events.take("requeued")) == [(k[0], 1), (k[1], 1), (k[2], 1)]
    g = env.group_of(k[0])
    assert g.crashes == {k[0]: 1} and k[1] in env.core.deps_waiting
    assert not env.core.early
    w2 = env.worker(2)
    env.schedule()
    assert sent(env, w2.wid) == [(k[0], ()), (k[1], (k[0],)), (k[2], (k[1],))]
    msgs = env.out.sent
    assert not msgs
    env.finish(w2, k)
    assert [e[1] for e in env.events.take("finished")] == k
    env.check()


def test_canceling_the_job_cancels_its_early_tasks(env: Env) -> None:
    w = env.worker(2)
    k = chain(env, 3)
    env.schedule()
    sent(env, w.wid)
    env.start(w, [k[0]])
    env.cancel(env.group_of(k[0]))
    cancels = [c for m in env.out.take(w.wid, CancelTasks) for c in m.keys]
    assert sorted(cancels) == k
    assert not w.early and not env.core.early and not env.core.deps_waiting
    env.check()


def test_dependencies_on_two_workers_are_released_by_the_server(env: Env) -> None:
    w1, w2 = env.worker(1), env.worker(1)
    deps = {task_key(JOB, 2): [task_key(JOB, 0), task_key(JOB, 1)]}
    k0, k1, k2 = env.group(3, job=JOB, deps=deps).keys.tolist()
    env.schedule()
    assert sent(env, w1.wid) == [(k0, ())] and sent(env, w2.wid) == [(k1, ())]
    assert not env.core.early  # two unfinished prerequisites, on two workers
    env.finish(w1, [k0])
    env.schedule()
    # Its last unfinished prerequisite is on w2: it goes there early.
    assert sent(env, w1.wid) == [] and sent(env, w2.wid) == [(k2, (k1,))]
    env.check()


def test_the_bound_is_per_worker(env: Env) -> None:
    w = env.worker(1)
    deps = {task_key(JOB, i): [task_key(JOB, 0)] for i in range(1, 6)}
    keys = env.group(6, job=JOB, deps=deps).keys.tolist()
    env.schedule()
    assert sent(env, w.wid) == [(keys[0], ()), (keys[1], (keys[0],))]
    env.finish(w, keys[:1])
    env.schedule()
    # k1 was released on the node and counts now; the rest are ready and go as today
    # (here as deep as prefill lets them), none early.
    assert sent(env, w.wid) == [(keys[2], ())]
    assert list(w.assigned) == keys[1:3] and not w.early
    env.check()


def test_a_retracted_dependency_takes_its_early_dependants_back(env: Env) -> None:
    w = env.worker(1)
    env.group(1, job=9)  # occupies the CPU, so the chain's first task only queues
    k = chain(env, 3)
    env.schedule()
    keys = [s[0] for s in sent(env, w.wid)]
    assert k[0] in keys and k[1] in keys
    env.give_back(w, [k[0]])
    assert sorted(env.out.take_keys(w.wid, CancelTasks)) == [k[1]]
    assert not w.early
    env.check()


def test_no_early_tasks_when_off() -> None:
    env = Env(early=False)
    w = env.worker(2)
    k = chain(env, 3)
    env.schedule()
    assert sent(env, w.wid) == [(k[0], ())]
    env.check()


def test_by_default_a_chain_goes_deeper_than_a_fan_out() -> None:
    """Eight a CPU in all, but one a CPU of one task's dependants: a chain's node can run
    its next steps behind each other, a fan-out still spreads over the workers."""
    env = Env(early=True)
    w = env.worker(2)
    k = chain(env, 20)
    fan_root = task_key(JOB + 1, 0)
    fan = env.group(6, job=JOB + 1, deps={task_key(JOB + 1, i): [fan_root]
                                          for i in range(1, 6)}).keys.tolist()
    env.schedule()
    early = dict((key, after) for key, after in sent(env, w.wid) if after)
    assert [key for key in early if key in fan] == fan[1:3]  # one a CPU of the root's
    assert all(early[key] == (fan_root,) for key in fan[1:3])
    assert [key for key in early if key in k] == k[1:15]  # the rest of the 16 to the chain
    assert all(early[k[i]] == (k[i - 1],) for i in range(1, 15))
    env.check()
