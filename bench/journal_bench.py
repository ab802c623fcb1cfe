"""What the journal costs and what it gives back (issue 8, item 2).

    python bench/journal_bench.py [--tasks 10000] [--repeat 3] [--big 1000000]

1. Throughput: `--tasks` `true` tasks through a fresh server and one node with 2 CPUs, without
   and with `--journal`, taking turns in each repetition (compare_hq.run_hqshm); the journal's
   cost is the ratio of the best rates.
2. A finished array job of `--big` tasks: its events (one submit, then starts and ends
   reported in batches of 1,000, as a node reports them) go through the server's own job book
   and journal writer, compacting in the background as the server does; then the file's size,
   and how long a real `hq server start --journal` takes to restore it and answer.
   The tasks are not run as processes: at this machine's ~1,200 tasks/s that would take
   fourteen minutes; what is measured is the journal of such a job.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_hq import run_hqshm
from hqshm.cluster.resources import ResourceDescriptor, cpus_request
from live_server import hq_command, running_server

from hqshm.model.submission import ArraySubmission, StdioDesc, TaskTemplate
from hqshm.model.workerconfig import WorkerConfiguration
from hqshm.server.events import EventStream
from hqshm.server.jobbook import JobBook
from hqshm.server.journal.records import ServerStarted
from hqshm.server.journal.snapshot import snapshot
from hqshm.server.journal.writer import Journal
from hqshm.server.workers import WorkerBook

BATCH = 1000


def throughput(tasks: int, repeat: int) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    journaled: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hqshm-journal-bench-") as tmp:
        for i in range(repeat):
            for rates, args in ((plain, ()), (journaled, ("--journal", f"{tmp}/j{i}"))):
                root = Path(tmp) / f"run{i}-{len(args)}"
                root.mkdir()
                elapsed, _cpu = run_hqshm(tasks, 2, root, args)
                rates.append(tasks / elapsed)
    return plain, journaled


def big_job_journal(path: Path, n: int) -> float:
    """Write the journal of a finished n-task array job; returns the seconds it took."""
    events = EventStream()
    book = JobBook("bench1", WorkerBook(events), events)
    journal = Journal(path, lambda: [ServerStarted("bench1", 0.0), *snapshot(book, 2)])
    events.subscribe(journal)
    journal.append(ServerStarted("bench1", time.time()))
    start = time.perf_counter()
    book.workers.joined(1, WorkerConfiguration("bench", "/tmp", 8.0, None, None, "stop",
                                               "default", 1, "", ResourceDescriptor(())),
                        time.time())
    template = TaskTemplate(("true",), {}, "%{SUBMIT_DIR}", StdioDesc("none"),
                            StdioDesc("none"), cpus_request())
    job, _ = book.submit(ArraySubmission("big", None, "/tmp", template, ((0, n - 1, 1),)),
                         time.time())
    key0 = job.id << 32
    for first in range(0, n, BATCH):
        now = time.time()
        keys = range(key0 + first, key0 + min(n, first + BATCH))
        book.tasks_started(1, [(k, 0, now, 0) for k in keys], now)
        book.tasks_finished(1, [(k, 0, now, now + 0.001, 0) for k in keys], now + 0.001)
        journal.flush()
        journal.maintain()
    while journal.compactor is not None:  # the last background compaction
        time.sleep(0.05)
        journal.maintain()
    journal.close()
    return time.perf_counter() - start


def restore_time(path: Path, root: Path) -> float:
    """Seconds from `hq server start --journal` to its first answer, with the job restored."""
    hq = hq_command()
    start = time.perf_counter()
    with running_server(root, ["--journal", str(path)]) as (env, _server):
        elapsed = time.perf_counter() - start
        listing = subprocess.run([*hq, "job", "list", "--all"], env=env, capture_output=True,
                                 text=True).stdout
        assert "FINISHED" in listing, listing
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args()
    plain, journaled = throughput(args.tasks, args.repeat)
    print(f"{args.tasks} `true` tasks, 2 CPUs, best of {args.repeat}:")
    print(f"- without --journal: {max(plain):,.0f} tasks/s ({', '.join(f'{r:,.0f}' for r in plain)})")
    print(f"- with --journal:    {max(journaled):,.0f} tasks/s "
          f"({', '.join(f'{r:,.0f}' for r in journaled)})")
    print(f"- journal cost: {1 - max(journaled) / max(plain):.1%} (target: at most 5%)")
    with tempfile.TemporaryDirectory(prefix="hqshm-journal-big-") as tmp:
        path = Path(tmp) / "journal"
        seconds = big_job_journal(path, args.big)
        size = path.stat().st_size
        restore = restore_time(path, Path(tmp) / "server")
    print(f"\nA finished array job of {args.big:,} tasks (events written in {seconds:.1f} s):")
    print(f"- journal: {size / 1e6:.1f} MB (target: at most 16 MB)")
    print(f"- `hq server start --journal` ready, job restored: {restore:.2f} s "
          "(target: at most 3 s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
