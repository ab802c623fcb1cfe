"""Latency: N x `sleep 0.05` on 2 CPUs against a C posix_spawn loop (issue 9, item 5; target:
hqshm within 3% of the C loop's wall time).

    python bench/latency_bench.py [--tasks 200] [--sleep 0.05] [--cpus 2] [--repeat 3]

In each repetition, taking turns on the same machine:
- hqshm: a fresh server and one node (`hq worker start --cpus 2 --detect-resources=none`), then
  `hq submit --array 1-N --stdout none --stderr none --wait -- sleep 0.05`. Two figures: the wall
  time from just before submit to the end of `--wait` (the client's start-up included), and the
  span from the first task's start to the last task's end, from `hq task list --output-mode json`
  (started_at, finished_at), which leaves the client out.
- the C loop (spawn_loop.c): posix_spawnp + waitpid of `sleep 0.05`, 2 at a time.
- `xargs -P2` running `sleep 0.05` N times.
Best (least) of `--repeat` for each, all runs shown, and hqshm's ratios to the C loop. The ideal
is N x sleep / CPUs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from compare_hq import _wait, build_spawn_loop, run_c_loop, run_xargs
from live_server import hq_command, running_node, running_server, stop_on_signals

ROWS = {
    "wall": "hqshm, submit to end of `--wait`",
    "span": "hqshm, first task start to last task end",
    "c-loop": "C posix_spawn loop",
    "xargs": "`xargs -P{cpus}`",
}


def task_times(env: dict[str, str], job: str = "last") -> list[tuple[float, float]]:
    """(started_at, finished_at) of every task of a job, POSIX seconds, from the task list JSON."""
    out = subprocess.run([*hq_command(), "task", "list", job, "--output-mode", "json"], env=env,
                         check=True, capture_output=True, text=True).stdout
    times = []
    for tasks in json.loads(out).values():
        for task in tasks:
            if task["state"] != "finished":
                raise RuntimeError(f"task {task['id']} is {task['state']}")
            times.append((_seconds(task["started_at"]), _seconds(task["finished_at"])))
    return times


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_hqshm(tasks: int, sleep: str, cpus: int, root: Path) -> tuple[float, float]:
    """(submit to end of --wait, first start to last end) in seconds."""
    hq = hq_command()
    with (running_server(root / "server") as (env, _),
          running_node(env, [f"--cpus={cpus}", "--detect-resources=none",
                             f"--work-dir={root / 'node'}"]) as _node):
        _wait(lambda: b"RUNNING" in subprocess.run([*hq, "worker", "list"], env=env,
                                                   capture_output=True).stdout)
        time.sleep(0.5)  # the executors are started
        start = time.perf_counter()
        subprocess.run([*hq, "submit", f"--array=1-{tasks}", "--stdout=none", "--stderr=none",
                        "--wait", "--", "sleep", sleep], env=env, check=True,
                       capture_output=True, cwd=root)
        wall = time.perf_counter() - start
        times = task_times(env)
        if len(times) != tasks:
            raise RuntimeError(f"{len(times)} tasks in the list, {tasks} submitted")
        return wall, max(end for _, end in times) - min(begin for begin, _ in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--sleep", default="0.05", help="seconds each task sleeps")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stop_on_signals()
    runs: dict[str, list[float]] = {row: [] for row in ROWS}
    with tempfile.TemporaryDirectory(prefix="hqshm-latency-") as tmp:
        loop = build_spawn_loop(Path(tmp))
        for i in range(args.repeat):
            root = Path(tmp) / f"run{i}"
            root.mkdir()
            runs["c-loop"].append(run_c_loop(loop, args.tasks, args.cpus, ["sleep", args.sleep]))
            runs["xargs"].append(run_xargs(args.tasks, args.cpus, f"sleep {args.sleep}"))
            wall, span = run_hqshm(args.tasks, args.sleep, args.cpus, root)
            runs["wall"].append(wall)
            runs["span"].append(span)
    ideal = args.tasks * float(args.sleep) / args.cpus
    best = {row: min(values) for row, values in runs.items()}
    print(f"{args.tasks} x `sleep {args.sleep}`, {args.cpus} CPUs, best of {args.repeat} "
          f"(ideal {ideal:.2f} s):\n")
    print("| runtime | wall, s | over ideal | / C loop | runs, s |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row, label in ROWS.items():
        print(f"| {label.format(cpus=args.cpus)} | {best[row]:.3f} | "
              f"{best[row] / ideal - 1:+.1%} | {best[row] / best['c-loop']:.3f} | "
              f"{', '.join(f'{v:.3f}' for v in runs[row])} |")
    print(f"\n- hqshm / C loop: **{best['wall'] / best['c-loop'] - 1:+.1%}** submit to end of "
          f"wait, {best['span'] / best['c-loop'] - 1:+.1%} first start to last end "
          "(target: within +3%).")


if __name__ == "__main__":
    main()
