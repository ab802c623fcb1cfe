"""What streaming costs a short task, and how fast a stream file is read back.

- ``test_task_to_devnull`` / ``test_task_to_file`` / ``test_task_streamed``: one executor
  runs `printenv HQ_TASK_ID` with its output discarded, written to a file, or streamed
  (`--stream`: pipes copied into the node's stream file); dispatch to ENDED, as in
  test_node_bench.py. The streamed medians minus the others are the price of streaming a task.
- ``test_read_stream``: decoding and indexing a stream file of 100,000 small task streams,
  as `hq output-log` does.

Run: ``pytest bench/test_stream_bench.py``.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hqshm.cli.streamlog import StreamLog, list_stream_files, read_stream_file
from hqshm.model.program import ProgramSpec, Stdio
from hqshm.model.streamformat import StreamHeader, encode_header, encode_record
from hqshm.node import launch
from hqshm.node.executor import TaskPayload
from hqshm.node.pool import ExecutorPool
from hqshm.node.ring import RecordKind

pytestmark = pytest.mark.benchmark(max_time=1.0, min_rounds=50)

RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExecutorPool, Path]]:
    work = tmp_path_factory.mktemp("node")
    context = launch.NodeContext(
        worker_id=1, hostname="bench", work_dir=str(work), hq_path="hq", base_env=dict(os.environ)
    )
    pool = ExecutorPool(1, context)
    try:
        yield pool, work
    finally:
        pool.stop()


def program(work: Path, kind: str) -> ProgramSpec:
    out = {
        "devnull": Stdio(Stdio.NONE),
        "file": Stdio(Stdio.FILE, str(work / "out-%{TASK_ID}")),
        "stream": Stdio(Stdio.STREAM),
    }[kind]
    return ProgramSpec(
        args=("printenv", "HQ_TASK_ID"),
        env={},
        cwd=str(work),
        stdout=out,
        stderr=Stdio(Stdio.STREAM) if kind == "stream" else Stdio(Stdio.NONE),
        job_id=1,
        submit_dir=str(work),
        server_uid="bench1",
        stream_dir=str(work / "stream") if kind == "stream" else "",
    )


def run_tasks(benchmark: BenchmarkFixture, node: tuple[ExecutorPool, Path], kind: str) -> None:
    pool, work = node
    handle = pool.handles[0]
    gid = {"devnull": 1, "file": 2, "stream": 3}[kind]
    body = program(work, kind).encode()
    payload = TaskPayload(gid, None, {}, [], True, False).encode()
    counter = iter(range(gid << 24, 10**12))

    def once() -> None:
        key = (1 << 32) | next(counter)
        pool.dispatch(handle, key, 0, gid, body, [], -1, payload)
        while True:
            select.select([pool.doorbell_r], [], [], 5.0)
            ended = [r for _, r in pool.drain() if r.kind == RecordKind.ENDED and r.key == key]
            if ended:
                assert ended[0].status == 0, ended[0].payload
                return

    benchmark(once)
    RESULTS[kind] = benchmark.stats.stats.median
    if kind == "stream":
        for other in ("devnull", "file"):
            if other in RESULTS:
                extra = (RESULTS["stream"] - RESULTS[other]) * 1e6
                benchmark.extra_info[f"stream_minus_{other}_median_us"] = extra
        assert len(list_stream_files(str(work / "stream"))) == 1


def test_task_to_devnull(benchmark: BenchmarkFixture, node: tuple[ExecutorPool, Path]) -> None:
    run_tasks(benchmark, node, "devnull")


def test_task_to_file(benchmark: BenchmarkFixture, node: tuple[ExecutorPool, Path]) -> None:
    run_tasks(benchmark, node, "file")


def test_task_streamed(benchmark: BenchmarkFixture, node: tuple[ExecutorPool, Path]) -> None:
    run_tasks(benchmark, node, "stream")


@pytest.mark.benchmark(max_time=2.0, min_rounds=3)
def test_read_stream(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    tasks = 100_000
    path = tmp_path / "x.hqs"
    with open(path, "wb") as f:
        f.write(encode_header(StreamHeader("bench1", 1)))
        for task in range(tasks):
            f.write(encode_record(1.0, 1, task, 0, 0, f"{task}\n".encode()))
            f.write(encode_record(1.0, 1, task, 0, 0))

    def read() -> StreamLog:
        log = StreamLog()
        read_stream_file(str(path), log.add)
        return log

    log = benchmark(read)
    assert log.summary().n_tasks == tasks
