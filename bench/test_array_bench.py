"""A million-task array: how fast the server accepts it and what it costs in server memory.

Targets (design.md, issue 3): `hq submit --array 1-1000000 -- true` accepted in ≤ 2 s, and ≤ 64
bytes of server memory a task, measured as the server's RSS before and after (no worker, so the
tasks stay waiting). Also times `hq job list` and `hq job info` on that job.
Run: ``pytest bench/test_array_bench.py -s``.
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

TASKS = 1_000_000


def hq() -> list[str]:
    candidate = Path(sys.executable).parent / "hq"
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", "hqshm.cli.main"]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    env = dict(os.environ, HQ_SERVER_DIR=str(tmp_path / "server"))
    proc = subprocess.Popen([*hq(), "server", "start"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*hq(), "server", "info"], env=env,
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield env, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def test_million_task_array(server: tuple[dict[str, str], int], tmp_path: Path,
                            record_property: pytest.RecordProperty) -> None:
    env, pid = server
    before = rss_kib(pid)
    submit = timed([*hq(), "submit", f"--array=1-{TASKS}", "--", "true"], env, tmp_path)
    time.sleep(0.5)  # let the server finish the turn that added the tasks
    after = rss_kib(pid)
    per_task = (after - before) * 1024 / TASKS
    job_list = timed([*hq(), "job", "list"], env, tmp_path)
    job_info = timed([*hq(), "job", "info", "1"], env, tmp_path)
    print(f"\nsubmit of {TASKS:,} tasks: {submit:.2f} s; server memory {per_task:.0f} bytes/task "
          f"(RSS {before} -> {after} KiB); job list {job_list * 1e3:.0f} ms; job info "
          f"{job_info * 1e3:.0f} ms")
    record_property("submit_s", submit)
    record_property("bytes_per_task", per_task)
    assert submit <= 2.0
    assert per_task <= 64
