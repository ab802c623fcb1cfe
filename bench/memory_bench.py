"""The runtime's peak memory while N `true` tasks run (issue 9, item 4; target: at most 100 MB).

    python bench/memory_bench.py [--tasks 10000] [--cpus 2] [--interval 0.025] [--no-references]

A fresh server and one node (`hq worker start --cpus 2 --detect-resources=none`), then `hq submit
--array 1-N --stdout none --stderr none --wait -- true`. A thread samples every `--interval`
seconds, from just before submit to the end of the wait, the memory of the server, the node and
each of the node's executors (its children that run the node's own program, not the tasks):
RSS (VmRSS in /proc/PID/status), PSS (Pss in /proc/PID/smaps_rollup, which shares each page
among the processes that map it, so the sum does not count the pages the executors share with
the node, or with each other, more than once) and USS (the private pages only, Private_Clean +
Private_Dirty there). PSS also splits the pages of files that unrelated processes map (the
Python interpreter and libraries of other Python programs on the machine), so it reads a little
lower on a busy machine; USS is the floor, what stopping the process would give back. Reported: the peak of the sum over the runtime's
processes (what the target is about), the peak of each process, and the same at rest before the
submit. The `hq submit --wait` client is shown apart: it is not the runtime.

For context, the C posix_spawn loop and `xargs -P<cpus>` running the same N `true` tasks, sampled
the same way (without `--no-references`).

Reading smaps_rollup walks the page tables of the process, about a millisecond for one of tens
of MB, so the sampler takes a few percent of a core at 25 ms: the memory figures are not
disturbed by it, the run's time is (it is not reported here; compare_hq.py has it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compare_hq import _wait, build_spawn_loop, children
from live_server import hq_command, running_node, running_server, stop_on_signals

MB = 1e6


def memory(pid: int) -> tuple[int, int, int] | None:
    """(RSS, PSS, USS) of a process in bytes, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/smaps_rollup") as f:
            rollup = {line.split(":")[0]: int(line.split()[1]) for line in f
                      if line.endswith("kB\n")}
        pss, uss = rollup["Pss"], rollup["Private_Clean"] + rollup["Private_Dirty"]
    except (OSError, StopIteration, KeyError):
        return None
    return rss * 1024, pss * 1024, uss * 1024


def executors(node: int) -> list[int]:
    """The node's children that run its own program (its executors), not the tasks."""
    try:
        exe = os.readlink(f"/proc/{node}/exe")
        found = []
        for pid in children(node):
            try:
                if os.readlink(f"/proc/{pid}/exe") == exe:
                    found.append(pid)
            except OSError:
                pass
        return found
    except OSError:
        return []


@dataclass
class Peaks:
    """Peaks over the samples of RSS, PSS and USS: of each process (by label) and of the sums
    over the runtime's processes."""

    each: dict[str, list[int]] = field(default_factory=dict)
    total: list[int] = field(default_factory=lambda: [0, 0, 0])
    samples: int = 0

    def add(self, sample: dict[str, tuple[int, int, int]], runtime: Callable[[str], bool]
            ) -> None:
        for label, values in sample.items():
            peak = self.each.setdefault(label, [0, 0, 0])
            peak[:] = map(max, peak, values)
        inside = [v for label, v in sample.items() if runtime(label)]
        self.total[:] = (max(t, sum(v[i] for v in inside)) for i, t in enumerate(self.total))
        self.samples += 1


class Sampler(threading.Thread):
    """Calls `processes()` (label -> pid) every `interval` s and keeps the peaks until stopped."""

    def __init__(self, processes: Callable[[], dict[str, int]], interval: float,
                 runtime: Callable[[str], bool] = lambda label: True) -> None:
        super().__init__(daemon=True)
        self.processes, self.interval, self.runtime = processes, interval, runtime
        self.peaks = Peaks()
        self.halt = threading.Event()

    def sample(self) -> None:
        found = {label: memory(pid) for label, pid in self.processes().items()}
        self.peaks.add({k: v for k, v in found.items() if v is not None}, self.runtime)

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)
        self.sample()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join()


