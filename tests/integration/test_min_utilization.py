"""`hq worker start --min-utilization` (spec/resources.md §2.2): a 12-CPU worker with U = 1
takes only task sets that use all 12 CPUs, the most valuable one by weight."""

from __future__ import annotations

import pytest
from harness import HqEnv

SLEEP = ["--", "sleep", "30"]


def running(env: HqEnv, job: int) -> int:
    return sum(1 for s in env.task_states(job).values() if s == "running")


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (["--array", "1-3", "--cpus", "3", "--weight", "2"], ["--cpus", "all"], (0, 1)),
        (["--array", "1-4", "--cpus", "3", "--weight", "2"], ["--cpus", "all"], (4, 0)),
        (["--array", "1-3", "--cpus", "3", "--weight", "2"], ["--array", "1-3", "--cpus", "6"],
         (2, 1)),
    ],
    ids=["all-wins", "four-threes-win", "two-threes-one-six"],
)
def test_min_utilization_picks_a_full_set(hq_env: HqEnv, first: list[str], second: list[str],
                                          expected: tuple[int, int]) -> None:
    hq_env.start_server()
    hq_env.command(["submit", *first, *SLEEP])
    hq_env.command(["submit", *second, *SLEEP])
    hq_env.start_worker(cpus=12, args=["--min-utilization", "1"])
    hq_env.wait_until(lambda: (running(hq_env, 1), running(hq_env, 2)) == expected,
                      f"{expected} tasks running")
    hq_env.command(["job", "cancel", "all"])


def test_out_of_range_utilization_is_refused(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.command(["worker", "start", "--cpus", "1", "--min-utilization", "1.5"],
                   expect_fail="Minimal utilization has to be in the interval [0.0, 1.0].")
