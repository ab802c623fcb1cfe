"""Scenarios of dependencies and retries in ``cluster.core``: task graphs (job files), group
barriers (`hq submit --after`), transitive aborts, and re-runs of failed tasks."""

from __future__ import annotations

import pytest
from core_env import Env
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import CancelTasks, ComputeTasks, DefineGroup, ForgetGroups


@pytest.fixture
def env() -> Env:
    return Env()


def sent(env: Env, worker_id: int) -> list[int]:
    keys = env.out.take_keys(worker_id, ComputeTasks)
    env.out.discard(DefineGroup)
    return keys


# --- retries --------------------------------------------------------------------------------


def test_a_retryable_failure_runs_again_with_the_next_instance(env: Env) -> None:
    w = env.worker(1)
    group = env.group(1, retries=2)
    (key,) = group.keys.tolist()
    for instance in (1, 2):
        env.schedule()
        assert sent(env, w.wid) == [key]
        env.start(w, [key])
        env.fail(w, [key])
        assert env.events.take("started") == [(w.wid, key, instance - 1)]
        assert env.events.take("requeued") == [(key, instance)]
        env.events.assert_empty()  # no failure reported while retries remain
        env.check()
    env.schedule()
    assert sent(env, w.wid) == [key]
    env.start(w, [key])
    env.fail(w, [key], error="third time")
    env.events.take("started")
    assert env.events.take("failed") == [(w.wid, key, 2, "third time")]
    env.schedule()
    # Forgotten once, at the end: each retry took back the forgetting of the turn it failed in.
    assert env.out.take(w.wid, ForgetGroups) == [ForgetGroups((group.gid,))]
    env.out.assert_empty()
    assert not env.core.groups  # the group is done
    env.check()


def test_the_last_task_of_a_group_is_retried_too(env: Env) -> None:
    """Regression: the group was looked up after its last task ended, so it was gone."""
    w = env.worker(2)
    group = env.group(2, retries=1)
    keys = group.keys.tolist()
    env.schedule()
    assert sent(env, w.wid) == keys
    env.finish(w, keys[:1])
    env.fail(w, keys[1:])  # now the only unfinished task: the group's last
    env.events.take("finished")
    assert env.events.take("requeued") == [(keys[1], 1)]
    env.schedule()
    assert sent(env, w.wid) == keys[1:]
    env.check()


def test_failures_that_are_not_retryable_fail_at_once(env: Env) -> None:
    w = env.worker(1)
    group = env.group(1, retries=5)
    (key,) = group.keys.tolist()
    env.schedule()
    sent(env, w.wid)
    env.fail(w, [key], error="Time limit reached", retryable=False)
    assert env.events.take("failed") == [(w.wid, key, 0, "Time limit reached")]
    env.check()


# --- task graphs ----------------------------------------------------------------------------


def graph(env: Env, n: int, edges: dict[int, list[int]], **kwargs: object) -> list[int]:
    """A group of tasks 0..n-1 where task i waits for the tasks in edges[i]."""
    job = 1
    deps = {task_key(job, i): [task_key(job, d) for d in ds] for i, ds in edges.items()}
    group = env.group(n, job=job, deps=deps, **kwargs)  # type: ignore[arg-type]
    return group.keys.tolist()


def test_a_task_starts_only_after_all_its_dependencies_finished(env: Env) -> None:
    w = env.worker(4)
    k0, k1, k2 = graph(env, 3, {2: [0, 1]})
    env.schedule()
    assert sorted(sent(env, w.wid)) == [k0, k1]  # k2 waits
    env.finish(w, [k0])
    env.schedule()
    env.out.assert_empty()  # still waiting for k1
    env.finish(w, [k1])
    env.schedule()
    assert sent(env, w.wid) == [k2]
    env.check()


def test_a_failed_dependency_aborts_its_dependants_transitively(env: Env) -> None:
    w = env.worker(4)
    # 0 -> 1 -> 2 and an independent 3 (spec/jobs.md §8.2)
    k0, k1, k2, k3 = graph(env, 4, {1: [0], 2: [1]})
    env.schedule()
    assert sorted(sent(env, w.wid)) == [k0, k3]
    env.fail(w, [k0])
    env.events.take("failed")
    assert sorted(env.events.take("aborted")) == [(k1,), (k2,)]
    env.finish(w, [k3])
    assert env.events.take("finished") == [(w.wid, k3, 0)]
    assert not env.core.groups and not env.core.deps_waiting and not env.core.dependants
    env.check()


def test_canceling_a_prerequisite_group_aborts_dependants_in_other_groups(env: Env) -> None:
    w = env.worker(2)
    first = env.group(2)
    prerequisite = first.keys.tolist()[0]
    job = 2
    dependant = task_key(job, 0)
    env.group(1, job=job, deps={dependant: [prerequisite]})
    env.schedule()
    assert sent(env, w.wid) == first.keys.tolist()
    env.cancel(first)
    assert env.out.take(to=w.wid, kind=CancelTasks)
    assert env.events.take("aborted") == [(dependant,)]
    assert not env.core.groups
    env.check()


# --- barriers (--after) ----------------------------------------------------------------------


def test_a_barrier_holds_the_whole_group_until_every_prerequisite_finished(env: Env) -> None:
    w = env.worker(4)
    first = env.group(2)
    a, b = first.keys.tolist()
    second = env.group(1000, after=[a, b])
    env.schedule()
    assert sent(env, w.wid) == [a, b]
    assert second.pending == 0
    env.finish(w, [a])
    env.schedule()
    env.out.assert_empty()
    env.finish(w, [b])
    env.schedule()
    assert len(sent(env, w.wid)) == 4 + 4  # free capacity, then one round of prefill
    assert not env.core.barrier_dependants
    env.check()


def test_a_failed_prerequisite_aborts_the_whole_group_waiting_on_it(env: Env) -> None:
    w = env.worker(2)
    first = env.group(1)
    (a,) = first.keys.tolist()
    second = env.group(1_000_000, after=[a])
    third = env.group(3, after=[second.keys.tolist()[5]])  # waits on the aborted group
    env.schedule()
    assert sent(env, w.wid) == [a]
    env.fail(w, [a])
    env.events.take("failed")
    aborted_groups = sorted(r[0] for r in env.events.take("aborted_group"))
    assert aborted_groups == sorted([second.gid, third.gid])
    assert not env.core.groups
    env.schedule()
    assert env.out.take(w.wid, ForgetGroups) == [ForgetGroups((first.gid,))]  # only it was sent
    env.out.assert_empty()
    env.check()