def run_hqshm(tasks: int, cpus: int, root: Path, interval: float) -> tuple[Peaks, Peaks, float]:
    """Peaks at rest (before submit) and during the run, and the run's seconds."""
    hq = hq_command()
    with (running_server(root / "server") as (env, server),
          running_node(env, [f"--cpus={cpus}", "--detect-resources=none",
                             f"--work-dir={root / 'node'}"], root / "node.log") as node):
        _wait(lambda: b"RUNNING" in subprocess.run([*hq, "worker", "list"], env=env,
                                                   capture_output=True).stdout)
        time.sleep(0.5)  # the executors are started and settled
        client: list[int] = []

        def processes() -> dict[str, int]:
            found = {"server": server.pid, "node": node.pid}
            for i, pid in enumerate(sorted(executors(node.pid)), 1):
                found[f"executor {i}"] = pid
            if client:
                found["client"] = client[0]
            return found

        def runtime(label: str) -> bool:
            return label != "client"

        rest = Sampler(processes, interval, runtime)
        rest.sample()
        with Sampler(processes, interval, runtime) as sampler:
            start = time.perf_counter()
            submit = subprocess.Popen([*hq, "submit", f"--array=1-{tasks}", "--stdout=none",
                                       "--stderr=none", "--wait", "--", "true"], env=env,
                                      cwd=root, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            client.append(submit.pid)
            if submit.wait() != 0:
                raise RuntimeError(f"hq submit --wait exited with {submit.returncode}")
            elapsed = time.perf_counter() - start
        return rest.peaks, sampler.peaks, elapsed


def run_reference(command: list[str], interval: float, stdin: bytes | None = None) -> Peaks:
    """Peak memory of one reference process (the C loop, or xargs) while it runs."""
    proc = subprocess.Popen(command, stdin=subprocess.PIPE if stdin else None,
                            stdout=subprocess.DEVNULL)
    try:
        with Sampler(lambda: {"process": proc.pid}, interval) as sampler:
            if stdin:
                proc.communicate(stdin)
            if proc.wait() != 0:
                raise RuntimeError(f"{command[0]} exited with {proc.returncode}")
        return sampler.peaks
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def mb(value: int) -> str:
    return f"{value / MB:,.1f}"


def report(tasks: int, cpus: int, rest: Peaks, run: Peaks, elapsed: float,
           references: dict[str, Peaks]) -> list[str]:
    lines = [f"{tasks:,} `true` tasks, one server and one node with {cpus} CPUs, "
             f"{run.samples} samples in {elapsed:.1f} s (MB, 10^6 bytes):", "",
             "| process | peak RSS | peak PSS | peak USS | at rest RSS | at rest PSS |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    labels = [k for k in run.each if k != "client"]
    for label in labels:
        peak, idle = run.each[label], rest.each.get(label, [0, 0, 0])
        lines.append(f"| {label} | {mb(peak[0])} | {mb(peak[1])} | {mb(peak[2])} | "
                     f"{mb(idle[0])} | {mb(idle[1])} |")
    lines.append(f"| **runtime (peak of the sum)** | **{mb(run.total[0])}** | "
                 f"**{mb(run.total[1])}** | **{mb(run.total[2])}** | {mb(rest.total[0])} | "
                 f"{mb(rest.total[1])} |")
    if "client" in run.each:
        client = run.each["client"]
        lines.append(f"| `hq submit --wait` client (not counted) | {mb(client[0])} | "
                     f"{mb(client[1])} | {mb(client[2])} | | |")
    lines += ["", f"- runtime peak: PSS **{mb(run.total[1])} MB**, RSS {mb(run.total[0])} MB, "
              f"USS {mb(run.total[2])} MB (target: at most 100 MB)."]
    for label, peaks in references.items():
        lines.append(f"- {label}: peak RSS {mb(peaks.total[0])} MB, PSS {mb(peaks.total[1])} MB, "
                     f"USS {mb(peaks.total[2])} MB.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.025,
                        help="seconds between samples (default 0.025)")
    parser.add_argument("--no-references", action="store_true",
                        help="do not sample the C loop and xargs")
    args = parser.parse_args()
    stop_on_signals()
    references: dict[str, Peaks] = {}
    with tempfile.TemporaryDirectory(prefix="hqshm-memory-") as tmp:
        rest, run, elapsed = run_hqshm(args.tasks, args.cpus, Path(tmp), args.interval)
        if not args.no_references:
            loop = build_spawn_loop(Path(tmp))
            references["C posix_spawn loop"] = run_reference(
                [str(loop), str(args.tasks), str(args.cpus)], args.interval)
            references[f"`xargs -P{args.cpus}`"] = run_reference(
                ["xargs", f"-P{args.cpus}", "-I{}", "true"], args.interval,
                "".join(f"{i}\n" for i in range(args.tasks)).encode())
        errors = [line for line in (Path(tmp) / "node.log").read_text(errors="replace")
                  .splitlines() if "ERROR" in line or "Traceback" in line]
    print("\n".join(report(args.tasks, args.cpus, rest, run, elapsed, references)))
    if errors:
        print(f"\nnode log: {len(errors)} error lines, the first: {errors[0]}")


if __name__ == "__main__":
    main()
