"""`hq job list` round trip against a live server, interpreter start included (target ≤ 100 ms).

A server with 100 jobs is started once for the module; each round runs the `hq` program as a
user would, so the figure includes Python's start-up, imports, the CURVE handshake, the request
and rendering the table. Run: ``pytest bench/test_cli_bench.py``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

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
