"""Running tasks of a node that outlives its server: kept for it by a restored server.

A restored server does not run again the tasks it found running on a node started with
``--on-server-lost reconnect``: they are the core's orphans (counted in their group, not
pending) until the node registers again and takes them back (``reactor.adopt``) or a
deadline passes and they run again under the next instance (``reactor.expire_orphans``).
"""

from __future__ import annotations

from core_env import Env
from hqshm.cluster import reactor
from hqshm.cluster.protocol import ComputeTasks, TaskUpdates


def orphaned(env: Env, n: int, running: int, deadline: float = 30.0):  # noqa: ANN201
    """A group of n tasks whose first ``running`` ones are orphans with instance 2."""
    group = env.group(n)
    keys = group.keys.tolist()
    group.keys = group.keys[running:]  # the restore gives the core only the waiting ones
    group.active = n
    for key in keys[:running]:
        env.core.orphans[key] = (group.gid, 2, env.clock.now() + deadline)
    return group, keys


def test_a_reconnecting_node_takes_back_its_tasks_and_reports_them() -> None:
    env = Env()
    group, keys = orphaned(env, 3, running=2)
    worker = env.worker(4)
    rejected = reactor.adopt(env.core, env.out, worker, [(keys[0], 2, 0), (keys[1], 2, 0)],
                             env.clock.now())
    assert rejected == [] and sorted(worker.running) == keys[:2]
    assert env.events.take("adopted") == [(worker.wid, keys[0]), (worker.wid, keys[1])]
    assert group.instances[keys[0]] == 2  # a later loss runs it as instance 3
    assert worker.committed["cpus"] == 2 * 10_000 and not env.core.orphans
    env.schedule()  # only the one waiting task is sent
    assert env.out.take_keys(worker.wid, ComputeTasks) == keys[2:]
    now = env.clock.now()
    env.updates(worker, TaskUpdates(finished=tuple((k, 2, now - 1, now, 0) for k in keys[:2])))
    assert [item[1] for item in env.events.take("finished")] == keys[:2]
    env.core.check()


def test_tasks_the_core_does_not_hold_under_that_instance_are_rejected() -> None:
    env = Env()
    _group, keys = orphaned(env, 2, running=2)
    worker = env.worker(4)
    stranger = keys[-1] + 100
    rejected = reactor.adopt(env.core, env.out, worker,
                             [(keys[0], 1, 0), (stranger, 0, 0), (keys[1], 2, 7)],
                             env.clock.now())
    assert sorted(rejected) == sorted([keys[0], stranger, keys[1]])  # old instance, unknown,
    # no such variant
    assert not worker.running and len(env.core.orphans) == 2


def test_orphans_run_again_after_the_deadline_under_the_next_instance() -> None:
    env = Env()
    group, keys = orphaned(env, 2, running=1, deadline=30.0)
    worker = env.worker(4)
    env.schedule()
    assert env.out.take_keys(worker.wid, ComputeTasks) == keys[1:]
    env.clock.advance(29.0)
    reactor.expire_orphans(env.core, env.out, env.clock.now())
    assert env.core.orphans
    env.clock.advance(2.0)
    reactor.expire_orphans(env.core, env.out, env.clock.now())
    assert env.events.take("requeued") == [(keys[0], 3)]
    env.schedule()
    assert env.out.take_keys(worker.wid, ComputeTasks) == keys[:1]
    assert group.instances[keys[0]] == 3


def test_an_orphan_of_a_canceled_group_is_neither_adopted_nor_run_again() -> None:
    env = Env()
    group, keys = orphaned(env, 1, running=1)
    env.cancel(group)
    worker = env.worker(4)
    assert reactor.adopt(env.core, env.out, worker, [(keys[0], 2, 0)], env.clock.now()) == keys
    env.clock.advance(60.0)
    reactor.expire_orphans(env.core, env.out, env.clock.now())
    assert env.events.take("requeued") == []


def test_a_task_whose_start_the_journal_missed_is_taken_out_of_its_group() -> None:
    """Pending here, running on the node: the node keeps it; nothing else gets it."""
    env = Env()
    group = env.group(4)
    keys = group.keys.tolist()
    env.core.paused_until = env.clock.now() + 10.0  # as a restore with reconnecting nodes
    env.core.reconnecting = 1
    worker = env.worker(4)
    env.schedule()
    env.out.assert_empty()  # paused: nothing is assigned while the node may come back
    rejected = reactor.adopt(env.core, env.out, worker, [(keys[2], 0, 0), (keys[3], 1, 0)],
                             env.clock.now())
    assert rejected == [keys[3]]  # another instance than the pending one
    assert env.events.take("adopted") == [(worker.wid, keys[2])]
    assert keys[2] in worker.running and group.keys.tolist() == [keys[0], keys[1], keys[3]]
    env.clock.advance(11.0)
    reactor.expire_orphans(env.core, env.out, env.clock.now())  # the pause is over
    env.schedule()
    assert sorted(env.out.take_keys(worker.wid, ComputeTasks)) == [keys[0], keys[1], keys[3]]
    env.core.check()
