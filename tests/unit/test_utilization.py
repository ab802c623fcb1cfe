"""`--min-utilization`: the choice of task sets (cluster/utilization.py) and the scheduler's use
of it, with the test facts of spec/resources.md §2.2 (a 12-CPU worker, U = 1)."""

from __future__ import annotations

from core_env import Env
from hqshm.cluster.protocol import ComputeTasks, DefineGroup
from hqshm.cluster.resources import FRACTIONS, RequestVariant, ResourceEntry, ResourceRequest
from hqshm.cluster.utilization import Candidate, choose
from hypothesis import given
from hypothesis import strategies as st

CPU = FRACTIONS


def cpus(n: int, weight: float = 1.0, all_cpus: bool = False) -> ResourceRequest:
    entry = ResourceEntry("cpus", n * CPU, all=all_cpus)
    return ResourceRequest((RequestVariant((entry,), weight=round(weight * FRACTIONS)),))


def scenario(*groups: tuple[int, ResourceRequest]) -> list[int]:
    """Tasks started per group on a fresh 12-CPU worker with min utilization 1."""
    env = Env()
    worker = env.worker(12, min_utilization=1.0)
    made = [env.group(n, req=request) for n, request in groups]
    env.schedule()
    started = env.out.take(to=worker.wid, kind=ComputeTasks)
    env.out.discard(DefineGroup)
    env.check()
    return [sum(len(m.keys) for m in started if m.gid == g.gid) for g in made]


def test_three_tasks_of_three_cpus_cannot_fill_the_worker_so_all_runs() -> None:
    assert scenario((3, cpus(3, weight=2)), (1, cpus(12, all_cpus=True))) == [0, 1]


def test_four_tasks_of_three_cpus_fill_it_and_win_by_weight() -> None:
    assert scenario((4, cpus(3, weight=2)), (1, cpus(12, all_cpus=True))) == [4, 0]


def test_two_of_three_and_one_of_six() -> None:
    assert scenario((3, cpus(3, weight=2)), (3, cpus(6))) == [2, 1]


def test_nothing_starts_when_no_set_reaches_the_minimum() -> None:
    assert scenario((2, cpus(3))) == [0]


@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 3), st.integers(0, 4)),
                max_size=4),
       st.integers(1, 16), st.integers(0, 16))
def test_a_chosen_set_fits_reaches_the_minimum_and_is_the_best(
        items: list[tuple[int, int, int]], free: int, minimum: int) -> None:
    candidates = [Candidate(i, c * CPU, w * CPU, n) for i, (c, w, n) in enumerate(items)]
    chosen = choose(candidates, free * CPU, 0, minimum * CPU)
    # brute force over every allowed set
    best = None
    def walk(i: int, used: int, value: int) -> None:
        nonlocal best
        if i == len(items):
            if used >= minimum and used > 0 and (best is None or value > best):
                best = value
            return
        c, w, n = items[i]
        for k in range(n + 1):
            if used + k * c <= free:
                walk(i + 1, used + k * c, value + k * c * w)
    walk(0, 0, 0)
    if best is None:
        assert chosen == {}
        return
    used = sum(items[i][0] * k for i, k in chosen.items())
    assert used <= free and used >= minimum
    assert all(k <= items[i][2] for i, k in chosen.items())
    assert sum(items[i][0] * items[i][1] * k for i, k in chosen.items()) == best
