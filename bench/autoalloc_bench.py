"""Automatic allocation's efficiency against the real Slurm (issue 11, item 7).

    SLURM_CONF=... python bench/autoalloc_bench.py [--bursts 3] [--submits 5] [--tasks 5]
        [--task-seconds 5] [--spacing 23] [--gap 30] [--idle-timeout 2s] [--refresh-ms 5000]
        [--raw FILE] [--from-raw FILE]

One server with one Slurm queue (`--cpus 1 --max-worker-count 1`, a unique name, so that only
this run's jobs are canceled at the end). Work comes in bursts: each burst is `--submits`
arrays of `--tasks` `sleep --task-seconds` tasks, `--spacing` seconds apart, so that the one
worker stays busy through the burst; then `--gap` seconds of quiet, longer than the idle timeout,
so that each burst gets an allocation of its own that ends in the gap.

Measured, per allocation, from Slurm's own StartTime/EndTime (what the batch system bills) and
the tasks' start/end times (`hq task list` JSON):
* idle allocation time / allocated node time: node time minus the union of task run times;
* the longest time a task waited for an allocation (a burst's first task: submitted with no
  worker alive, until it started), against the allocator's poll interval plus Slurm's own start
  latency (SubmitTime to StartTime) plus the worker's start-up (StartTime to registration).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from live_server import hq_command, running_server

SLURM_TIME = "%Y-%m-%dT%H:%M:%S"


def hq(env: dict[str, str], *args: str) -> str:
    return subprocess.run([*hq_command(), *args], env=env, check=True, capture_output=True,
                          text=True, timeout=60).stdout


def hq_json(env: dict[str, str], *args: str) -> object:
    return json.loads(hq(env, "--output-mode", "json", *args))


def ts(text: str) -> float:
    """An RFC 3339 timestamp of hq's JSON as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def slurm_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                         timeout=30).stdout
    return dict(t.split("=", 1) for t in out.split() if "=" in t)


def slurm_times(fields: dict[str, str]) -> tuple[float, float, float] | None:
    """(SubmitTime, StartTime, EndTime) of an ended job, local time, or None."""
    try:
        return tuple(time.mktime(time.strptime(fields[k], SLURM_TIME))  # type: ignore[return-value]
                     for k in ("SubmitTime", "StartTime", "EndTime"))
    except (KeyError, ValueError):
        return None


