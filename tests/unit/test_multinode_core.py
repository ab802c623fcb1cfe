"""Scenarios of multi-node placement in ``cluster.core`` and ``cluster.scheduler``."""

from __future__ import annotations

import pytest
from core_env import Env
from hqshm.cluster.protocol import ComputeTasks, DefineGroup, ReserveNode
from hqshm.cluster.resources import RequestVariant, ResourceRequest


@pytest.fixture
def env() -> Env:
    return Env()


def nodes(n: int) -> ResourceRequest:
    return ResourceRequest((RequestVariant(n_nodes=n),))


def place_two_node_task(env: Env) -> int:
    """Submit and place a 2-node task, dropping the messages and events that placing it made."""
    (key,) = env.group(1, req=nodes(2)).keys.tolist()
    env.schedule()
    env.out.discard(ComputeTasks)
    env.out.discard(DefineGroup)
    env.out.discard(ReserveNode)
    env.events.take("nodes")
    return key


def test_a_task_takes_n_idle_workers_of_one_group_and_runs_on_the_first(env: Env) -> None:
    w1, w2, w3 = env.workers(1, 1, 1)
    (key,) = env.group(1, req=nodes(2)).keys.tolist()
    env.schedule()
    [compute] = env.out.take(to=w1.wid, kind=ComputeTasks)
    assert compute.keys == (key,) and compute.nodes == (w1.hostname, w2.hostname)
    env.out.discard(DefineGroup)
    assert env.out.take(to=w2.wid, kind=ReserveNode) == [ReserveNode(key)]
    env.out.assert_empty()
    assert env.events.take("nodes") == [(key, (w1.wid, w2.wid))]
    assert w1.reserved_for == key and w2.reserved_for == key and w3.reserved_for is None
    env.check()


def test_too_few_workers_and_other_groups_do_not_count(env: Env) -> None:
    env.worker(1)
    env.core.workers[env.worker(1).wid].group = "other"
    env.group(1, req=nodes(2))
    env.schedule()
    env.out.assert_empty()


def test_reserved_workers_get_no_other_tasks_until_the_task_ends(env: Env) -> None:
    w1, w2, w3 = env.workers(2, 2, 2)
    key = place_two_node_task(env)
    single = env.group(10)
    env.schedule()
    sent = env.out.take(to=w3.wid, kind=ComputeTasks)
    assert sum(len(m.keys) for m in sent) == 4  # 2 now + 2 prefilled, all on the free worker
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.finish(w1, [key])
    assert env.out.take(to=w2.wid, kind=ReserveNode) == [ReserveNode(0)]
    assert w1.reserved_for is None and w2.reserved_for is None
    env.schedule()
    assert env.out.take_keys(w1.wid, ComputeTasks) and env.out.take_keys(w2.wid, ComputeTasks)
    assert single.pending == 0
    env.check()


def test_losing_a_secondary_keeps_the_task_and_losing_the_root_requeues_it(env: Env) -> None:
    w1, w2, w3 = env.workers(1, 1, 1)
    key = place_two_node_task(env)
    env.start(w1, [key])
    env.events.take("started")
    env.lose(w2)
    env.events.assert_empty()  # the task goes on
    assert env.core.multinode[key] == [w1.wid]
    env.lose(w1)
    assert env.events.take("requeued") == [(key, 1)]
    env.events.take("crashed")  # nothing: the default crash limit is 5
    assert key not in env.core.multinode
    env.check()
