"""Every figure bench/README.md quotes, measured side by side in one run.

    python bench/figures.py [--tasks 5000] [--cpus 2] [--repeat 3] [--plain-python PATH]

Runs compare_hq.py's comparison (hqshm, HQ 0.27.0, the C spawn loop, xargs) and then the
pytest-benchmark suite in bench/ with this interpreter, and prints the README's "Figures"
section in its form: the machine and date, then one table per measurement. ``--plain-python``
names the python of a venv with a regular `pip install .` (and pytest-benchmark) to time the
`hq job list` round trip as users get it too; without it that row says "not measured".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compare_hq import compare, report

BENCH = Path(__file__).resolve().parent

Benchmarks = dict[str, dict[str, Any]]


# --- the run ------------------------------------------------------------------------------------


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), platform.machine())
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    system = platform.system()
    release = dict(line.split("=", 1) for line in
                   Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return (f"{os.cpu_count()} vCPUs ({model}), {kib / 2**20:.0f} GiB, "
            f"{release.get('PRETTY_NAME', system).strip(chr(34))}, Python "
            f"{platform.python_version()}, {system} {platform.release().split('-')[0]}")


def run_suite(python: str, out: Path, *paths: str) -> tuple[Benchmarks, dict[str, dict]]:
    """pytest-benchmark's results by test name, and the properties tests recorded."""
    bench_json, junit = out / "bench.json", out / "junit.xml"
    subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--benchmark-json={bench_json}", f"--junitxml={junit}",
                    "-o", "junit_family=legacy", *paths],
                   cwd=BENCH.parent, check=False, stdout=sys.stderr)
    benchmarks = {}
    if bench_json.exists():
        benchmarks = {b["fullname"].split("::")[-1]: b
                      for b in json.loads(bench_json.read_text())["benchmarks"]}
    properties: dict[str, dict] = {}
    if junit.exists():
        for case in ElementTree.parse(junit).iter("testcase"):
            properties[case.get("name", "")] = {
                p.get("name"): float(p.get("value", "nan")) for p in case.iter("property")}
    return benchmarks, properties


# --- the tables ---------------------------------------------------------------------------------


def table(header: str, align: str, rows: list[str]) -> list[str]:
    return [header, align, *rows, ""]


class Figures:
    """Looks figures up in one suite's results; a missing one prints as "n/a"."""

    def __init__(self, benchmarks: Benchmarks, properties: dict[str, dict]) -> None:
        self.benchmarks = benchmarks
        self.properties = properties

    def median(self, name: str, scale: float = 1e6) -> float | None:
        found = self.benchmarks.get(name)
        return None if found is None else found["stats"]["median"] * scale

    def extra(self, name: str, key: str) -> float | None:
        found = self.benchmarks.get(name)
        return None if found is None else found["extra_info"].get(key)

    def prop(self, test: str, key: str) -> float | None:
        return self.properties.get(test, {}).get(key)


def us(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f} us" if value >= 100 else f"{value:.1f} us"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def ring_table(f: Figures) -> list[str]:
    return table("| what | median |", "| --- | ---: |", [
        f"| push, one record (200-byte payload) | {us(f.extra('test_push', 'push_us'))} |",
        f"| pop, one record | {us(f.extra('test_pop', 'pop_us'))} |",
        f"| pop on an empty ring | {us(f.median('test_pop_when_empty'))} |",
        "| one-way hand-off between two processes, blocking pop (spins 50 us, then sleeps) | "
        f"**{us(f.extra('test_handoff_blocking_pop[spin]', 'one_way_median_us'))}** "
        "(target ≤ 10 us) |",
        "| same, without spinning (executors run this way, to leave CPUs to tasks) | "
        f"{us(f.extra('test_handoff_blocking_pop[nospin]', 'one_way_median_us'))} |",
        "| node path: doorbell pipe + poll + drain + pop | "
        f"{us(f.extra('test_handoff_doorbell', 'one_way_median_us'))} |",
    ])


