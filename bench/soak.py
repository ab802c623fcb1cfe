"""Soak: many short tasks while the server and nodes are killed with SIGKILL at random moments.

    python bench/soak.py [--tasks 100000] [--nodes 3] [--kill-every 4-10] [--seed 1]

A journaled server and `--nodes` nodes (each `--cpus 1 --on-server-lost reconnect`) run one
array job of `--tasks` tasks; each task appends "task instance" to one file when it ends.
Every few seconds (a random pause in the range) the script kills, with SIGKILL, either the
server (restarted at once on its journal) or a node (started again at once). At the end it
prints how many tasks were submitted, finished, run twice (a task's line written by two
instances) and lost (no line), and the longest time no task finished after a kill. It is
not part of the test suite; its figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from live_server import hq_command


class Cluster:
    def __init__(self, root: Path, nodes: int) -> None:
        self.root = root
        self.hq = hq_command()
        self.env = dict(os.environ, HQ_SERVER_DIR=str(root / "server"))
        self.journal = root / "journal"
        self.server: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen | None] = [None] * nodes

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        return subprocess.Popen([*self.hq, *args], env=self.env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def start_server(self) -> None:
        self.server = self._spawn("server", ["server", "start", "--journal", str(self.journal)])
        deadline = time.monotonic() + 30
        while self.hq_ok(["server", "info"]) is False:
            if time.monotonic() > deadline:
                sys.exit("the server did not start; see server.log")
            time.sleep(0.05)

    def start_node(self, index: int) -> None:
        self.nodes[index] = self._spawn(f"node{index}", [
            "worker", "start", "--cpus=1", "--detect-resources=none",
            "--on-server-lost=reconnect", f"--work-dir={self.root / f'work{index}'}"])

    def hq_ok(self, args: list[str]) -> bool:
        return subprocess.run([*self.hq, *args], env=self.env, capture_output=True,
                              timeout=60).returncode == 0

    def kill(self, proc: subprocess.Popen | None) -> None:
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def revive_nodes(self) -> None:
        """Nodes that exited on their own (a server gone too long) are started again."""
        for i, proc in enumerate(self.nodes):
            if proc is None or proc.poll() is not None:
                self.start_node(i)

    def stop(self) -> None:
        for proc in [self.server, *self.nodes]:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def finished_lines(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            lines.append((int(parts[0]), int(parts[1])))
    return lines


def job_done(cluster: Cluster) -> bool:
    out = subprocess.run([*cluster.hq, "--output-mode=json", "job", "list", "--all"],
                         env=cluster.env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return False  # the server is restarting
    (job,) = json.loads(out.stdout)
    stats = job["task_stats"]
    return stats["waiting"] + stats["running"] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--kill-every", default="4-10", help="seconds between kills, A-B")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    low, high = (float(x) for x in args.kill_every.split("-"))
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="hqshm-soak-"))
    done = root / "done"
    cluster = Cluster(root, args.nodes)
    kills: list[tuple[str, float, int]] = []  # what, when, size of the done file then
    samples: list[tuple[float, int]] = []  # (when, size of the done file)
    try:
        cluster.start_server()
        for i in range(args.nodes):
            cluster.start_node(i)
        script = f'echo "$HQ_TASK_ID $HQ_INSTANCE_ID" >> {done}'
        submitted = subprocess.run(
            [*cluster.hq, "submit", f"--array=0-{args.tasks - 1}", "--stdout=none",
             "--stderr=none", "--", "sh", "-c", script],
            env=cluster.env, capture_output=True, text=True, cwd=root, timeout=120)
        if submitted.returncode != 0:
            sys.exit(f"submit failed: {submitted.stdout}{submitted.stderr}")
        start = time.monotonic()
        next_kill = start + rng.uniform(low, high)
        next_check = start + 2.0
        while True:
            now = time.monotonic()
            size = done.stat().st_size if done.exists() else 0
            samples.append((now, size))
            if now >= next_check:
                if job_done(cluster):
                    break
                next_check = time.monotonic() + 2.0
            if now >= next_kill:
                victim = rng.randrange(args.nodes + 1)
                lines = size
                if victim == args.nodes:
                    cluster.kill(cluster.server)
                    kills.append(("server", now, lines))
                    cluster.start_server()
                else:
                    cluster.kill(cluster.nodes[victim])
                    kills.append((f"node{victim}", now, lines))
                    cluster.start_node(victim)
                next_kill = time.monotonic() + rng.uniform(low, high)
                print(f"{now - start:7.1f} s  killed {kills[-1][0]}", flush=True)
            cluster.revive_nodes()
            time.sleep(0.2)
        elapsed = time.monotonic() - start
    finally:
        cluster.stop()
    lines = finished_lines(done)
    by_task = collections.Counter(task for task, _instance in lines)
    twice = sum(1 for count in by_task.values() if count > 1)
    lost = args.tasks - len(by_task)
    print(f"\n{args.tasks:,} tasks over {args.nodes} nodes in {elapsed:.0f} s, "
          f"{len(kills)} kills ({sum(k[0] == 'server' for k in kills)} of the server)")
    print(f"- submitted {args.tasks:,}, finished {len(by_task):,}, run twice {twice}, "
          f"lost {lost}")
    print(f"- longest time without a finished task after a kill: "
          f"{longest_stall(kills, samples):.1f} s")
    if args.keep:
        print(f"- files in {root}")


def longest_stall(kills: list[tuple[str, float, int]],
                  samples: list[tuple[float, int]]) -> float:
    """The longest wait, over all kills, from a kill until a task finished again (the done
    file grew), from samples taken every 0.2 s: what a failure cost the waiting tasks."""
    worst = 0.0
    for _what, when, size in kills:
        resumed = next((t for t, s in samples if t > when and s > size), None)
        if resumed is not None:
            worst = max(worst, resumed - when)
    return worst


if __name__ == "__main__":
    main()
