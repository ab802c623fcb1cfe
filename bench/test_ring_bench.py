"""Ring costs: Python time of push and pop on each side, and the hand-off between two processes.

The design budget is a median one-way hand-off of at most 10 us. One-way latency is half of a
ping-pong round trip over two rings with an echoing child process; each test records it in
``extra_info["one_way_median_us"]``. Run: ``python -m pytest bench/test_ring_bench.py``.
"""

from __future__ import annotations

import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hqshm.node.ring import (
    DEFAULT_SPIN,
    RecordKind,
    Ring,
    drain_doorbell,
    open_doorbell,
    ring_doorbell,
)

PREFIX = "hqshm-bench"
BATCH = 256
PAYLOAD = b"x" * 200  # about the msgpack of a short argv, env delta and paths

pytestmark = pytest.mark.benchmark(max_time=0.5, min_rounds=20)


@pytest.fixture
def ring() -> Iterator[Ring]:
    with Ring.create(PREFIX, capacity=BATCH) as r:
        yield r


def push_run(r: Ring, key: int = 1) -> bool:
    return r.push(key=key, instance=0, kind=RecordKind.RUN, cpus=(3,), payload=PAYLOAD)


def fill(r: Ring) -> None:
    for key in range(BATCH):
        push_run(r, key)


def drain(r: Ring) -> None:
    while r.pop(0) is not None:
        pass


def test_push(benchmark: BenchmarkFixture, ring: Ring) -> None:
    benchmark.pedantic(fill, args=(ring,), setup=lambda: drain(ring), rounds=200)
    benchmark.extra_info["push_us"] = benchmark.stats.stats.median / BATCH * 1e6
    drain(ring)


def test_pop(benchmark: BenchmarkFixture, ring: Ring) -> None:
    benchmark.pedantic(drain, args=(ring,), setup=lambda: fill(ring), rounds=200)
    benchmark.extra_info["pop_us"] = benchmark.stats.stats.median / BATCH * 1e6
    assert ring.pop(0) is None


def test_pop_when_empty(benchmark: BenchmarkFixture, ring: Ring) -> None:
    assert benchmark(ring.pop, 0) is None


def fork_echo(down: Ring, up: Ring, bell: int | None) -> int:
    """An executor stand-in: pops a RUN, pushes a STARTED back, until STOP."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        while (r := down.pop()) is not None and r.kind != RecordKind.STOP:
            up.push(key=r.key, instance=r.instance, kind=RecordKind.STARTED, pid=1)
            if bell is not None:
                ring_doorbell(bell)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def stop_echo(down: Ring, pid: int) -> None:
    down.push(key=0, instance=0, kind=RecordKind.STOP, timeout=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def ping_pong(
    benchmark, spin: float, round_trip: Callable[[Ring, Ring], None], bell: int | None
) -> None:
    with Ring.create(PREFIX, spin=spin) as down, Ring.create(PREFIX, spin=spin) as up:
        pid = fork_echo(down, up, bell)
        try:
            round_trip(down, up)  # the child is up and answering
            benchmark.pedantic(round_trip, args=(down, up), rounds=5000, warmup_rounds=200)
        finally:
            stop_echo(down, pid)
    median = benchmark.stats.stats.median
    benchmark.extra_info["one_way_median_us"] = median / 2 * 1e6


@pytest.mark.parametrize("spin", [DEFAULT_SPIN, 0.0], ids=["spin", "nospin"])
def test_handoff_blocking_pop(benchmark: BenchmarkFixture, spin: float) -> None:
    """Both sides block in pop(): the executor's path, and the node's if it could block."""

    def round_trip(down: Ring, up: Ring) -> None:
        push_run(down)
        up.pop()

    ping_pong(benchmark, spin, round_trip, None)


def test_handoff_doorbell(benchmark: BenchmarkFixture) -> None:
    """The node's real path back: sleep in select() on the doorbell, drain, pop(0)."""
    bell, write_fd = open_doorbell()
    try:

        def round_trip(down: Ring, up: Ring) -> None:
            push_run(down)
            while True:
                select.select([bell], [], [])
                drain_doorbell(bell)
                if up.pop(0) is not None:
                    return

        ping_pong(benchmark, DEFAULT_SPIN, round_trip, write_fd)
    finally:
        os.close(bell)
        os.close(write_fd)