def node_table(f: Figures) -> list[str]:
    overhead = f.extra("test_executor_roundtrip", "node_overhead_median_us")
    return table("| what | median |", "| --- | ---: |", [
        f"| spawn + wait `true` directly (C module, pinned) | {us(f.median('test_direct_spawn'))} |",
        f"| the same through the executor path | {us(f.median('test_executor_roundtrip'))} |",
        f"| **node-local overhead** | **{us(overhead)}** |",
    ])


def stream_table(f: Figures) -> list[str]:
    return table("| what | median |", "| --- | ---: |", [
        f"| a task, output to /dev/null | {us(f.median('test_task_to_devnull'))} |",
        f"| a task, output to files | {us(f.median('test_task_to_file'))} |",
        f"| a task, output streamed | {us(f.median('test_task_streamed'))} |",
        "| reading a stream file of 100,000 task streams | "
        f"{ms(f.median('test_read_stream', 1e3))} |",
    ])


def cli_table(f: Figures, plain: Figures | None) -> list[str]:
    plain_ms = "not measured" if plain is None else ms(
        plain.median("test_job_list_roundtrip", 1e3))
    return table("| what | median |", "| --- | ---: |", [
        "| `hq job list --all`, 100 jobs, editable install (the test venv) | "
        f"{ms(f.median('test_job_list_roundtrip', 1e3))} |",
        f"| the same with a regular `pip install .` (what users get) | {plain_ms} |",
        f"| `python -c pass` (the floor) | {ms(f.median('test_python_startup_floor', 1e3))} |",
        "| `hq server start`: exec until the access file exists (sockets bound) | "
        f"{ms(f.median('test_server_start_until_access_file', 1e3))} |",
        f"| `python -c 'import zmq'` (its floor) | "
        f"{ms(f.median('test_python_import_zmq_floor', 1e3))} |",
    ])


def cancel_table(f: Figures) -> list[str]:
    seconds = f.extra("test_cancel_of_a_running_array", "median_s")
    text = "n/a" if seconds is None else f"{seconds:.2f} s"
    return table("| what | median | target |", "| --- | ---: | ---: |", [
        f"| `hq job cancel` of a running 20,000-task array | {text} | < 5 s |",
    ])


def array_table(f: Figures) -> list[str]:
    submit = f.prop("test_million_task_array", "submit_s")
    per_task = f.prop("test_million_task_array", "bytes_per_task")
    return table("| what | measured | target |", "| --- | ---: | ---: |", [
        "| `hq submit --array 1-1000000 -- true`, accepted | "
        f"{'n/a' if submit is None else f'{submit:.2f} s'} | ≤ 2 s |",
        "| server memory per task (RSS before and after) | "
        f"{'n/a' if per_task is None else f'{per_task:.0f} bytes'} | ≤ 64 bytes |",
    ])


def spawn_table(f: Figures) -> list[str]:
    return table("| what | median |", "| --- | ---: |", [
        "| C module (`clone(CLONE_VM\\|CLONE_VFORK)`, pinned, cwd, files) | "
        f"{us(f.median('test_spawn_true_c'))} |",
        "| glibc `posix_spawn` doing less (no affinity, no cwd) | "
        f"{us(f.median('test_spawn_true_posix_spawn_baseline'))} |",
        f"| Python fallback (`os.fork`) | {us(f.median('test_spawn_true_fallback'))} |",
        f"| Python work to prepare the C call | {us(f.median('test_c_call_preparation'))} |",
    ])


