"""`hq job cancel` of a running 20,000-task array, as a user runs it (target: under 5 s).

Each round submits a fresh array of `sleep 1` tasks to a live server with one 2-CPU node, waits
until it runs, and times the cancel command (interpreter start included). The behaviour (every
task canceled or finished) is tested in tests/integration/test_jobs.py.
Run: ``pytest bench/test_cancel_bench.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import hq_command, running_server
from pytest_benchmark.fixture import BenchmarkFixture

TASKS = 20_000
TARGET_S = 5.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[dict[str, str]]:
    hq = hq_command()
    with running_server(tmp_path / "server") as (env, _server):
        proc = subprocess.Popen([*hq, "worker", "start", "--cpus=2", "--detect-resources=none"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            yield env
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def running_tasks(env: dict[str, str], job: int) -> int:
    out = subprocess.run([*hq_command(), "--output-mode=json", "job", "list", "--all"],
                         env=env, capture_output=True, check=True).stdout
    [stats] = [j["task_stats"] for j in json.loads(out) if j["id"] == job]
    return stats["running"]


def test_cancel_of_a_running_array(benchmark: BenchmarkFixture, node: dict[str, str],
                                   tmp_path: Path) -> None:
    hq = hq_command()
    jobs = iter(range(1, 100))
    current: list[int] = []

    def submit_running() -> None:
        job = next(jobs)
        subprocess.run([*hq, "submit", f"--array=1-{TASKS}", "--stdout=none", "--stderr=none",
                        "--", "sleep", "1"], env=node, cwd=tmp_path, check=True,
                       capture_output=True)
        deadline = time.monotonic() + 30
        while not running_tasks(node, job):
            assert time.monotonic() < deadline, f"job {job} did not start"
            time.sleep(0.05)
        current[:] = [job]

    def cancel() -> None:
        result = subprocess.run([*hq, "job", "cancel", str(current[0])], env=node,
                                capture_output=True, text=True)
        assert f"Job {current[0]} canceled (" in result.stdout + result.stderr

    benchmark.pedantic(cancel, setup=submit_running, rounds=3)
    median = benchmark.stats.stats.median
    benchmark.extra_info["median_s"] = median
    assert median < TARGET_S