def union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--submits", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--task-seconds", type=float, default=5.0)
    ap.add_argument("--spacing", type=float, default=23.0)
    ap.add_argument("--gap", type=float, default=30.0)
    ap.add_argument("--idle-timeout", default="2s")
    ap.add_argument("--refresh-ms", type=int, default=5000)
    ap.add_argument("--raw", type=Path, help="also write what was measured here (JSON)")
    ap.add_argument("--from-raw", type=Path, help="report a --raw file again, run nothing")
    a = ap.parse_args()
    if a.from_raw is not None:
        raw = json.loads(a.from_raw.read_text())
        return report(argparse.Namespace(**raw["args"]), **raw["data"])
    if "SLURM_CONF" not in os.environ:
        print("SLURM_CONF is not set (a running Slurm is needed)", file=sys.stderr)
        return 2
    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                               check=True).stdout.split()[0].rstrip("*")
    name = f"hqbench{uuid.uuid4().hex[:6]}"
    os.environ.update(HQ_AUTOALLOC_REFRESH_INTERVAL_MS=str(a.refresh_ms),
                      HQ_AUTOALLOC_SCHEDULE_TICK_INTERVAL_MS="1000")
    poll = a.refresh_ms / 1000.0
    seen: dict[str, dict[str, str]] = {}  # Slurm's last word on each allocation
    submitted: list[float] = []  # when each burst's first array was submitted
    first_job: list[int] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="hqshm-alloc-bench-") as tmp, \
            running_server(Path(tmp) / "server") as (env, _proc):
        os.chdir(tmp)  # the tasks' output files go there
        try:
            hq(env, "alloc", "add", "slurm", "--time-limit", "30m", "--no-dry-run", "--name",
               name, "--cpus", "1", "--max-worker-count", "1", "--idle-timeout",
               a.idle_timeout, "--", f"--partition={partition}")
            job = 0

            def watch() -> list[dict]:
                allocs = hq_json(env, "alloc", "info", "1")
                for alloc in allocs:  # type: ignore[union-attr]
                    fields = slurm_job(alloc["id"])
                    if fields:
                        seen[alloc["id"]] = fields
                return allocs  # type: ignore[return-value]

            def sleep_watching(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    watch()
                    time.sleep(min(2.0, max(0.0, end - time.monotonic())))

            for burst in range(a.bursts):
                for i in range(a.submits):
                    at = time.time()
                    hq(env, "submit", "--array", f"1-{a.tasks}", "--", "sleep",
                       str(a.task_seconds))
                    job += 1
                    if i == 0:
                        submitted.append(at)
                        first_job.append(job)
                    sleep_watching(a.spacing if i + 1 < a.submits else 0)
                print(f"burst {burst + 1} submitted", file=sys.stderr)
                # Quiet until the work is done, then the gap.
                while any(j["task_stats"]["finished"] < j["task_count"]
                          for j in hq_json(env, "job", "list", "--all")):  # type: ignore[union-attr]
                    sleep_watching(1.0)
                sleep_watching(a.gap)
            deadline = time.monotonic() + 120
            while any(x["status"] in ("queued", "running") for x in watch()):
                assert time.monotonic() < deadline, "allocations did not end"
                time.sleep(1.0)
            allocs = watch()
            tasks = hq_json(env, "task", "list", f"1-{job}")
            workers = hq_json(env, "worker", "list", "--all")
        finally:
            mine = [line.split()[0] for line in subprocess.run(
                ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True,
                check=False).stdout.splitlines() if line.split()[1:2]
                and line.split()[1].startswith(f"{name}-")]
            if mine:
                subprocess.run(["scancel", *mine], check=False)
    data = {"poll": poll, "allocs": allocs, "tasks": tasks, "workers": workers, "seen": seen,
            "submitted": submitted, "first_job": first_job, "started": started}
    if a.raw is not None:
        args = {k: v for k, v in vars(a).items() if k not in ("raw", "from_raw")}
        a.raw.write_text(json.dumps({"args": args, "data": data}))
    return report(a, **data)


def report(a: argparse.Namespace, poll: float, allocs: list[dict], tasks: dict,
           workers: list[dict], seen: dict[str, dict[str, str]], submitted: list[float],
           first_job: list[int], started: float) -> int:
    by_worker: dict[int, list[tuple[float, float]]] = {}
    first_start: dict[int, float] = {}
    for job_id, items in tasks.items():
        for t in items:
            if t.get("started_at") and t.get("finished_at"):
                span = (ts(t["started_at"]), ts(t["finished_at"]))
                by_worker.setdefault(t["worker"], []).append(span)
                j = int(job_id)
                first_start[j] = min(first_start.get(j, span[0]), span[0])
    worker_of = {(w.get("allocation") or {}).get("id"): w for w in workers}
    node_time = busy = 0.0
    rows = []
    latencies = []
    for alloc in sorted(allocs, key=lambda x: x["queued_at"]):
        times = slurm_times(seen.get(alloc["id"], {}))
        worker = worker_of.get(alloc["id"])
        if times is None or worker is None:
            print(f"allocation {alloc['id']}: no Slurm times or no worker; skipped",
                  file=sys.stderr)
            continue
        submit, start, end = times
        work = union(by_worker.get(worker["id"], []))
        node_time += end - start
        busy += work
        registered = ts(worker["started"])
        latencies.append((start - submit, registered - start))
        rows.append((alloc["id"], end - start, work, start - submit, registered - start))
    waits = [first_start[j] - at for j, at in zip(first_job, submitted, strict=True)
             if j in first_start]
    idle = node_time - busy
    slurm_latency = max(x[0] for x in latencies)
    startup = max(x[1] for x in latencies)
    bound = poll + slurm_latency + startup
    print(f"scenario: {a.bursts} bursts x {a.submits} arrays x {a.tasks} `sleep "
          f"{a.task_seconds:g}`, {a.spacing:g} s apart, gaps {a.gap:g} s, idle timeout "
          f"{a.idle_timeout}, poll interval {poll:g} s; "
          f"{max(ts(w['ended']['at']) for w in workers if w['ended']) - started:.0f} s in all")
    print("allocation  node s  busy s  slurm start latency s  worker start-up s")
    for r in rows:
        print(f"{r[0]:>10}  {r[1]:6.0f}  {r[2]:6.1f}  {r[3]:21.0f}  {r[4]:17.1f}")
    print(f"idle allocation time: {idle:.1f} s of {node_time:.0f} s allocated node time = "
          f"{100 * idle / node_time:.1f}% (target <= 5%)")
    print(f"longest wait for an allocation: {max(waits):.1f} s (bursts: "
          f"{', '.join(f'{w:.1f}' for w in waits)}); bound = poll {poll:g} s + Slurm start "
          f"latency {slurm_latency:.0f} s + worker start-up {startup:.1f} s = {bound:.1f} s")
    return 0 if idle <= 0.05 * node_time and max(waits) <= bound else 1


if __name__ == "__main__":
    sys.exit(main())
