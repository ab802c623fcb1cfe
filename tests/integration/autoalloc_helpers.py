"""Recorded PBS behaviour for automatic allocation tests.

No PBS server can run in this sandbox or in CI, so these tests put fake ``qsub``, ``qstat`` and
``qdel`` first on the server's PATH. They answer as PBS Pro does (qsub prints the job id;
``qstat -f <id>... -F json -x`` prints ``{"Jobs": {...}}`` and omits unknown ids; qdel exits
0) and keep their state in files the test controls: ``jobs/<id>`` holds the job's qstat object
(absent: PBS does not know the job), ``qsub_fail`` makes qsub fail with its content as stderr,
``calls`` records every call with its working directory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from harness import HqEnv

FAST = {"HQ_AUTOALLOC_REFRESH_INTERVAL_MS": "100", "HQ_AUTOALLOC_MAX_SCHEDULE_DELAY_MS": "100",
        "HQ_AUTOALLOC_SCHEDULE_TICK_INTERVAL_MS": "100"}

_PROGRAM = '''#!{python}
import json, os, sys
from pathlib import Path
state = Path({state!r})
name = Path(sys.argv[0]).name
with open(state / "calls", "a") as f:
    f.write(json.dumps({{"program": name, "args": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
jobs = state / "jobs"
jobs.mkdir(exist_ok=True)
if name == "qsub":
    fail = state / "qsub_fail"
    if fail.exists():
        sys.stderr.write(fail.read_text())
        sys.exit(1)
    counter = state / "counter"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    job_id = f"{{n}}.pbs"
    (jobs / job_id).write_text(json.dumps({{"job_state": "Q"}}))
    print(job_id)
elif name == "qstat":
    if (state / "qstat_fail").exists():
        sys.stderr.write("qstat: cannot connect to server")
        sys.exit(2)
    args = sys.argv[1:]
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-f" and i + 1 < len(args)]
    found = {{}}
    for job_id in ids:
        path = jobs / job_id
        if path.exists():
            found[job_id] = json.loads(path.read_text())
    print(json.dumps({{"timestamp": 1, "pbs_version": "2024", "Jobs": found}}))
    if len(found) < len(ids):
        sys.stderr.write("qstat: Unknown Job Id")
        sys.exit(153)
elif name == "qdel":
    for job_id in sys.argv[1:]:
        path = jobs / job_id
        if path.exists():
            path.write_text(json.dumps({{"job_state": "F", "Exit_status": 271}}))
'''


class FakePbs:
    def __init__(self, root: Path) -> None:
        self.bin = root / "fake-pbs-bin"
        self.state = root / "fake-pbs-state"
        self.bin.mkdir()
        self.state.mkdir()
        for name in ("qsub", "qstat", "qdel"):
            path = self.bin / name
            path.write_text(_PROGRAM.format(python=sys.executable, state=str(self.state)))
            path.chmod(0o755)

    def env(self, base: dict[str, str], **extra: str) -> dict[str, str]:
        env = {**FAST, **extra}
        env["PATH"] = f"{self.bin}:{base.get('PATH', '')}"
        return env

    def calls(self, program: str | None = None) -> list[dict[str, Any]]:
        path = self.state / "calls"
        if not path.exists():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines()]
        return [c for c in calls if program is None or c["program"] == program]

    def set_job(self, job_id: str, **fields: Any) -> None:
        (self.state / "jobs" / job_id).write_text(json.dumps(fields))

    def forget_job(self, job_id: str) -> None:
        (self.state / "jobs" / job_id).unlink()

    def fail_qsub(self, stderr: str | None) -> None:
        path = self.state / "qsub_fail"
        if stderr is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(stderr)


def start_server(hq_env: HqEnv, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
    hq_env.server = hq_env.spawn("server", ["server", "start", *args], env=env)
    hq_env.wait_until(hq_env._server_up, "the server to start",
                      check=lambda: hq_env._alive_or_fail("server", hq_env.server))


def allocations(hq_env: HqEnv, queue: int = 1) -> list[dict[str, Any]]:
    return hq_env.json(["alloc", "info", str(queue)])


def queue_json(hq_env: HqEnv, queue: int = 1) -> dict[str, Any]:
    return next(q for q in hq_env.json(["alloc", "list"]) if q["id"] == queue)


def wait_allocs(hq_env: HqEnv, predicate: Any, what: str, queue: int = 1,
                timeout: float = 20.0) -> list[dict[str, Any]]:
    return hq_env.wait_until(lambda: (lambda a: a if predicate(a) else None)(
        allocations(hq_env, queue)), what, timeout=timeout)


def pause(seconds: float) -> None:
    time.sleep(seconds)
