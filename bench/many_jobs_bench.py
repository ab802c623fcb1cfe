"""Many finished jobs kept by one server (issue 9, items 4 and 7), measured in one run.

    python bench/many_jobs_bench.py [--jobs 100000] [--rounds 11] [--rate 200] [--journal PATH]

One server and one 2-CPU worker; ``--jobs`` single-task jobs of `true` submitted over one
connection (all at once, or ``--rate`` jobs a second, so that few wait at a time) and run to
the end. Then:

- the server's RSS per finished job (before the submits and after the runs; target ≤ 1 KiB),
  and after `hq job forget all` (target: given back);
With ``--journal PATH`` the server keeps its journal there; when PATH exists already the server
restores those jobs instead (`hq job list` figures without the minutes of running them again;
the RSS figures then measure a restored server).

- `hq job list` (the default listing: no finished job is shown; target ≤ 60 ms) and `hq job
  list --all` (all of them), wall time and the command's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from live_server import hq_command, running_server
from submit_bench import one_connection

from hqshm.link.client import ClientConnection
from hqshm.link.requests import JobSummaryRequest
from hqshm.link.responses import JobSummaryResponse


def finished(server_dir: Path) -> dict[str, int]:
    with ClientConnection(server_dir) as conn:
        return dict(conn.request(JobSummaryRequest(), JobSummaryResponse).counts)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command, from GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *argv], env=env, cwd=cwd,
                         check=True, capture_output=True, text=True)
    wall, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss)


def submit(server_dir: Path, jobs: int, rate: float) -> None:
    """Submit all at once, or in chunks of 100 at ``rate`` jobs a second."""
    if rate <= 0:
        one_connection(server_dir, jobs)
        return
    start = time.perf_counter()
    for sent in range(0, jobs, 100):
        one_connection(server_dir, min(100, jobs - sent))
        time.sleep(max(0.0, start + (sent + 100) / rate - time.perf_counter()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="submit this many jobs a second (0: all at once); RSS then "
                             "measures the finished jobs kept, not the peak of waiting ones")
    parser.add_argument("--journal", type=Path,
                        help="the server's journal; an existing one is restored, not rerun")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hqshm-many-jobs-"))
    hq = hq_command()
    server_dir = root / "server"
    restore = args.journal is not None and args.journal.exists()
    server_args = ["--journal", str(args.journal)] if args.journal else []
    # A restore of 100,000 jobs takes its time (bench/README.md).
    with running_server(server_dir, server_args, timeout=600) as (env, proc):
        server = psutil.Process(proc.pid)
        # The server imports numpy once its loop has been idle 100 ms (cluster/firstuse.py):
        # the baseline is a server that has, or numpy's 10-16 MB would count as the jobs'.
        time.sleep(0.5)
        rss_empty = server.memory_info().rss
        worker = subprocess.Popen([*hq, "worker", "start", "--cpus", "2"], env=env, cwd=root,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            start = time.perf_counter()
            if not restore:
                submit(server_dir, args.jobs, args.rate)
            # One wait request: polling `hq job summary` would cost the server a pass over
            # every job each time.
            subprocess.run([*hq, "job", "wait", "all"], env=env, cwd=root, check=True,
                           capture_output=True)
            assert finished(server_dir).get("FINISHED", 0) == args.jobs, "--jobs: not as many"
            ran = time.perf_counter() - start
            rss_full = server.memory_info().rss
            lists = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                subprocess.run([*hq, "job", "list"], env=env, cwd=root, check=True,
                               capture_output=True)
                lists.append(time.perf_counter() - t0)
            all_wall, all_rss = timed([*hq, "job", "list", "--all"], env, root)
            json_wall, json_rss = timed([*hq, "--output-mode", "json", "job", "list", "--all"],
                                        env, root)
            rss_forgotten = None
            if args.journal is None:  # a journal kept for the next run keeps its jobs
                subprocess.run([*hq, "job", "forget", "all"], env=env, cwd=root, check=True,
                               capture_output=True)
                rss_forgotten = server.memory_info().rss
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait()
    n = args.jobs
    if restore:
        print(f"{n:,} finished single-task jobs restored from {args.journal}\n")
    else:
        print(f"{n:,} single-task jobs submitted and run in {ran:.1f} s "
              f"({n / ran:,.0f} jobs/s)\n")
    print("| what | figure | target |\n| --- | ---: | ---: |")
    print(f"| server RSS, no jobs | {rss_empty / 2**20:.1f} MiB | |")
    print(f"| server RSS per finished job | {(rss_full - rss_empty) / n:,.0f} B | ≤ 1,024 B |")
    if rss_forgotten is not None:
        print(f"| server RSS after `hq job forget all` | {rss_forgotten / 2**20:.1f} MiB "
              f"(was {rss_full / 2**20:.1f}) | given back |")
    print(f"| `hq job list`, median of {args.rounds} | "
          f"{statistics.median(lists) * 1000:.0f} ms | ≤ 60 ms |")
    print(f"| `hq job list --all` | {all_wall * 1000:.0f} ms, {all_rss / 1024:.0f} MiB peak | "
          "streamed |")
    print(f"| `hq --output-mode json job list --all` | {json_wall * 1000:.0f} ms, "
          f"{json_rss / 1024:.0f} MiB peak | streamed |")
    print(f"| `python -c pass` | {timed([sys.executable, '-c', 'pass'], env, root)[0] * 1000:.0f}"
          " ms | |")


if __name__ == "__main__":
    main()
