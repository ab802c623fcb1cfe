"""A node's memory per finished single-task job (issue 9): RSS of `hq worker start` and its
executors before and after N jobs, each a group of its own.

    python bench/node_memory.py [--jobs 4000] [--warmup 200] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from submit_bench import one_connection


def hq(*args: str) -> list[str]:
    return [sys.executable, "-P", "-m", "hqshm.cli.main", *args]


def rss(pid: int) -> tuple[int, int]:
    """RSS of the node and the sum over its executors."""
    node = psutil.Process(pid)
    return node.memory_info().rss, sum(c.memory_info().rss for c in node.children())


def run_jobs(server_dir: Path, env: dict[str, str], jobs: int) -> None:
    one_connection(server_dir, jobs)
    subprocess.run(hq("job", "wait", "all"), env=env, check=True, capture_output=True,
                   timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server_dir = Path(tmp) / "server"
        env = dict(os.environ, HQ_SERVER_DIR=str(server_dir))
        server = subprocess.Popen(hq("server", "start"), env=env, cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker = None
        try:
            while subprocess.run(hq("server", "info"), env=env, capture_output=True).returncode:
                time.sleep(0.1)
            worker = subprocess.Popen(hq("worker", "start", f"--cpus={args.cpus}",
                                         "--detect-resources=none", f"--work-dir={tmp}/w"),
                                      env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(2)
            run_jobs(server_dir, env, args.warmup)  # executors warmed, caches filled
            time.sleep(0.5)
            node0, ex0 = rss(worker.pid)
            start = time.perf_counter()
            run_jobs(server_dir, env, args.jobs)
            took = time.perf_counter() - start
            time.sleep(0.5)
            node1, ex1 = rss(worker.pid)
            print(f"{args.jobs} jobs in {took:.1f} s ({args.jobs / took:.0f} jobs/s)")
            print(f"node RSS {node0 / 2**20:.1f} -> {node1 / 2**20:.1f} MiB: "
                  f"{(node1 - node0) / args.jobs:.0f} bytes/job")
            print(f"executors RSS {ex0 / 2**20:.1f} -> {ex1 / 2**20:.1f} MiB: "
                  f"{(ex1 - ex0) / args.jobs:.0f} bytes/job (all executors together)")
        finally:
            if worker is not None:
                worker.terminate()
            subprocess.run(hq("server", "stop"), env=env, capture_output=True)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
