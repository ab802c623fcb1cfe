"""Node-local overhead of a no-op task: the executor path versus spawning directly.

Both measurements run in this process, one after the other, on the same spec: `true` with this
node's environment, pinned to one CPU, no output files.

- ``test_direct_spawn``: `affinity.spawn` + `waitpid` in this process: the floor.
- ``test_executor_roundtrip``: through the node's machinery: the task is planned into a RUN
  record, pushed into an executor's ring, the executor resolves paths and environment, spawns,
  waits and reports; we pop its STARTED and ENDED records from the completion ring.

The difference of the medians is the node-local overhead of a task (``extra_info``).

- ``test_function_roundtrip``: a no-op Python function task (built by the Python API as a
  user's would be) through the same path, run inside the executor (the warm path), one at a
  time: the latency of a function task on its node, two process wake-ups included.
- ``test_function_batch``: eight such tasks dispatched together (as the node queues a short
  group's tasks behind each other), all their ENDED records popped: a task's share of it is
  the node-local overhead of a function task in a stream of them (issue 10: at most 50 us).

Run: ``pytest bench/test_node_bench.py``.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hqshm.api.build import build_submission
from hqshm.api.function import PythonEnv
from hqshm.api.job import Job
from hqshm.model.program import ProgramSpec, Stdio
from hqshm.node import affinity, launch
from hqshm.node.executor import TaskPayload
from hqshm.node.pool import ExecutorPool
from hqshm.node.ring import RecordKind
from hqshm.server import submits

pytestmark = pytest.mark.benchmark(max_time=1.0, min_rounds=50)

RESULTS: dict[str, float] = {}
BATCH = 8  # hqshm/node/core.py's HANDOFF_DEPTH: what the node queues behind a running task


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


def noop(_i: int) -> None:
    """The function task of test_function_roundtrip."""


def function_task(work: Path) -> tuple[bytes, bytes]:
    """A no-op function task as the API builds it and the server makes it a program: the
    group's body and the task's entry (its arguments)."""
    job = Job()
    job.function(noop, args=(1,), stdout=None, stderr=None)
    task = build_submission(job, PythonEnv(), str(work)).tasks[0]
    spec = submits._program(1, task.template, str(work), None, "bench1")
    assert task.entry is not None
    return spec.encode(), task.entry


def roundtrip(executors: ExecutorPool, gid: int, body: bytes, entry: bytes | None,
              counter: Iterator[int], tasks: int = 1) -> None:
    """Tasks through the executor: dispatched together, their ENDED records popped."""
    handle = executors.handles[0]
    cpu = min(os.sched_getaffinity(0))
    payload = TaskPayload(gid, entry, {"HQ_RESOURCE_REQUEST_cpus": "1 compact"}, [str(cpu)],
                          True, True).encode()
    keys = {(gid << 32) | next(counter) for _ in range(tasks)}
    for key in sorted(keys):
        executors.dispatch(handle, key, 0, gid, body, [cpu], -1, payload)
    while keys:
        select.select([executors.doorbell_r], [], [], 5.0)
        for _, record in executors.drain():
            if record.kind == RecordKind.ENDED and record.key in keys:
                assert record.status == 0, record.payload
                keys.discard(record.key)


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
    counter = iter(range(1, 10**9))
    benchmark(roundtrip, executors, 1, body, None, counter)
    median = benchmark.stats.stats.median
    if "direct" in RESULTS:
        benchmark.extra_info["direct_spawn_median_us"] = RESULTS["direct"] * 1e6
        benchmark.extra_info["node_overhead_median_us"] = (median - RESULTS["direct"]) * 1e6


def test_function_roundtrip(benchmark: BenchmarkFixture, pool: tuple[ExecutorPool, bytes],
                            tmp_path: Path) -> None:
    executors, _ = pool
    body, entry = function_task(tmp_path)
    counter = iter(range(1, 10**9))
    roundtrip(executors, 2, body, entry, counter)  # the executor unpickles the function once
    benchmark(roundtrip, executors, 2, body, entry, counter)
    benchmark.extra_info["function_task_roundtrip_median_us"] = (
        benchmark.stats.stats.median * 1e6)


def test_function_batch(benchmark: BenchmarkFixture, pool: tuple[ExecutorPool, bytes],
                        tmp_path: Path) -> None:
    executors, _ = pool
    body, entry = function_task(tmp_path)
    counter = iter(range(1, 10**9))
    roundtrip(executors, 3, body, entry, counter)
    benchmark(roundtrip, executors, 3, body, entry, counter, BATCH)
    benchmark.extra_info["function_task_in_a_batch_median_us"] = (
        benchmark.stats.stats.median / BATCH * 1e6)
