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

Where hqshm's span goes, from the same task list: the tasks are laid back onto the CPUs (each
next one on the CPU that freed last before it started), which gives the gap between one task's
end and the next one's start on a CPU (median, p90, mean: the mean times the rounds is what the
gaps add to the span), and each task's own time from its start as reported (its executor
taking it; for a task dispatched one at a time, the node sending it) to its reaping (median), against the C loop's time a round (its wall time over N / CPUs). Which CPU ran a
task is guessed, so the gaps' median and p90 lean low; their mean hardly depends on the guess
(the gaps sum to the lanes' spans less the tasks' times). And what the wall time adds to the
span: submit to the first start, the last end to the end of the wait.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
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


@dataclass
class Lanes:
    """Where a run's span went: the tasks' own times and the gaps between them on a CPU."""

    gaps: list[float]  # next start - previous end on one CPU, seconds
    runs: list[float]  # each task's end - start, seconds
    lead: float = 0.0  # from just before submit to the first task's start
    tail: float = 0.0  # from the last task's end to the end of `--wait`

    @staticmethod
    def of(times: list[tuple[float, float]], cpus: int) -> Lanes:
        """Each task, by start, goes on the CPU that freed last at or before its start (the one
        its executor just left); one that overlaps every CPU (clock skew) takes the earliest."""
        ends: list[float] = []
        gaps = []
        for begin, end in sorted(times):
            free = [i for i, e in enumerate(ends) if e <= begin]
            if len(ends) < cpus and not free:
                ends.append(end)
                continue
            lane = max(free, key=ends.__getitem__) if free else ends.index(min(ends))
            gaps.append(begin - ends[lane])
            ends[lane] = end
        return Lanes(gaps, [end - begin for begin, end in times])

    def around(self, times: list[tuple[float, float]], submitted: float, waited: float
               ) -> Lanes:
        """With what the wall time adds to the span: before the first start, after the last
        end (POSIX seconds of the submit's start and of the wait's end)."""
        self.lead = min(begin for begin, _ in times) - submitted
        self.tail = waited - max(end for _, end in times)
        return self

    def summary(self) -> str:
        """One line: the gaps' median, p90 and mean and the tasks' median time, in ms."""
        gaps = sorted(self.gaps)
        p90 = gaps[int(0.9 * (len(gaps) - 1))]
        return (f"gap median {statistics.median(gaps) * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms, "
                f"mean {statistics.fmean(gaps) * 1e3:.2f} ms; task (taken to reaped) median "
                f"{statistics.median(self.runs) * 1e3:.2f} ms; submit to first start "
                f"{self.lead:.3f} s, last end to the end of the wait {self.tail:.3f} s")


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_hqshm(tasks: int, sleep: str, cpus: int, root: Path) -> tuple[float, float, Lanes]:
    """(submit to end of --wait, first start to last end) in seconds, and the run's lanes."""
    hq = hq_command()
    with (running_server(root / "server") as (env, _),
          running_node(env, [f"--cpus={cpus}", "--detect-resources=none",
                             f"--work-dir={root / 'node'}"]) as _node):
        _wait(lambda: b"RUNNING" in subprocess.run([*hq, "worker", "list"], env=env,
                                                   capture_output=True).stdout)
        time.sleep(0.5)  # the executors are started
        submitted = time.time()
        start = time.perf_counter()
        subprocess.run([*hq, "submit", f"--array=1-{tasks}", "--stdout=none", "--stderr=none",
                        "--wait", "--", "sleep", sleep], env=env, check=True,
                       capture_output=True, cwd=root)
        wall = time.perf_counter() - start
        waited = time.time()
        times = task_times(env)
        if len(times) != tasks:
            raise RuntimeError(f"{len(times)} tasks in the list, {tasks} submitted")
        span = max(end for _, end in times) - min(begin for begin, _ in times)
        return wall, span, Lanes.of(times, cpus).around(times, submitted, waited)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--sleep", default="0.05", help="seconds each task sleeps")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stop_on_signals()
    runs: dict[str, list[float]] = {row: [] for row in ROWS}
    lanes: list[Lanes] = []
    with tempfile.TemporaryDirectory(prefix="hqshm-latency-") as tmp:
        loop = build_spawn_loop(Path(tmp))
        for i in range(args.repeat):
            root = Path(tmp) / f"run{i}"
            root.mkdir()
            runs["c-loop"].append(run_c_loop(loop, args.tasks, args.cpus, ["sleep", args.sleep]))
            runs["xargs"].append(run_xargs(args.tasks, args.cpus, f"sleep {args.sleep}"))
            wall, span, lane = run_hqshm(args.tasks, args.sleep, args.cpus, root)
            lanes.append(lane)
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
    rounds = args.tasks / args.cpus
    print(f"- C loop: {best['c-loop'] / rounds * 1e3:.2f} ms a round (best run); hqshm, "
          "where the span went, by run:")
    for i, lane in enumerate(lanes):
        print(f"  - run {i + 1} (span {runs['span'][i]:.3f} s): {lane.summary()}")


if __name__ == "__main__":
    main()
