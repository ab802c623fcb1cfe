"""Scale out: many one-CPU nodes on one server (issue 9, item 6; targets: every node busy at
least 95% of the time, server CPU at most 20 us per task).

    python bench/scale_bench.py [--nodes 100] [--tasks 100000] [--sleep 0.1] [--batch 10]
                                [--detect]

One server, then `--nodes` separate `hq worker start --cpus 1 --detect-resources=none` processes
(`--detect`: with the default detection, memory included) on this machine, started `--batch` at a time: each batch is started, then the script waits until
the server lists all the nodes started so far (`hq worker list --output-mode json`) before the
next batch, so that two cores are not flooded by a hundred interpreters starting at once. The
registration time runs from the first node's start to the moment the last one is seen in the
list (polled every 0.25 s, each poll an `hq` command), and, from the server's own clock, to the
latest `started` in that list. Before each batch the script checks that MemAvailable stays above
`--min-free-mb`; it reports the nodes' memory (with their executors) once all are up.

Then `hq submit --array 1-N --stdout none --stderr none --wait -- sleep 0.1`, and:
- wall time, from just before submit to the end of `--wait`, against the ideal N x sleep / nodes;
- busy share: the sum of the tasks' run times (finished_at - started_at in `hq task list
  --output-mode json`) over nodes x wall, and over nodes x span (first start to last end, which
  leaves the client and the first assignment out); a task's run time as the runtime stamps it
  includes its spawn and reporting, so the mean run time is shown against the sleep;
- the server's CPU per task (user + system from /proc/PID/stat over the submit), and the nodes'
  with their executors, for context; and the server's CPU at rest with all the nodes up (over
  `--rest` seconds before submit: heartbeats and polling, which a slow run also pays per task);
- tasks per node (fewest, most) and the nodes that died or logged errors.

Every node runs in a process group of its own and all are stopped (SIGINT, then SIGKILL after
10 s) when the script ends, on errors, Ctrl-C and SIGTERM too. Node logs are kept with `--logs
DIR` (else in a temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from compare_hq import children, cpu_seconds
from live_server import hq_command, running_server, start_node, stop_nodes, stop_on_signals
from memory_bench import memory


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def workers(env: dict[str, str]) -> list[dict]:
    """The nodes the server lists as running."""
    result = subprocess.run([*hq_command(), "worker", "list", "--output-mode", "json"], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        return []
    return [w for w in json.loads(result.stdout) if w.get("ended") is None]


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1024


def start_nodes(env: dict[str, str], count: int, batch: int, logs: Path, min_free_mb: float,
                nodes: list[subprocess.Popen], detect: bool = False) -> tuple[float, float]:
    """Start `count` nodes into `nodes` (filled as they start, so that the caller can stop them
    whatever happens), `batch` at a time; seconds from the first start to the last node seen in
    the list, and to the latest registration by the server's clock."""
    first = time.time()
    seen: list[dict] = []
    while len(nodes) < count:
        if available_mb() < min_free_mb:
            raise RuntimeError(f"MemAvailable {available_mb():.0f} MB < {min_free_mb:.0f} MB "
                               f"with {len(nodes)} nodes up: stopping")
        for _ in range(min(batch, count - len(nodes))):
            i = len(nodes) + 1
            options = [] if detect else ["--detect-resources=none"]
            nodes.append(start_node(env, ["--cpus=1", *options,
                                          f"--work-dir={logs / f'node{i}'}"],
                                    logs / f"node{i}.log"))
        deadline = time.monotonic() + 60 + 2 * len(nodes)
        while len(seen := workers(env)) < len(nodes):
            dead = [n.pid for n in nodes if n.poll() is not None]
            if dead:
                raise RuntimeError(f"nodes exited before registering: pids {dead}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(seen)} of {len(nodes)} nodes registered")
            time.sleep(0.25)
    last_seen = time.time() - first
    return last_seen, max(_seconds(w["started"]) for w in seen) - first


def group_memory(nodes: list[subprocess.Popen]) -> tuple[int, int]:
    """(RSS, PSS) of the nodes and their executors together."""
    total = [0, 0]
    for node in nodes:
        for pid in [node.pid, *_children(node.pid)]:
            if (found := memory(pid)) is not None:
                total[0] += found[0]
                total[1] += found[1]
    return total[0], total[1]


def _children(pid: int) -> list[int]:
    try:
        return children(pid)
    except OSError:
        return []


def nodes_cpu(nodes: list[subprocess.Popen]) -> float:
    """CPU seconds of the nodes and their executors (not the tasks they reaped)."""
    total = 0.0
    for node in nodes:
        for pid in [node.pid, *_children(node.pid)]:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)[0]
    return total


