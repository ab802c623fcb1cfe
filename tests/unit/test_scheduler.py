"""Scenarios of ``cluster.scheduler``: fill, prefill, priorities, resources, time, stealing."""

from __future__ import annotations

import pytest
from core_env import Env, FakeClock, list_pool, sum_pool
from hqshm.cluster.protocol import ComputeTasks, DefineGroup, ForgetGroups, RetractTasks
from hqshm.cluster.resources import FRACTIONS, RequestVariant, ResourceEntry, ResourceRequest
from hqshm.cluster.scheduler import MAX_PREFILL, PREFILL, PREFILL_BUFFER, prefill_factor


@pytest.fixture
def env() -> Env:
    return Env()


# --- fill, then prefill ---------------------------------------------------------------------


def test_tasks_fill_free_capacity_across_workers_before_any_prefill(env: Env) -> None:
    w1, w2 = env.workers(2, 2)
    g = env.group(10)
    env.schedule()

    keys = g.keys.tolist()
    # Fill pass first: each worker gets what it can start now, in worker order...
    first1, second1 = env.out.take(to=w1.wid, kind=ComputeTasks, count=2)
    first2, second2 = env.out.take(to=w2.wid, kind=ComputeTasks, count=2)
    assert first1.keys == tuple(keys[0:2])
    assert first2.keys == tuple(keys[2:4])
    # ...then one extra round each (duration unknown yet).
    assert second1.keys == tuple(keys[4:6])
    assert second2.keys == tuple(keys[6:8])
    assert g.pending == 2
    env.out.take(to=w1.wid, kind=DefineGroup, count=1)
    env.out.take(to=w2.wid, kind=DefineGroup, count=1)
    env.out.assert_empty()
    env.check()


def test_group_is_defined_once_per_link_and_never_resent(env: Env) -> None:
    w = env.worker(1)
    g = env.group(4)
    env.schedule()
    assert env.out.take(to=w.wid, kind=DefineGroup, count=1)[0].gid == g.gid
    first = env.out.take_keys(w.wid, ComputeTasks)
    env.start(w, first[:1])
    env.finish(w, first[:1])
    env.schedule()
    env.out.take(to=w.wid, kind=DefineGroup, count=0)
    assert len(env.out.take_keys(w.wid, ComputeTasks)) == 1
    env.out.assert_empty()
    env.check()


def test_compute_tasks_carries_instances_and_entries_only_when_needed(env: Env) -> None:
    w1, w2 = env.workers(1, 1)
    g = env.group(2, entries=[b"line 0", b"line 1"])
    env.schedule()
    msg1 = env.out.take(to=w1.wid, kind=ComputeTasks)[0]
    assert msg1.instances == ()  # all zero: not sent
    assert msg1.entries == (b"line 0",)
    env.lose(w2)
    env.events.take("requeued", count=1)
    w3 = env.worker(1)
    env.schedule()
    msg3 = env.out.take(to=w3.wid, kind=ComputeTasks)[0]
    assert msg3.keys == (int(g.keys[1]),)
    assert msg3.instances == (1,)
    assert msg3.entries == (b"line 1",)
    env.out.discard(ComputeTasks)
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


@pytest.mark.parametrize(
    ("duration", "factor", "held"),
    [
        (None, PREFILL, 8),  # unknown: one extra round
        (1.0, PREFILL, 8),  # long tasks: one extra round
        (PREFILL_BUFFER, PREFILL, 8),  # the boundary still counts as long
        (0.025, 2.0, 12),  # 50 ms of buffer = 2 rounds
        (0.01, 5.0, 24),
        (0.001, MAX_PREFILL, 4 * (1 + 32)),  # 50 rounds wanted, capped
        (0.0, MAX_PREFILL, 4 * (1 + 32)),
    ],
)
def test_prefill_depth_follows_the_groups_mean_duration(
    duration: float | None, factor: float, held: int
) -> None:
    env = Env(clock=FakeClock(0.0))  # durations end at 0.0, so they are exact
    w = env.worker(4)
    g = env.group(1000)
    env.schedule()
    assert env.held(w) == 8  # 4 running + 4 queued while nothing is known
    if duration is not None:
        first = env.out.take_keys(w.wid, ComputeTasks)[:4]
        env.start(w, first)
        env.finish(w, first, duration=duration)
        assert g.mean_duration == pytest.approx(duration)
    assert prefill_factor(g) == factor
    env.schedule()
    assert env.held(w) == held
    env.check()


