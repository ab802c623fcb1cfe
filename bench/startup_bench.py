"""Start-up (issue 9, item 3), measured as a user starts things, median of `--rounds`.

    python bench/startup_bench.py [--rounds 7]

- together: `hq server start` and `hq worker start --cpus 1` launched at the same moment on a
  fresh server directory, until the worker logs that it registered (target ≤ 0.2 s); the
  worker waits for the server's access file by itself, as in a batch script that starts both;
- `hq local start --cpus 1` until it returns, the server and node up (target ≤ 0.5 s);
- `python -c pass`, the floor of any of them, in the same run.

Run it with the python of a regular `pip install .` to time what users get: an editable
install adds its import finder to every start. Every process started is stopped (SIGINT to
its session, then SIGKILL) before the next round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from live_server import hq_command, start_node, stop_nodes

REGISTERED = b"registered at the server"


def together(root: Path, timeout: float = 30.0) -> float:
    """Seconds from launching a server and a worker at once to the worker's registration."""
    env = dict(os.environ, HQ_SERVER_DIR=str(root / "server"))
    hq = hq_command()
    log = root / "worker.log"
    procs: list[subprocess.Popen] = []
    try:
        start = time.perf_counter()
        procs.append(subprocess.Popen([*hq, "server", "start"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        procs.append(start_node(env, ["--cpus", "1", "--detect-resources=none"], log))
        while REGISTERED not in log.read_bytes():
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"the worker did not register: {log.read_text()[-500:]}")
            time.sleep(0.001)
        return time.perf_counter() - start
    finally:
        stop_nodes(procs)  # the server too: SIGINT to each session, SIGKILL if need be


def local_start(root: Path) -> float:
    """Seconds `hq local start --cpus 1` takes to return; the laptop cluster is stopped after."""
    env = dict(os.environ, HQ_SERVER_DIR=str(root / "server"))
    hq = hq_command()
    start = time.perf_counter()
    subprocess.run([*hq, "local", "start", "--cpus", "1"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    subprocess.run([*hq, "local", "stop"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return elapsed


def python_floor() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"together": [], "local": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="hqshm-startup-") as tmp:
        for i in range(args.rounds):  # interleaved, so that a slow minute hits all three
            for name, measure in (("together", together), ("local", local_start)):
                root = Path(tmp) / f"{name}-{i}"
                root.mkdir()
                times[name].append(measure(root))
            times["floor"].append(python_floor())

    def ms(name: str) -> str:
        return f"{statistics.median(times[name]) * 1000:.0f} ms"

    print(f"Start-up, median of {args.rounds} (`{' '.join(hq_command())}`):\n")
    print("| what | figure | target |\n| --- | ---: | ---: |")
    print(f"| `hq server start` + `hq worker start --cpus 1` launched together, until the "
          f"worker registered | {ms('together')} | ≤ 200 ms |")
    print(f"| `hq local start --cpus 1` until it returns | {ms('local')} | ≤ 500 ms |")
    print(f"| `python -c pass` | {ms('floor')} | |")


if __name__ == "__main__":
    main()
