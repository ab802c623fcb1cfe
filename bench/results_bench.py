"""Results of function tasks (issue 10, items 4 and 5), side by side in one run.

    python bench/results_bench.py [--chain 10000] [--size 1024] [--cpus 2]
                                  [--submit 1000000] [--fetch-mb 10 50]
                                  [--skip-chain] [--skip-submit] [--skip-fetch]

- chain: N function tasks, each taking the previous task's result (``size`` bytes) as its
  argument and returning ``size`` bytes, through a server and `hq worker start --cpus N`; the
  time counts from the submit to the last task's result in the client
  (``SubmittedJob.result``). Next to it, the same chain through ``ProcessPoolExecutor(N)``
  (each step submitted when the one before returned: the chain's latency floor of a pool).
  Target: at least 5,000 tasks/s (stretch).
- fetch: one function task per size returning that many MB of bytes (above the inline
  threshold: the result stays on its worker), the job waited for, then the client's wall time
  of ``SubmittedJob.result``: the first ask (the server fetches it from the worker in parts),
  and the best of 3 later asks (served from the server's cache of fetched blobs).
- submit: a job of N no-op function tasks built and submitted with the Python API against a
  server without workers: seconds to build, to submit (the job goes in parts), the client's
  peak RSS growth and the server's RSS growth per task.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import resource
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from live_server import hq_command, running_server

from hqshm.api.build import build_submission
from hqshm.api.client import Client
from hqshm.api.job import Job


def step(previous: bytes) -> bytes:
    """One link of the chain: a new value of the same size from the previous one."""
    return previous[1:] + previous[:1]


def noop(_i: int) -> None:
    """The submit benchmark's task."""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def chain_job(n: int, size: int) -> tuple[Job, object]:
    job = Job(max_fails=None)
    task = job.function(step, args=(bytes(range(256)) * (size // 256),), stdout=None,
                        stderr=None)
    for _ in range(n - 1):
        task = job.function(step, args=(task,), stdout=None, stderr=None)
    return job, task


def run_chain(n: int, size: int, cpus: int, root: Path) -> float:
    """Tasks/s of the chain from submit to the last result."""
    with running_server(root / "server") as (env, _server):
        node = subprocess.Popen([*hq_command(), "worker", "start", f"--cpus={cpus}",
                                 "--detect-resources=none"], env=env, cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            client = Client(root / "server")
            warm, last = chain_job(4 * cpus, size)  # waits for the worker, warms executors
            client.submit(warm).result(last, timeout=120)
            job, last = chain_job(n, size)
            start = time.perf_counter()
            submitted = client.submit(job)
            value = submitted.result(last, timeout=3600)
            elapsed = time.perf_counter() - start
            assert len(value) == size
            client.connection.close()
            return n / elapsed
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGINT)
            node.wait(timeout=10)


def blob(n: int) -> bytes:
    """The fetch benchmark's task."""
    return b"r" * n


def run_fetch(sizes_mb: list[int], root: Path) -> list[tuple[int, float, float]]:
    """(MB, first ask s, best of 3 later asks s) of results held on the worker."""
    out = []
    with running_server(root / "server") as (env, _server):
        node = subprocess.Popen([*hq_command(), "worker", "start", "--cpus=1",
                                 "--detect-resources=none"], env=env, cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            client = Client(root / "server")
            for mb in sizes_mb:
                job = Job(max_result_size=64 << 20)
                task = job.function(blob, args=(mb * 1_000_000,), stdout=None, stderr=None)
                submitted = client.submit(job)
                client.wait_for_jobs([submitted])
                times = []
                for _ in range(4):
                    start = time.perf_counter()
                    value = submitted.result(task, timeout=120)
                    times.append(time.perf_counter() - start)
                    assert len(value) == mb * 1_000_000
                    del value
                out.append((mb, times[0], min(times[1:])))
                client.forget(submitted)
            client.connection.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGINT)
            node.wait(timeout=10)
    return out


def run_pool_chain(n: int, size: int, cpus: int) -> float:
    with concurrent.futures.ProcessPoolExecutor(cpus) as pool:
        list(pool.map(noop, range(4 * cpus)))
        value = bytes(range(256)) * (size // 256)
        start = time.perf_counter()
        for _ in range(n):
            value = pool.submit(step, value).result()
        return n / (time.perf_counter() - start)


def run_submit(n: int, root: Path) -> dict[str, float]:
    """Build and submit N no-op function tasks, no worker: times and memory."""
    with running_server(root / "server") as (_env, server):
        client = Client(root / "server")
        server_before = rss_kib(server.pid)
        client_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        job = Job(max_fails=None)
        for i in range(n):
            job.function(noop, args=(i,), stdout=None, stderr=None)
        built = time.perf_counter()
        submission = build_submission(job, client.python_env, os.getcwd())
        pickled = time.perf_counter()
        job_id = client.connection.submit(submission)
        sent = time.perf_counter()
        client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        server_after = rss_kib(server.pid)
        assert job_id == 1
        client.connection.close()
        return {"make": built - start, "build": pickled - built, "submit": sent - pickled,
                "client_mib": (client_peak - client_before) / 1024,
                "server_bytes_per_task": (server_after - server_before) * 1024 / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--submit", type=int, default=1_000_000)
    parser.add_argument("--skip-chain", action="store_true")
    parser.add_argument("--skip-submit", action="store_true")
    parser.add_argument("--fetch-mb", type=int, nargs="*", default=[10, 50])
    parser.add_argument("--skip-fetch", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hqshm-results-bench-") as tmp:
        if not args.skip_chain:
            (Path(tmp) / "chain").mkdir()
            pool = run_pool_chain(args.chain, args.size, args.cpus)
            rate = run_chain(args.chain, args.size, args.cpus, Path(tmp) / "chain")
            print(f"{args.chain:,} chained function tasks passing {args.size} bytes, "
                  f"{args.cpus} CPUs:\n")
            print("| runtime | tasks/s |\n| --- | ---: |")
            print(f"| hqshm (results as arguments, last result in the client) | {rate:,.0f} |")
            print(f"| ProcessPoolExecutor({args.cpus}), one step at a time | {pool:,.0f} |")
            print(f"\nhqshm / target 5,000 tasks/s = {rate / 5000:.2f}; "
                  f"hqshm / pool = {rate / pool:.2f}\n")
        if not args.skip_fetch and args.fetch_mb:
            (Path(tmp) / "fetch").mkdir()
            print("| result held on the worker | first result() (fetched) | later (cached) |\n"
                  "| ---: | ---: | ---: |")
            for mb, first, later in run_fetch(args.fetch_mb, Path(tmp) / "fetch"):
                print(f"| {mb} MB | {first * 1000:.0f} ms | {later * 1000:.0f} ms |")
            print()
        if not args.skip_submit:
            (Path(tmp) / "submit").mkdir()
            got = run_submit(args.submit, Path(tmp) / "submit")
            print(f"{args.submit:,} no-op function tasks (an argument each) in one job, no "
                  f"worker: Job.function {got['make']:.1f} s, payloads and graph "
                  f"{got['build']:.1f} s, submit (in parts) {got['submit']:.1f} s; client peak "
                  f"RSS +{got['client_mib']:.0f} MiB, server RSS "
                  f"+{got['server_bytes_per_task']:.0f} bytes a task.")


if __name__ == "__main__":
    main()
