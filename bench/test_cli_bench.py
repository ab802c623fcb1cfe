"""`hq job list` round trip against a live server, interpreter start included (target ≤ 100 ms).

A server with 100 jobs is started once for the module; each round runs the `hq` program as a
user would, so the figure includes Python's start-up, imports, the CURVE handshake, the request
and rendering the table. Run: ``pytest bench/test_cli_bench.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

pytestmark = pytest.mark.benchmark(max_time=3.0, min_rounds=15)


def hq() -> list[str]:
    candidate = Path(sys.executable).parent / "hq"
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", "hqshm.cli.main"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("hq")
    env = dict(os.environ, HQ_SERVER_DIR=str(root / "server"))
    proc = subprocess.Popen([*hq(), "server", "start"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*hq(), "server", "info"], env=env,
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        for _ in range(100):
            subprocess.run([*hq(), "submit", "--", "true"], env=env, cwd=root, check=True,
                           capture_output=True)
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)


def test_job_list_roundtrip(benchmark: BenchmarkFixture, server: dict[str, str]) -> None:
    def once() -> None:
        result = subprocess.run([*hq(), "job", "list", "--all"], env=server,
                                capture_output=True)
        assert result.returncode == 0 and b"true" in result.stdout

    benchmark(once)
    benchmark.extra_info["median_ms"] = benchmark.stats.stats.median * 1000


def test_python_startup_floor(benchmark: BenchmarkFixture) -> None:
    """The interpreter alone, for reference: what no `hq` command can go below."""
    benchmark(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
