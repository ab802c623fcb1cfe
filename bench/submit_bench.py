"""What one command and one job cost (issue 9, item 2), measured side by side in one run.

    python bench/submit_bench.py [--jobs 5000] [--clients 8] [--seconds 10] [--rounds 20]

Against one live server with no workers (jobs are submitted and wait):

- the server alone: single-task jobs submitted over one client connection, one after another
  (target ≥ 2,000 jobs/s);
- `--clients` parallel loops of `hq submit -- true`, each its own process, as a workflow
  manager runs them (target ≥ 40 jobs/s on 2 cores);
- the median round trip of `hq submit`, `hq job list` and `hq job info` (target ≤ 40 ms), next
  to `python -c pass` and `python -c 'import zmq'`, the floors of any `hq` command; `hq job
  list` once before any job (the round trip alone) and once after the jobs above, when it
  prints a row for each of them (they all wait).

Figures go to bench/README.md; the machine's speed is in the floors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hqshm.cluster.resources import cpus_request
from live_server import hq_command, running_server

from hqshm.link import submitting
from hqshm.link.client import ClientConnection
from hqshm.model.submission import ArraySubmission, StdioDesc, TaskTemplate


def one_connection(server_dir: Path, jobs: int) -> float:
    """Jobs/s of single-task submits over one connection."""
    template = TaskTemplate(args=("true",), env={}, cwd="%{SUBMIT_DIR}",
                            stdout=StdioDesc("none"), stderr=StdioDesc("none"),
                            request=cpus_request())
    submission = ArraySubmission("bench", None, str(server_dir), template, ((0, 0, 1),))
    with ClientConnection(server_dir) as conn:
        start = time.perf_counter()
        for _ in range(jobs):
            submitting.submit(conn, submission)
        return jobs / (time.perf_counter() - start)


def parallel_clients(env: dict[str, str], cwd: Path, clients: int, seconds: float) -> float:
    """Jobs/s of ``clients`` loops of `hq submit -- true` for ``seconds``."""
    hq = hq_command()
    counts = [0] * clients
    deadline = time.perf_counter() + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < deadline:
            subprocess.run([*hq, "submit", "--", "true"], env=env, cwd=cwd, check=True,
                           capture_output=True)
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def median_ms(argv: list[str], env: dict[str, str], cwd: Path, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hqshm-submit-bench-"))
    hq = hq_command()
    with running_server(root / "server") as (env, _proc):
        os.environ["HQ_SERVER_DIR"] = env["HQ_SERVER_DIR"]
        # The round trip alone, before the jobs below make `hq job list` print thousands of
        # rows (every waiting job).
        empty_list = median_ms([*hq, "job", "list"], env, root, args.rounds)
        served = one_connection(root / "server", args.jobs)
        parallel = parallel_clients(env, root, args.clients, args.seconds)
        listed = len(json.loads(subprocess.run(
            [*hq, "--output-mode", "json", "job", "list"], env=env, cwd=root, check=True,
            capture_output=True).stdout))
        rows = [
            ("`hq job list`, no jobs yet", empty_list),
            ("`hq submit -- true`", median_ms([*hq, "submit", "--", "true"], env, root,
                                              args.rounds)),
            (f"`hq job list` ({listed:,} waiting jobs listed)",
             median_ms([*hq, "job", "list"], env, root, args.rounds)),
            ("`hq job info 1`", median_ms([*hq, "job", "info", "1"], env, root, args.rounds)),
            ("`python -c pass`", median_ms([sys.executable, "-c", "pass"], env, root,
                                           args.rounds)),
            ("`python -c 'import zmq'`", median_ms([sys.executable, "-c", "import zmq"], env,
                                                   root, args.rounds)),
        ]
    print(f"| what | figure | target |\n| --- | ---: | ---: |\n"
          f"| single-task jobs over one connection ({args.jobs:,}) | {served:,.0f} jobs/s "
          f"| ≥ 2,000 |\n"
          f"| {args.clients} parallel `hq submit` loops, {args.seconds:.0f} s | "
          f"{parallel:,.1f} jobs/s | ≥ 40 |")
    for what, ms in rows:
        target = "≤ 40 ms" if what.startswith("`hq") else ""
        print(f"| {what}, median of {args.rounds} | {ms:.0f} ms | {target} |")


if __name__ == "__main__":
    main()
