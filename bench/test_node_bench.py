"""Node-local overhead of a no-op task: the executor path versus spawning directly.

Both measurements run in this process, one after the other, on the same spec: `true` with this
node's environment, pinned to one CPU, no output files.

- ``test_direct_spawn``: `affinity.spawn` + `waitpid` in this process: the floor.
- ``test_executor_roundtrip``: through the node's machinery: the task is planned into a RUN
  record, pushed into an executor's ring, the executor resolves paths and environment, spawns,
  waits and reports; we pop its STARTED and ENDED records from the completion ring.

The difference of the medians is the node-local overhead of a task (``extra_info``).
Run: ``pytest bench/test_node_bench.py``.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hqshm.model.program import ProgramSpec, Stdio
from hqshm.node import affinity, launch
from hqshm.node.executor import TaskPayload
from hqshm.node.pool import ExecutorPool
from hqshm.node.ring import RecordKind

pytestmark = pytest.mark.benchmark(max_time=1.0, min_rounds=50)

RESULTS: dict[str, float] = {}


def program(tmp_path: Path) -> ProgramSpec:
    return ProgramSpec(
        args=("true",), env={}, cwd=str(tmp_path), stdout=Stdio(Stdio.NONE),
        stderr=Stdio(Stdio.NONE), job_id=1, submit_dir=str(tmp_path), server_uid="bench1",
    )


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExecutorPool, bytes]]:
    work = tmp_path_factory.mktemp("node")
    node = launch.NodeContext(worker_id=1, hostname="bench", work_dir=str(work),
                              hq_path="hq", base_env=dict(os.environ))
    pool = ExecutorPool(1, node)
    try:
        yield pool, program(work).encode()
    finally:
        pool.stop()


def test_direct_spawn(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    spec = affinity.SpawnSpec(["true"], env=dict(os.environ), cwd=str(tmp_path), cpus=[cpu])

    def once() -> None:
        _, status = os.waitpid(affinity.spawn(spec), 0)
        assert status == 0

    benchmark(once)
    RESULTS["direct"] = benchmark.stats.stats.median


def test_executor_roundtrip(benchmark: BenchmarkFixture,
                            pool: tuple[ExecutorPool, bytes]) -> None:
    executors, body = pool
    handle = executors.handles[0]
    cpu = min(os.sched_getaffinity(0))
    payload = TaskPayload(1, None, {"HQ_RESOURCE_REQUEST_cpus": "1 compact"}, [str(cpu)],
                          True, True).encode()
    counter = iter(range(1, 10**9))

    def once() -> None:
        key = (1 << 32) | next(counter)
        executors.dispatch(handle, key, 0, 1, body, [cpu], -1, payload)
        while True:
            select.select([executors.doorbell_r], [], [], 5.0)
            reports = executors.drain()
            if any(r.kind == RecordKind.ENDED and r.key == key for _, r in reports):
                ended = [r for _, r in reports if r.kind == RecordKind.ENDED]
                assert ended[-1].status == 0, ended[-1].payload
                return

    benchmark(once)
    median = benchmark.stats.stats.median
    if "direct" in RESULTS:
        benchmark.extra_info["direct_spawn_median_us"] = RESULTS["direct"] * 1e6
        benchmark.extra_info["node_overhead_median_us"] = (median - RESULTS["direct"]) * 1e6
