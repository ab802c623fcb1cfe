"""The runtime's own CPU per `true` task, by process (issue 9, item 1: ≤ 100 us in all).

Each round starts a server and one node with 2 CPUs, runs 2,000 `true` tasks to the end of
`hq submit --wait`, and reads each process's CPU time from /proc before and after: the server,
the node, its executors, and the `true` processes they reaped. The benchmark's time is the
round's wall time; the shares per task are in the report's ``extra_info`` (``--benchmark-json``
keeps them) and printed. compare_hq.py measures the same next to a C loop, xargs and HQ.
Run: ``pytest bench/test_runtime_cpu_bench.py -s``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from compare_hq import run_hqshm
from pytest_benchmark.fixture import BenchmarkFixture

TASKS = 2000
CPUS = 2


@pytest.mark.benchmark(min_rounds=3)
def test_runtime_cpu_per_task(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    shares: list[dict[str, float]] = []

    def one_round() -> None:
        root = tmp_path / f"round-{len(shares)}"
        root.mkdir()
        shares.append(run_hqshm(TASKS, CPUS, root)[1])

    benchmark.pedantic(one_round, rounds=3, iterations=1)
    least = {kind: min(share[kind] for share in shares) for kind in shares[0]}
    least["runtime"] = least["server"] + least["node"] + least["executors"]
    benchmark.extra_info.update({f"{kind}_us_per_task": round(us, 1)
                                 for kind, us in least.items()})
    print("\nCPU per task (least of 3 rounds): "
          + ", ".join(f"{kind} {us:.0f} us" for kind, us in least.items()))
    assert least["true"] > 0, "the executors reaped no task processes"