# --- priorities -----------------------------------------------------------------------------


def test_priorities_run_higher_first_then_older_jobs(env: Env) -> None:
    """spec/jobs.md §4.5: priorities 1,3,3,0 on a 1-CPU worker run as 3, 3, 1, 0."""
    w = env.worker(1)
    groups = [env.group(1, priority=p) for p in (1, 3, 3, 0)]
    order: list[int] = []
    queue: list[int] = []
    for _ in range(8):
        env.schedule()
        queue += env.out.take_keys(w.wid, ComputeTasks)
        if not queue:
            break
        key = queue.pop(0)
        order.append(key)
        env.start(w, [key])
        env.finish(w, [key])
    by_key = {int(g.keys[0]): g for g in groups}
    assert [(by_key[k].priority, by_key[k].job_id) for k in order] == [
        (3, 2),
        (3, 3),
        (1, 1),
        (0, 4),
    ]
    env.out.discard(DefineGroup)
    # Each group is forgotten at the end of the turn after its task ended.
    assert sorted(g for m in env.out.take(w.wid, ForgetGroups) for g in m.gids) == sorted(
        g.gid for g in groups)
    env.out.assert_empty()
    env.check()


def test_higher_priority_group_takes_capacity_first(env: Env) -> None:
    w = env.worker(1)
    low = env.group(2, priority=0)
    high = env.group(2, priority=5)
    env.schedule()
    assert env.out.take_keys(w.wid, ComputeTasks) == high.keys.tolist()  # fill + prefill
    assert low.pending == 2
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_lower_priority_uses_capacity_a_higher_priority_shape_cannot(env: Env) -> None:
    """spec/resources.md §2.1: 8 CPUs and foo=[1,2,3,4]; four foo=2 jobs, then cpus=2 prio -1."""
    w = env.worker(8, list_pool("foo", "1", "2", "3", "4"))
    foo_jobs = [env.group(1, foo=2) for _ in range(4)]
    late = env.group(1, cpus=2, priority=-1)
    gpu_hungry = env.group(1, priority=10, gpus=1)  # no worker has gpus: must block nothing
    env.schedule()
    sent = [m.gid for m in env.out.take(to=w.wid, kind=ComputeTasks)]
    # Fill pass: two foo jobs fit, then the low-priority job starts at once; only then does
    # prefill queue the other two foo jobs behind the running ones.
    assert sent == [foo_jobs[0].gid, foo_jobs[1].gid, late.gid, foo_jobs[2].gid, foo_jobs[3].gid]
    assert gpu_hungry.pending == 1
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_lower_priority_waits_while_a_higher_one_waits_for_busy_cores(env: Env) -> None:
    """HQ: five 2-CPU tasks of priority 50 stay WAITING on a 4-CPU worker while a 4-CPU task
    of priority 100 waits for the cores a running task holds."""
    w = env.worker(4)
    base = env.group(1, cpus=2)
    env.schedule()
    env.start(w, env.out.take_keys(w.wid, ComputeTasks))
    big = env.group(1, cpus=4, priority=100)
    small = env.group(5, cpus=2, priority=50)
    for _ in range(2):  # the second pass sees big queued on the worker, not pending
        env.schedule()
        assert [m.gid for m in env.out.take(to=w.wid, kind=ComputeTasks)] in ([big.gid], [])
        assert small.pending == 5
    assert big.pending == 0
    env.finish(w, base.keys.tolist())
    env.start(w, big.keys.tolist())
    env.schedule()
    # Only now, with big running, do small tasks queue behind it.
    assert len(env.out.take_keys(w.wid, ComputeTasks)) == 2
    env.out.discard(DefineGroup)
    assert env.out.take(w.wid, ForgetGroups) == [ForgetGroups((base.gid,))]
    env.out.assert_empty()
    env.check()