def allocator_table(f: Figures) -> list[str]:
    def find(test: str, **params: Any) -> float | None:
        for name, b in f.benchmarks.items():
            if name.startswith(f"{test}[") and all(b["params"].get(k) == v
                                                  for k, v in params.items()):
                return b["stats"]["median"] * 1e6
        return None

    requests = [("1 compact", "`--cpus 1` (compact)"), ("4 compact", "`--cpus 4` (compact)"),
                ("8 tight", "`--cpus 8 tight`"), ("8 scatter", "`--cpus 8 scatter`"),
                ("16 compact!", "`--cpus 16 compact!`"), ("2.5 compact", "`--cpus 2.5` (fraction)")]
    rows = []
    for text, label in requests:
        cells = [find("test_decision", request_text=text, busy=busy, shape=shape)
                 for busy, shape in ((False, "8x16"), (True, "8x16"), (True, "8x2048"))]
        rows.append(f"| {label} | {' | '.join(us(c) for c in cells)} |")
    for cpus, gpus, label in [("4", "1", "`--cpus 4` + 1 GPU"),
                              ("4", "1 compact!", "`--cpus 4` + `1 compact!` GPU"),
                              ("24", "2", "`--cpus 24` + 2 GPUs"),
                              ("24 compact!", "3", "`--cpus '24 compact!'` + 3 GPUs")]:
        cells = [find("test_coupled_decision", cpus=cpus, gpus=gpus, busy=busy)
                 for busy in (False, True)]
        rows.append(f"| {label}, GPUs coupled 1:1 to the NUMA nodes | "
                    f"{' | '.join(us(c) for c in cells)} | |")
    rows.append(f"| `--cpus all` (costs per CPU) | {us(f.median('test_all_of_an_idle_node'))} | | |")
    return table("| request | idle, 8×16 | half busy, 8×16 | half busy, 8×2048 |",
                 "| --- | ---: | ---: | ---: |", rows)


SECTIONS: list[tuple[str, Callable[[Figures], list[str]]]] = [
    ("Shared-memory ring (`pytest bench/test_ring_bench.py`)", ring_table),
    ("Node-local overhead of a no-op task (`pytest bench/test_node_bench.py`)", node_table),
    ("Output streaming (`pytest bench/test_stream_bench.py`)", stream_table),
    ("Cancel of a big running array (`pytest bench/test_cancel_bench.py`)", cancel_table),
    ("A million-task array (`pytest bench/test_array_bench.py`)", array_table),
    ("Spawning (`pytest bench/test_spawn_bench.py`)", spawn_table),
    ("Allocator decision (`pytest bench/test_allocator_bench.py`)", allocator_table),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plain-python", help="python of a venv with a regular install")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    started = datetime.datetime.now(datetime.UTC)
    results = compare(args.tasks, args.cpus, args.repeat)
    with tempfile.TemporaryDirectory(prefix="hqshm-figures-") as tmp:
        figures = Figures(*run_suite(sys.executable, Path(tmp), "bench"))
        plain = None
        if args.plain_python:
            plain_dir = Path(tmp) / "plain"
            plain_dir.mkdir()
            plain = Figures(*run_suite(args.plain_python, plain_dir,
                                       "bench/test_cli_bench.py"))
    load_after = os.getloadavg()[0]
    lines = [
        textwrap.fill(
            f"Measured on {started:%Y-%m-%d} by `python bench/figures.py`, all in one run of "
            f"{(datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60:.0f} "
            f"minutes: {machine()}. A shared machine: other work ran alongside (load average "
            f"{load_before:.1f} before, {load_after:.1f} after), so read ratios, not absolutes.",
            100),
        "",
        f"### Throughput: {args.tasks:,} `true` tasks, one server and one node with "
        f"{args.cpus} CPUs",
        "",
        f"`python bench/compare_hq.py --tasks {args.tasks} --cpus {args.cpus} --repeat "
        f"{args.repeat}` (best of {args.repeat}; all runs shown):",
        "",
        *report(results),
        "",
        "### `hq job list` round trip (`pytest bench/test_cli_bench.py`)",
        "",
        *cli_table(figures, plain),
    ]
    for title, make in SECTIONS:
        lines += [f"### {title}", "", *make(figures)]
    print("\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
