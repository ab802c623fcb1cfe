"""Side-by-side throughput: N `true` tasks through hqshm, through HQ 0.27.0, and raw spawning.

All three run in one invocation on the same machine, so their ratios are comparable even on a
shared, noisy host. Usage:

    python bench/compare_hq.py --tasks 5000 --cpus 2 [--repeat 3] [--skip-hq]

- hqshm: a fresh server and one node with `--cpus`, then `hq submit --array 1-N --stdout none
  --stderr none --wait -- true`; the time counts from just before submit to the end of the wait.
- HQ: `hyperqueue.LocalCluster` (HQ's own Rust server and worker from the `hyperqueue==0.27.0`
  wheel), one worker with the same cores, a job of N `true` programs, submit to the end of
  `wait_for_jobs` (which polls about once a second, so HQ's figure is rounded up a little).
- raw: `xargs -P<cpus>` running `true` N times: the machine's spawn ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from live_server import hq_command, running_server


def run_hqshm(tasks: int, cpus: int, root: Path) -> float:
    hq = hq_command()
    with running_server(root / "server") as (env, _server):
        worker = subprocess.Popen([*hq, "worker", "start", f"--cpus={cpus}",
                                   "--detect-resources=none"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            _wait(lambda: b"RUNNING" in subprocess.run([*hq, "worker", "list"], env=env,
                                                       capture_output=True).stdout)
            start = time.perf_counter()
            subprocess.run([*hq, "submit", f"--array=1-{tasks}", "--stdout=none",
                            "--stderr=none", "--wait", "--", "true"], env=env, check=True,
                           capture_output=True, cwd=root)
            elapsed = time.perf_counter() - start
            info = subprocess.run([*hq, "job", "list", "--all"], env=env, capture_output=True,
                                  text=True).stdout
            assert "FINISHED" in info, info
            return elapsed
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)


def run_hq(tasks: int, cpus: int) -> float:
    from hyperqueue import Job, LocalCluster
    from hyperqueue.cluster import WorkerConfig

    with LocalCluster() as cluster:
        cluster.start_worker(WorkerConfig(cores=cpus))
        client = cluster.client()
        job = Job()
        for _ in range(tasks):
            job.program(["true"], stdout=None, stderr=None)
        start = time.perf_counter()
        submitted = client.submit(job)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            client.wait_for_jobs([submitted])
        return time.perf_counter() - start


def run_raw(tasks: int, cpus: int) -> float:
    start = time.perf_counter()
    subprocess.run(f"seq {tasks} | xargs -P{cpus} -I{{}} true", shell=True, check=True)
    return time.perf_counter() - start


def _wait(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("service did not start")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-hq", action="store_true", help="do not run HQ 0.27.0")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"hqshm": [], "hq": [], "raw": []}
    for _ in range(args.repeat):
        root = Path(tempfile.mkdtemp(prefix="hqshm-bench-"))
        try:
            rows["raw"].append(args.tasks / run_raw(args.tasks, args.cpus))
            rows["hqshm"].append(args.tasks / run_hqshm(args.tasks, args.cpus, root))
            if not args.skip_hq:
                rows["hq"].append(args.tasks / run_hq(args.tasks, args.cpus))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{args.tasks} `true` tasks, {args.cpus} CPUs, best of {args.repeat} (tasks/s):")
    best = {name: max(values) for name, values in rows.items() if values}
    for name, value in best.items():
        print(f"  {name:6s} {value:8.0f}   runs: {', '.join(f'{v:.0f}' for v in rows[name])}")
    if "hq" in best:
        print(f"  hqshm / HQ 0.27.0      = {best['hqshm'] / best['hq']:.2f}x")
    print(f"  hqshm / raw spawn rate = {best['hqshm'] / best['raw']:.0%}")


if __name__ == "__main__":
    main()