def test_queued_lower_priority_tasks_do_not_starve_a_waiting_higher_one(env: Env) -> None:
    """Once a higher-priority task waits, lower-priority work stops taking the cores that free
    up: only what was already queued on the node runs first, then the big task gets its turn."""
    w = env.worker(4)
    small = env.group(10, cpus=2, priority=50)
    env.schedule()
    queue = env.out.take_keys(w.wid, ComputeTasks)
    assert len(queue) == 4  # two run, two queued
    env.start(w, queue[:2])
    running, queue = queue[:2], queue[2:]
    big = env.group(1, cpus=4, priority=100)
    for _ in range(4):
        env.schedule()
        sent = env.out.take(to=w.wid, kind=ComputeTasks)
        assert all(m.gid != small.gid for m in sent), "small overtook the waiting big task"
        queue += [k for m in sent for k in m.keys]
        done = running.pop(0)
        env.finish(w, [done])
        # The node starts what it has queued in order, if it fits.
        if queue and queue[0] in small.keys.tolist():
            nxt = queue.pop(0)
            env.start(w, [nxt])
            running.append(nxt)
    assert queue == big.keys.tolist()
    assert not running
    env.start(w, queue)
    env.schedule()
    assert len(env.out.take_keys(w.wid, ComputeTasks)) == 2  # small queues behind big
    assert small.pending == 4
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_lower_priority_still_runs_where_the_higher_one_can_never_fit(env: Env) -> None:
    little, large = env.workers(2, 4)
    base = env.group(1, cpus=4)
    env.schedule()
    env.start(large, env.out.take_keys(large.wid, ComputeTasks))
    big = env.group(1, cpus=4, priority=100)
    small = env.group(3, cpus=2, priority=50)
    env.schedule()
    assert env.out.take_keys(large.wid, ComputeTasks) == big.keys.tolist()  # queued there
    assert env.out.take_keys(little.wid, ComputeTasks) == small.keys.tolist()[:2]  # run+queue
    assert base.pending == 0
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_lower_priority_uses_pools_the_waiting_task_does_not_need(env: Env) -> None:
    w = env.worker(4, list_pool("gpus", "0", "1"))
    env.group(1, cpus=2)
    env.schedule()
    env.start(w, env.out.take_keys(w.wid, ComputeTasks))
    env.group(1, cpus=4, priority=100)
    gpu_only = env.group(1, cpus=None, gpus=1, priority=50)
    cpu_and_gpu = env.group(1, cpus=1, gpus=1, priority=50)
    env.schedule()
    sent = [m.gid for m in env.out.take(to=w.wid, kind=ComputeTasks)]
    assert gpu_only.gid in sent  # the held CPUs are not what it needs
    assert cpu_and_gpu.gid not in sent and cpu_and_gpu.pending == 1
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


# --- resources and time -------------------------------------------------------------------


def test_worker_lacking_a_requested_resource_never_gets_the_task(env: Env) -> None:
    """spec/resources.md §2.1: fairy=1 and potato=1000000 stay WAITING."""
    w1 = env.worker(4)
    w2 = env.worker(4, sum_pool("potato", 10))
    fairy = env.group(1, fairy=1)
    potato = env.group(1, potato=1_000_000)
    for _ in range(3):
        env.schedule()
    env.out.assert_empty()
    assert (fairy.pending, potato.pending) == (1, 1)
    assert env.held(w1) == env.held(w2) == 0
    w3 = env.worker(1, list_pool("fairy", "f0"))
    env.schedule()
    assert env.out.take_keys(w3.wid, ComputeTasks) == fairy.keys.tolist()
    assert potato.pending == 1
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_time_request_longer_than_remaining_lifetime_is_never_assigned(env: Env) -> None:
    short = env.worker(4, time_limit=100)
    env.group(2, min_time=200)
    env.schedule()
    env.out.assert_empty()
    unlimited = env.worker(4)
    env.schedule()
    assert len(env.out.take_keys(unlimited.wid, ComputeTasks)) == 2
    assert env.held(short) == 0
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_time_request_within_remaining_lifetime_is_assigned(env: Env) -> None:
    w = env.worker(4, time_limit=100)
    env.group(2, min_time=100)  # "remaining lifetime >= request"
    env.schedule()
    assert len(env.out.take_keys(w.wid, ComputeTasks)) == 2
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_queued_tasks_are_retracted_once_the_worker_has_too_little_time_left(env: Env) -> None:
    w = env.worker(2, time_limit=100)
    g = env.group(4, min_time=50)
    env.schedule()
    keys = env.out.take_keys(w.wid, ComputeTasks)
    assert keys == g.keys.tolist()
    env.start(w, keys[:2])
    env.clock.advance(49)
    env.schedule()
    env.out.take(to=w.wid, kind=RetractTasks, count=0)  # 51 s left: still fine
    env.clock.advance(2)
    env.schedule()
    assert sorted(env.out.take_keys(w.wid, RetractTasks)) == keys[2:]  # never the running
    env.schedule()
    env.out.take(to=w.wid, kind=RetractTasks, count=0)  # asked once, not again
    env.give_back(w, keys[2:])
    env.schedule()
    assert g.pending == 2  # back in the pool, and not sent to w again
    fresh = env.worker(2)
    env.schedule()
    assert sorted(env.out.take_keys(fresh.wid, ComputeTasks)) == keys[2:]
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_time_request_of_the_variant_actually_used_is_honoured(env: Env) -> None:
    big = RequestVariant((ResourceEntry("cpus", 8 * FRACTIONS),))  # never fits this worker
    small_but_long = RequestVariant((ResourceEntry("cpus", FRACTIONS),), min_time=100)
    env.worker(4, time_limit=50)
    env.group(1, req=ResourceRequest((big, small_but_long)))
    env.schedule()
    env.out.assert_empty()
    env.check()


