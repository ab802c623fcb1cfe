"""A million-task array: how fast the server accepts it and what it costs in server memory.

Targets (design.md, issue 3): `hq submit --array 1-1000000 -- true` accepted in ≤ 2 s, and ≤ 64
bytes of server memory a task, measured as the server's RSS before and after (no worker, so the
tasks stay waiting). Also times `hq job list` and `hq job info` on that job.
Run: ``pytest bench/test_array_bench.py -s``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import hq_command, running_server

TASKS = 1_000_000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    with running_server(tmp_path / "server") as (env, proc):
        yield env, proc.pid


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def test_million_task_array(server: tuple[dict[str, str], int], tmp_path: Path,
                            record_property: pytest.RecordProperty) -> None:
    env, pid = server
    before = rss_kib(pid)
    submit = timed([*hq_command(), "submit", f"--array=1-{TASKS}", "--", "true"], env, tmp_path)
    time.sleep(0.5)  # let the server finish the turn that added the tasks
    after = rss_kib(pid)
    per_task = (after - before) * 1024 / TASKS
    job_list = timed([*hq_command(), "job", "list"], env, tmp_path)
    job_info = timed([*hq_command(), "job", "info", "1"], env, tmp_path)
    print(f"\nsubmit of {TASKS:,} tasks: {submit:.2f} s; server memory {per_task:.0f} bytes/task "
          f"(RSS {before} -> {after} KiB); job list {job_list * 1e3:.0f} ms; job info "
          f"{job_info * 1e3:.0f} ms")
    record_property("submit_s", submit)
    record_property("bytes_per_task", per_task)
    assert submit <= 2.0
    assert per_task <= 64