def log_errors(logs: Path) -> list[str]:
    found = []
    for log in sorted(logs.glob("node*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(word in line for word in ("ERROR", "Traceback", "WARN")):
                found.append(f"{log.name}: {line.strip()}")
    return found


def run(args: argparse.Namespace, root: Path, logs: Path) -> list[str]:
    hq = hq_command()
    nodes: list[subprocess.Popen] = []
    with running_server(root / "server") as (env, server):
        try:
            registered, by_server = start_nodes(env, args.nodes, args.batch, logs,
                                                args.min_free_mb, nodes, args.detect)
            rss, pss = group_memory(nodes)
            time.sleep(1)  # the last executors are started
            rest_before = cpu_seconds(server.pid)[0]
            time.sleep(args.rest)
            server_rest = (cpu_seconds(server.pid)[0] - rest_before) / args.rest
            server_before, nodes_before = cpu_seconds(server.pid)[0], nodes_cpu(nodes)
            ideal = args.tasks * float(args.sleep) / args.nodes
            start = time.perf_counter()
            subprocess.run([*hq, "submit", f"--array=1-{args.tasks}", "--stdout=none",
                            "--stderr=none", "--wait", "--", "sleep", args.sleep], env=env,
                           check=True, capture_output=True, cwd=root,
                           timeout=max(300, 20 * ideal))
            wall = time.perf_counter() - start
            server_cpu = cpu_seconds(server.pid)[0] - server_before
            node_cpu = nodes_cpu(nodes) - nodes_before
            out = subprocess.run([*hq, "task", "list", "last", "--output-mode", "json"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            tasks = [t for job in json.loads(out).values() for t in job]
            dead = [i for i, n in enumerate(nodes, 1) if n.poll() is not None]
        finally:
            stop_nodes(nodes)
    if len(tasks) != args.tasks or any(t["state"] != "finished" for t in tasks):
        raise RuntimeError(f"{len(tasks)} tasks listed, "
                           f"{sum(t['state'] == 'finished' for t in tasks)} finished")
    times = [(_seconds(t["started_at"]), _seconds(t["finished_at"])) for t in tasks]
    busy = sum(end - begin for begin, end in times)
    span = max(end for _, end in times) - min(begin for begin, _ in times)
    per_node: dict[int, int] = {}
    for task in tasks:
        per_node[task["worker"]] = per_node.get(task["worker"], 0) + 1
    idle_nodes = args.nodes - len(per_node)
    lines = [
        f"{args.tasks:,} x `sleep {args.sleep}` on {args.nodes} nodes of 1 CPU (separate "
        f"`hq worker start` processes on this machine, started {args.batch} at a time):", "",
        "| what | value |", "| --- | ---: |",
        f"| nodes registered, first start to last seen in `hq worker list` | {registered:.2f} s |",
        f"| the same by the server's clock (latest `started`) | {by_server:.2f} s |",
        f"| nodes and their executors, memory once all up | RSS {rss / 1e6:,.0f} MB, "
        f"PSS {pss / 1e6:,.0f} MB |",
        f"| wall, submit to end of `--wait` | {wall:.2f} s |",
        f"| ideal, tasks x sleep / nodes | {ideal:.2f} s |",
        f"| wall / ideal | {wall / ideal:.2f} |",
        f"| first task start to last task end | {span:.2f} s |",
        f"| busy share, run time / (nodes x wall) | **{busy / (args.nodes * wall):.1%}** |",
        f"| busy share, run time / (nodes x span) | {busy / (args.nodes * span):.1%} |",
        f"| mean task run time (finished_at - started_at) | {busy / len(times) * 1e3:.1f} ms |",
        f"| server CPU per task | **{server_cpu / args.tasks * 1e6:,.0f} us** |",
        f"| server CPU at rest with the nodes up, before submit ({args.rest:g} s) | "
        f"{server_rest:.1%} of a core |",
        f"| nodes' and executors' CPU per task (all together) | "
        f"{node_cpu / args.tasks * 1e6:,.0f} us |",
        f"| tasks per node, fewest / most | {min(per_node.values()) if not idle_nodes else 0} / "
        f"{max(per_node.values())} |",
        f"| nodes that ran no task | {idle_nodes} |",
        f"| nodes that died during the run | {len(dead)} |",
        "",
        "Targets: busy share at least 95%, server CPU at most 20 us per task.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--sleep", default="0.1", help="seconds each task sleeps")
    parser.add_argument("--batch", type=int, default=10, help="nodes started at a time")
    parser.add_argument("--min-free-mb", type=float, default=2000,
                        help="stop starting nodes when MemAvailable falls below (default 2000)")
    parser.add_argument("--rest", type=float, default=2.0,
                        help="seconds the server's CPU is measured at rest before submit")
    parser.add_argument("--logs", type=Path, help="keep the node logs and work dirs here")
    parser.add_argument("--detect", action="store_true",
                        help="nodes detect their resources as `hq worker start` does by default "
                             "(memory too, which no task here asks for)")
    args = parser.parse_args()
    stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="hqshm-scale-") as tmp:
        logs = args.logs or Path(tmp) / "nodes"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            lines = run(args, Path(tmp), logs)
        finally:
            errors = log_errors(logs)
            if errors:
                print(f"node logs: {len(errors)} error/warning lines; the first ones:",
                      *errors[:5], sep="\n", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
