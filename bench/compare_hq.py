"""Side-by-side throughput: N `true` tasks through hqshm, HQ 0.27.0, a C spawn loop and xargs.

All run in one invocation on the same machine, taking turns in each repetition, so their ratios
are comparable even on a shared, noisy host. Usage:

    python bench/compare_hq.py --tasks 5000 --cpus 2 [--repeat 3] [--skip-hq]

- hqshm: a fresh server and one node with `--cpus`, then `hq submit --array 1-N --stdout none
  --stderr none --wait -- true`; the time counts from just before submit (the `hq` client's
  start included) to the end of the wait, which the server answers when the job ends. The CPU
  time that server, node and executors spend meanwhile (from /proc/<pid>/stat) is reported per
  task, next to that of the `true` processes themselves.
- HQ: `hyperqueue.LocalCluster` (HQ's own Rust server and worker from the `hyperqueue==0.27.0`
  wheel), one worker with the same cores, a job of N `true` programs, submit to completion
  polled every 20 ms (hq_local_cluster.py). HQ runs from a venv of its own, bench/.hq-venv,
  created on first use (`pip install hyperqueue==0.27.0`), because this project's `hyperqueue`
  package would shadow HQ's in the project's environment.
- C loop: spawn_loop.c, compiled here with cc: posix_spawnp + waitpid, at most `--cpus` at a
  time; the machine's spawn ceiling, which hqshm's rate is quoted against.
- xargs: `xargs -P<cpus>` running `true` N times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from live_server import hq_command, running_node, running_server

BENCH = Path(__file__).resolve().parent
HQ_VERSION = "0.27.0"
HQ_VENV = BENCH / ".hq-venv"
RUNTIMES = ("hqshm", "hq", "c-loop", "xargs")
LABELS = {
    "hqshm": "hqshm",
    "hq": f"HQ {HQ_VERSION} (`LocalCluster`)",
    "c-loop": "C posix_spawn loop",
    "xargs": "`xargs -P{cpus}`",
}


@dataclass
class Results:
    """Rates of every run, per runtime, and hqshm's CPU time per task (µs) per process kind."""

    tasks: int
    cpus: int
    rates: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in RUNTIMES})
    cpu_us: dict[str, list[float]] = field(default_factory=dict)

    def best(self, runtime: str) -> float | None:
        return max(self.rates[runtime], default=None)


# --- hqshm --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU time of a process, user + system."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(v) / tick for v in fields[11:15])
    return utime + stime, cutime + cstime


def children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def cpu_snapshot(server: int, node: int) -> dict[str, float]:
    """CPU seconds so far: the server, the node, its executors, and the tasks they reaped."""
    executors = [cpu_seconds(pid) for pid in children(node)]
    return {
        "server": cpu_seconds(server)[0],
        "node": cpu_seconds(node)[0],
        "executors": sum(own for own, _ in executors),
        "true": sum(reaped for _, reaped in executors),
    }


def run_hqshm(tasks: int, cpus: int, root: Path, server_args: Sequence[str] = ()
              ) -> tuple[float, dict[str, float]]:
    """Seconds from submit to the end of `--wait`, and CPU µs per task per process kind."""
    hq = hq_command()
    with (running_server(root / "server", server_args) as (env, server),
          running_node(env, [f"--cpus={cpus}", "--detect-resources=none"]) as node):
        _wait(lambda: b"RUNNING" in subprocess.run([*hq, "worker", "list"], env=env,
                                                   capture_output=True).stdout)
        before = cpu_snapshot(server.pid, node.pid)
        start = time.perf_counter()
        subprocess.run([*hq, "submit", f"--array=1-{tasks}", "--stdout=none",
                        "--stderr=none", "--wait", "--", "true"], env=env, check=True,
                       capture_output=True, cwd=root)
        elapsed = time.perf_counter() - start
        after = cpu_snapshot(server.pid, node.pid)
        info = subprocess.run([*hq, "job", "list", "--all"], env=env, capture_output=True,
                              text=True).stdout
        assert "FINISHED" in info, info
        return elapsed, {k: (after[k] - before[k]) / tasks * 1e6 for k in after}


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("service did not start")
        time.sleep(0.1)


# --- HQ 0.27.0 ----------------------------------------------------------------------------------


def hq_python(venv: Path = HQ_VENV) -> Path:
    """The python of a venv holding HQ's wheel; creates or repairs it (about a minute)."""
    python = venv / "bin" / "python"
    check = ("import importlib.metadata as m; "
             f"raise SystemExit(m.version('hyperqueue') != {HQ_VERSION!r})")
    if python.exists() and subprocess.run([python, "-I", "-c", check],
                                          capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with hyperqueue=={HQ_VERSION} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", f"hyperqueue=={HQ_VERSION}"],
                   check=True)
    return python


