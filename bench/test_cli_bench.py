"""`hq job list` round trip against a live server, interpreter start included (target ≤ 100 ms),
and how soon `hq server start` can be reached.

A server with 100 jobs is started once for the module; each round runs the `hq` program as a
user would, so the figure includes Python's start-up, imports, the CURVE handshake, the request
and rendering the table. Run: ``pytest bench/test_cli_bench.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import hq_command, running_server
from pytest_benchmark.fixture import BenchmarkFixture

pytestmark = pytest.mark.benchmark(max_time=3.0, min_rounds=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("hq")
    with running_server(root / "server") as (env, _proc):
        for _ in range(100):
            subprocess.run([*hq_command(), "submit", "--", "true"], env=env, cwd=root,
                           check=True, capture_output=True)
        yield env


def test_job_list_roundtrip(benchmark: BenchmarkFixture, server: dict[str, str]) -> None:
    hq = hq_command()

    def once() -> None:
        result = subprocess.run([*hq, "job", "list", "--all"], env=server,
                                capture_output=True)
        assert result.returncode == 0 and b"true" in result.stdout

    benchmark(once)
    benchmark.extra_info["median_ms"] = benchmark.stats.stats.median * 1000


def test_python_startup_floor(benchmark: BenchmarkFixture) -> None:
    """The interpreter alone, for reference: what no `hq` command can go below."""
    benchmark(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))


def test_server_start_until_access_file(benchmark: BenchmarkFixture,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Exec of `hq server start` until its access file exists (sockets bound by then), what a
    script that starts a server and then submits waits for (issue 8, target ≤ 100 ms)."""
    hq = hq_command()
    started: list[subprocess.Popen[bytes]] = []

    def fresh_dir() -> tuple[tuple[Path], dict[str, object]]:
        for proc in started:  # the previous round's server, outside the timing
            proc.terminate()
            proc.wait()
        started.clear()
        return (tmp_path_factory.mktemp("start") / "server",), {}

    def start(server_dir: Path) -> None:
        started.append(subprocess.Popen([*hq, "server", "start", "--server-dir", str(server_dir)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        access = server_dir / "hq-current" / "access.json"
        while not access.exists():
            time.sleep(0.0005)

    try:
        benchmark.pedantic(start, setup=fresh_dir, rounds=15)
    finally:
        fresh_dir()
    benchmark.extra_info["median_ms"] = benchmark.stats.stats.median * 1000


def test_python_import_zmq_floor(benchmark: BenchmarkFixture) -> None:
    """The interpreter and pyzmq, which `hq server start` needs before it can listen."""
    benchmark(lambda: subprocess.run([sys.executable, "-c", "import zmq"], check=True))
