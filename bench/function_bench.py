"""No-op Python function tasks: hqshm's warm path next to ProcessPoolExecutor, in one run.

    python bench/function_bench.py [--tasks 10000] [--cpus 2] [--repeat 1] [--distinct-args]
                                   [--work-dir DIR] [--hq-tasks 100]

- hqshm: a fresh server and `hq worker start --cpus N`; a job of N function tasks calling a
  no-op, output discarded, submitted with the Python API and waited for; the time counts from
  the submit (payloads pickled, the graph sent) to the job's end. A warm-up job first lets the
  executors import what the tasks need, as a pool's workers do on their first task. The CPU
  time that the client (this process), server, node and executors spend meanwhile is reported
  per task. Every task gets the same argument, so that the job is one group (tasks with equal
  programs and stdin share one); `--distinct-args` gives each its own, as a real workflow
  does: then each task is a group of its own, which the server handles per group (use a few
  thousand tasks). `--work-dir` is the worker's, where each task's directory is made and
  removed (by default in the system's temporary directory).
- ProcessPoolExecutor(N): ``pool.map(noop, range(tasks), chunksize=1)`` on a pool whose workers
  have started (the design's reference: hqshm should reach 1.25x of it). The ratio is given of
  the best runs and of the medians (one slow or fast run of either moves the first).
- HQ 0.27.0 (``--hq-tasks``, 0 skips it): that many no-op function tasks through its
  ``LocalCluster`` (bench/hq_local_cluster.py, in the venv of its own that compare_hq.py makes),
  once: HQ starts an interpreter per function task, so a few hundred take tens of seconds
  (the target: hqshm at least 600x its rate).

Figures go to bench/README.md; read the ratio, since the machine is shared.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from compare_hq import cpu_snapshot, hq_python, run_hq
from live_server import hq_command, running_server

from hqshm.api.build import build_submission
from hqshm.api.client import Client
from hqshm.api.job import Job


def noop(_i: int) -> None:
    """The task: nothing, so that what is measured is the runtime."""


def function_job(tasks: int, distinct_args: bool) -> Job:
    job = Job(max_fails=None)
    for i in range(tasks):
        job.function(noop, args=(i if distinct_args else 0,), stdout=None, stderr=None)
    return job


def run_job(client: Client, job: Job) -> float:
    """Seconds from the submit to the job's end; every task must have finished."""
    start = time.perf_counter()
    job_id = client.connection.submit(build_submission(job, client.python_env, os.getcwd()))
    (summary,) = client.connection.wait_for_jobs([job_id], lambda _summaries: None)
    elapsed = time.perf_counter() - start
    assert not client.connection.get_failed_tasks(job_id), "function tasks failed"
    assert summary.task_count == len(job.tasks)
    return elapsed


def run_hqshm(tasks: int, cpus: int, root: Path, distinct_args: bool, work_dir: str | None
              ) -> tuple[float, dict[str, float]]:
    """Tasks/s, and CPU µs per task of the client, server, node and executors."""
    worker_args = [] if work_dir is None else [f"--work-dir={work_dir}"]
    with running_server(root / "server") as (env, server):
        node = subprocess.Popen([*hq_command(), "worker", "start", f"--cpus={cpus}",
                                 "--detect-resources=none", *worker_args], env=env, cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            client = Client(root / "server")
            run_job(client, function_job(4 * cpus, distinct_args))  # waits for the worker too
            job = function_job(tasks, distinct_args)
            before, client_before = cpu_snapshot(server.pid, node.pid), time.process_time()
            elapsed = run_job(client, job)
            after, client_after = cpu_snapshot(server.pid, node.pid), time.process_time()
            client.connection.close()
            cpu = {kind: (after[kind] - before[kind]) / tasks * 1e6
                   for kind in ("server", "node", "executors")}
            cpu["client"] = (client_after - client_before) / tasks * 1e6
            return tasks / elapsed, cpu
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGINT)
            node.wait(timeout=10)


def run_pool(tasks: int, cpus: int) -> float:
    with concurrent.futures.ProcessPoolExecutor(cpus) as pool:
        list(pool.map(noop, range(4 * cpus), chunksize=1))  # the workers are up
        start = time.perf_counter()
        list(pool.map(noop, range(tasks), chunksize=1))
        return tasks / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--distinct-args", action="store_true",
                        help="an argument per task (a group per task)")
    parser.add_argument("--work-dir", help="the worker's --work-dir")
    parser.add_argument("--hq-tasks", type=int, default=100,
                        help="no-op function tasks through HQ 0.27.0 (0: skip HQ)")
    args = parser.parse_args()
    hqshm_rates, pool_rates, cpus = [], [], []
    with tempfile.TemporaryDirectory(prefix="hqshm-function-bench-") as tmp:
        for i in range(args.repeat):
            root = Path(tmp) / f"run{i}"
            root.mkdir()
            pool_rates.append(run_pool(args.tasks, args.cpus))
            rate, cpu = run_hqshm(args.tasks, args.cpus, root, args.distinct_args, args.work_dir)
            hqshm_rates.append(rate)
            cpus.append(cpu)
    hq_rate = (args.hq_tasks / run_hq(hq_python(), args.hq_tasks, args.cpus, "function")
               if args.hq_tasks > 0 else None)
    best_hqshm, best_pool = max(hqshm_rates), max(pool_rates)
    median_hqshm, median_pool = statistics.median(hqshm_rates), statistics.median(pool_rates)
    shape = "an argument each" if args.distinct_args else "one argument for all"
    print(f"{args.tasks:,} no-op function tasks ({shape}), {args.cpus} CPUs, "
          f"best of {args.repeat}:\n")
    print("| runtime | tasks/s | runs |\n| --- | ---: | --- |")
    print(f"| hqshm (warm executors) | {best_hqshm:,.0f} | "
          f"{', '.join(f'{r:,.0f}' for r in hqshm_rates)} |")
    print(f"| ProcessPoolExecutor({args.cpus}), chunksize 1 | {best_pool:,.0f} | "
          f"{', '.join(f'{r:,.0f}' for r in pool_rates)} |")
    if hq_rate is not None:
        print(f"| HQ 0.27.0 (`LocalCluster`), {args.hq_tasks} tasks | {hq_rate:,.1f} | |")
    print(f"\nhqshm / ProcessPoolExecutor = **{best_hqshm / best_pool:.2f}x** of the best runs, "
          f"**{median_hqshm / median_pool:.2f}x** of the medians (target: 1.25x)")
    if hq_rate is not None:
        print(f"hqshm / HQ 0.27.0 = **{best_hqshm / hq_rate:,.0f}x** (target: 600x)")
    least = {kind: min(cpu[kind] for cpu in cpus) for kind in cpus[0]}
    print(f"\nCPU per task (least of the runs): client {least['client']:.0f} us, server "
          f"{least['server']:.0f} us, node {least['node']:.0f} us, executors "
          f"{least['executors']:.0f} us.")


if __name__ == "__main__":
    main()