def run_hq(python: Path, tasks: int, cpus: int, kind: str = "program") -> float:
    """Seconds HQ takes from submit to the end of N `true` tasks (``kind`` "function": N
    no-op Python function tasks)."""
    result = subprocess.run(
        [python, "-I", BENCH / "hq_local_cluster.py", str(tasks), str(cpus), kind],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    return float(result.stdout.split()[-1])


# --- references ---------------------------------------------------------------------------------


def build_spawn_loop(directory: Path) -> Path:
    binary = directory / "spawn_loop"
    subprocess.run(["cc", "-O2", "-o", binary, BENCH / "spawn_loop.c"], check=True)
    return binary


def run_c_loop(binary: Path, tasks: int, cpus: int, command: Sequence[str] = ("true",)
               ) -> float:
    """Seconds the C loop takes to run `command` `tasks` times, `cpus` at a time."""
    result = subprocess.run([binary, str(tasks), str(cpus), *command], check=True,
                            stdout=subprocess.PIPE, text=True)
    return float(result.stdout)


def run_xargs(tasks: int, cpus: int, command: str = "true") -> float:
    """Seconds `xargs -P<cpus>` takes to run the shell-quoted `command` `tasks` times."""
    start = time.perf_counter()
    subprocess.run(f"seq {tasks} | xargs -P{cpus} -I{{}} {command}", shell=True, check=True)
    return time.perf_counter() - start


# --- the comparison -----------------------------------------------------------------------------


def compare(tasks: int, cpus: int, repeat: int, with_hq: bool = True) -> Results:
    results = Results(tasks, cpus)
    python = hq_python() if with_hq else None
    with tempfile.TemporaryDirectory(prefix="hqshm-bench-") as tmp:
        loop = build_spawn_loop(Path(tmp))
        for i in range(repeat):
            root = Path(tmp) / f"run{i}"
            root.mkdir()
            results.rates["c-loop"].append(tasks / run_c_loop(loop, tasks, cpus))
            results.rates["xargs"].append(tasks / run_xargs(tasks, cpus))
            elapsed, cpu = run_hqshm(tasks, cpus, root)
            results.rates["hqshm"].append(tasks / elapsed)
            for kind, us in cpu.items():
                results.cpu_us.setdefault(kind, []).append(us)
            if python is not None:
                results.rates["hq"].append(tasks / run_hq(python, tasks, cpus))
            shutil.rmtree(root, ignore_errors=True)
    return results


def report(results: Results) -> list[str]:
    """The README's table and ratios (best run of each; all runs shown)."""
    lines = ["| runtime | tasks/s | runs |", "| --- | ---: | --- |"]
    for runtime in RUNTIMES:
        runs = results.rates[runtime]
        if runs:
            label = LABELS[runtime].format(cpus=results.cpus)
            lines.append(f"| {label} | {max(runs):,.0f} | {', '.join(f'{r:,.0f}' for r in runs)} |")
    best = {r: results.best(r) for r in RUNTIMES}
    lines.append("")
    lines.append(f"- hqshm / C posix_spawn loop = **{best['hqshm'] / best['c-loop']:.0%}**"
                 " (target: at least 90%).")
    if best["hq"]:
        lines.append(f"- hqshm / HQ {HQ_VERSION} = **{best['hqshm'] / best['hq']:.1f}x**; "
                     f"HQ {HQ_VERSION} / C loop = {best['hq'] / best['c-loop']:.0%}.")
    lines.append(f"- `xargs -P{results.cpus}` / C loop = {best['xargs'] / best['c-loop']:.0%}.")
    cpu = {kind: min(values) for kind, values in results.cpu_us.items()}
    runtime = cpu["server"] + cpu["node"] + cpu["executors"]
    lines.append("")
    lines.append(textwrap.fill(
        f"CPU per task (least of the runs): server {cpu['server']:.0f} us, node "
        f"{cpu['node']:.0f} us, executors {cpu['executors']:.0f} us, so the runtime's own "
        f"**{runtime:.0f} us** (target: at most 100 us); the `true` processes "
        f"{cpu['true']:.0f} us.", 100))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-hq", action="store_true", help=f"do not run HQ {HQ_VERSION}")
    args = parser.parse_args()
    results = compare(args.tasks, args.cpus, args.repeat, with_hq=not args.skip_hq)
    print(f"{args.tasks} `true` tasks, {args.cpus} CPUs, best of {args.repeat}:\n")
    print("\n".join(report(results)))


if __name__ == "__main__":
    main()