def test_later_variants_let_more_tasks_run_at_once(env: Env) -> None:
    w = env.worker(16, list_pool("x", "0", "1"))
    v0 = RequestVariant((ResourceEntry("cpus", FRACTIONS), ResourceEntry("x", FRACTIONS)))
    v1 = RequestVariant((ResourceEntry("cpus", 4 * FRACTIONS),))
    env.group(5, req=ResourceRequest((v0, v1)))
    env.schedule()
    assert env.held(w) == 5
    env.check()


# --- work stealing --------------------------------------------------------------------------


def _loaded_worker(env: Env, cpus: int = 4, extra: int = 4) -> tuple[list[int], list[int]]:
    """A worker running ``cpus`` tasks with ``extra`` more queued, and nothing pending."""
    w = env.worker(cpus)
    env.group(cpus + extra)
    env.schedule()
    keys = env.out.take_keys(w.wid, ComputeTasks)
    env.out.discard(DefineGroup)
    env.start(w, keys[:cpus])
    env.events.take("started", count=cpus)
    return keys[:cpus], keys[cpus:]


def test_idle_worker_makes_the_loaded_one_retract_half_its_queue(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    victim = env.core.workers[1]
    thief = env.worker(4)
    env.schedule()
    asked = env.out.take_keys(victim.wid, RetractTasks)
    assert len(asked) == 2 and set(asked) <= set(queued)  # half of 4, never a running one
    # Room is held on the thief while the retraction is in flight.
    assert set(thief.incoming) == set(asked)
    assert thief.committed["cpus"] == 2 * FRACTIONS
    env.out.assert_empty()
    env.check()


def test_steal_rounds_half_up_so_a_single_queued_task_can_move(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=1, extra=1)
    env.worker(1)
    env.schedule()
    assert env.out.take_keys(1, RetractTasks) == queued
    env.out.assert_empty()
    env.check()


def test_no_double_stealing_while_a_retraction_is_in_flight(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    thief = env.worker(2)
    env.schedule()
    asked = env.out.take_keys(1, RetractTasks)
    assert len(asked) == 2
    for _ in range(3):
        env.schedule()
    env.out.assert_empty()  # the thief's room is reserved, the asked keys are not asked again
    assert thief.committed["cpus"] == 2 * FRACTIONS
    env.check()


def test_second_thief_only_takes_from_what_is_not_already_asked_for(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    t1, t2 = env.workers(4, 4)
    env.schedule()
    asks = env.out.take(to=1, kind=RetractTasks)
    asked = [k for m in asks for k in m.keys]
    assert len(asked) == len(set(asked)) == 3  # half of 4, then half of the 2 left
    assert set(t1.incoming).isdisjoint(t2.incoming)
    assert len(t1.incoming) + len(t2.incoming) == 3
    env.out.assert_empty()
    env.check()


def test_returned_tasks_go_straight_to_the_thief(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    victim = env.core.workers[1]
    thief = env.worker(4)
    env.schedule()
    asked = env.out.take_keys(victim.wid, RetractTasks)
    env.give_back(victim, asked)
    assert sorted(env.out.take_keys(thief.wid, ComputeTasks)) == sorted(asked)
    env.out.take(to=thief.wid, kind=DefineGroup, count=1)
    assert not thief.incoming
    assert sorted(thief.assigned) == sorted(asked)
    assert thief.committed["cpus"] == 2 * FRACTIONS
    assert victim.committed["cpus"] == 6 * FRACTIONS
    env.out.assert_empty()
    env.check()


def test_tasks_that_started_meanwhile_stay_and_free_the_thiefs_room(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    victim = env.core.workers[1]
    thief = env.worker(4)
    env.schedule()
    asked = env.out.take_keys(victim.wid, RetractTasks)
    started, returned = asked[0], asked[1]
    env.start(victim, [started])  # the node started it before the retraction arrived
    env.events.take("started", count=1)
    assert thief.committed["cpus"] == 1 * FRACTIONS
    env.give_back(victim, [returned])
    assert env.out.take_keys(thief.wid, ComputeTasks) == [returned]
    env.out.discard(DefineGroup)
    assert started in victim.running
    assert list(thief.assigned) == [returned]
    env.out.assert_empty()
    env.check()


def test_retraction_answer_may_overtake_the_start_report(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    victim = env.core.workers[1]
    thief = env.worker(4)
    env.schedule()
    started, returned = env.out.take_keys(victim.wid, RetractTasks)
    env.give_back(victim, [returned])  # the start of `started` is still in the node's batch
    env.out.discard(ComputeTasks)
    env.out.discard(DefineGroup)
    assert started in thief.incoming  # still promised: the news has not arrived
    env.check()
    env.start(victim, [started])
    assert not thief.incoming
    assert thief.committed["cpus"] == 1 * FRACTIONS  # only the returned task
    env.out.assert_empty()
    env.check()


def test_thief_lost_while_retracting_sends_the_returned_tasks_back_to_the_pool(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    victim = env.core.workers[1]
    thief = env.worker(4)
    env.schedule()
    asked = env.out.take_keys(victim.wid, RetractTasks)
    env.lose(thief)
    env.give_back(victim, asked)
    env.out.assert_empty()
    group = env.group_of(asked[0])
    assert group.pending == 2
    env.check()


def test_victim_lost_while_retracting_frees_the_thiefs_reservation(env: Env) -> None:
    running, queued = _loaded_worker(env, cpus=4, extra=4)
    victim = env.core.workers[1]
    thief = env.worker(4)
    env.schedule()
    env.out.take_keys(victim.wid, RetractTasks)
    env.lose(victim)
    assert not thief.incoming
    assert thief.committed["cpus"] == 0
    assert len(env.events.take("requeued")) == 8
    env.check()
    env.schedule()
    assert len(env.out.take_keys(thief.wid, ComputeTasks)) == 8  # 4 now + 4 prefilled
    env.out.discard(DefineGroup)
    env.out.assert_empty()
    env.check()


def test_thief_never_steals_tasks_it_cannot_run(env: Env) -> None:
    w = env.worker(1, list_pool("foo", "a"))
    env.group(3, foo=1)
    env.schedule()
    keys = env.out.take_keys(w.wid, ComputeTasks)
    env.out.discard(DefineGroup)
    env.start(w, keys[:1])
    env.worker(4)  # no foo
    env.schedule()
    env.out.assert_empty()
    env.check()


def test_memory_to_spare_is_no_room_to_steal_with(env: Env,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers whose CPUs are all promised, but whose memory (detected, asked for by nobody)
    is free, steal nothing and look at no queue for it: each of them walked every other
    worker's queue on every pass (100 such nodes: 100 ms a task's end,
    bench/test_scheduler_bench.py). A worker with CPUs to spare still steals."""
    from hqshm.cluster import scheduler

    workers = [env.worker(1, sum_pool("mem", 16)) for _ in range(4)]
    env.group(8)  # nothing left pending once each has one running and one queued
    env.schedule()
    for w in workers:
        keys = env.out.take_keys(w.wid, ComputeTasks)
        assert len(keys) == 2  # one to run, one round of prefill
        env.start(w, keys[:1])
    env.out.discard(DefineGroup)
    looked: list[int] = []
    real = scheduler._variant_with_room
    monkeypatch.setattr(scheduler, "_variant_with_room",
                        lambda *args: looked.append(1) or real(*args))
    env.core.changed()
    env.schedule()
    env.out.assert_empty()
    assert looked == []
    thief = env.worker(2, sum_pool("mem", 16))
    env.schedule()
    assert len(thief.incoming) == 2  # queued tasks move to the CPUs that are free
    env.out.discard(RetractTasks)
    env.out.assert_empty()
    env.check()


def test_a_worker_that_can_start_all_its_tasks_is_not_robbed(env: Env) -> None:
    w1, w2 = env.workers(4, 4)
    env.group(6)
    env.schedule()
    env.out.take(to=w1.wid, kind=RetractTasks, count=0)
    env.check()


# --- cost of waiting work ---------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per call of ``scheduler.place`` (the work a scheduling pass does per group)."""
    from hqshm.cluster import scheduler

    made: list[int] = []
    place = scheduler.place

    def counted(*args: object, **kwargs: object) -> int:
        made.append(1)
        return place(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scheduler, "place", counted)
    return made


def test_waiting_groups_are_not_examined_without_room(env: Env, calls: list[int]) -> None:
    """A turn costs O(workers) once no worker has room, not O(groups x workers): with 3,500
    single-task jobs waiting, each submit took the server 27 ms (bench/submit_bench.py)."""
    groups = [env.group(1) for _ in range(200)]
    env.schedule()  # no workers: nothing placed, nothing examined
    assert all(g.pending == 1 for g in groups)
    w = env.worker(1)
    env.schedule()
    # One group fills the worker's CPU and the next its prefill room (one round: no task of
    # theirs ran yet); then nothing fits and the other 198 groups are not looked at.
    assert sum(g.pending == 0 for g in groups) == 2
    assert len(calls) == 2  # fill: the first group; prefill: the second (the first has none left)
    calls.clear()
    env.group(1)
    env.schedule()  # a new job while the worker is full: no group is looked at
    assert calls == []
    assert env.out.take_keys(w.wid, ComputeTasks)


def test_room_in_a_pool_nobody_asks_for_does_not_make_every_group_try(
        env: Env, calls: list[int]) -> None:
    """A worker's memory stays free while single-CPU jobs wait for its CPUs: once one group
    found no room, the groups with its request and priority are skipped for the rest of the
    pass. Before, 650 waiting single-task jobs were 650 placements a turn, and the server fell
    behind a steady 100 jobs/s (bench/many_jobs_bench.py)."""
    w = env.worker(1, sum_pool("mem", 1000))
    groups = [env.group(1) for _ in range(200)]
    env.schedule()
    assert sum(g.pending == 0 for g in groups) == 2  # the CPU, then its prefill room
    assert len(calls) <= 2 + 3  # fill: one placed, one found none; prefill: two, then none
    assert env.out.take_keys(w.wid, ComputeTasks)
    calls.clear()
    urgent = env.group(1, priority=5)
    env.schedule()
    assert len(calls) <= 2 * 2  # a higher priority is its own class: tried in each pass
    assert urgent.pending == 1
    env.check()


def test_a_full_cluster_skips_the_pass_for_jobs_of_a_full_class(
        env: Env, calls: list[int]) -> None:
    """A pass that found every class of waiting task without room stays right until room
    frees or pending tasks change: jobs of those classes submitted meanwhile cost the server
    no pass at all (with 3,000 single-task jobs submitted to a busy worker: 1.7-2.2 ms of
    server CPU a submit before, 1.0 ms after; bench/README.md)."""
    env.probe_skips = False  # its full pass would count as calls
    w = env.worker(1, sum_pool("mem", 1000))
    first = [env.group(1) for _ in range(50)]
    env.schedule()
    keys = env.out.take_keys(w.wid, ComputeTasks)
    assert len(keys) == 2 and env.core.full_classes is not None
    calls.clear()
    more = [env.group(1) for _ in range(20)]
    for _ in range(3):
        env.schedule()
    assert calls == [] and all(g.pending == 1 for g in more)
    # Another class is looked at; room that frees is used at once.
    urgent = env.group(1, priority=5)
    env.schedule()
    assert calls and urgent.pending == 1
    env.start(w, keys[:1])
    env.finish(w, keys[:1])
    env.schedule()
    assert len(env.out.take_keys(w.wid, ComputeTasks)) == 1
    assert urgent.pending == 0  # the better priority took the freed room
    assert sum(g.pending for g in first + more) == 50 + 20 - 2
    env.check()
