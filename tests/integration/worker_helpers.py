"""What the worker, task-environment and laptop-mode tests need beyond the harness.

Starting `hq-node` itself (the harness only starts `hq worker start`), looking at processes
through /proc (pids written by tasks, executors, CPU masks) and at a node's shared-memory
names, which carry the node's pid (``/dev/shm/hqshm-sub.<pid>.<n>``, ``sem.`` twins, spill
files). The node unlinks them once its executors hold the rings, so none should ever be seen
after start-up; the tests check that none is left after the node ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import DEFAULT_TIMEOUT, HqEnv, Table, parse_tables, pid_alive

SHM_DIR = Path("/dev/shm")


def hq_node_executable() -> list[str]:
    """The installed `hq-node` next to this interpreter (a console script of the package)."""
    candidate = Path(sys.executable).parent / "hq-node"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("hq-node")
    assert found, "hq-node is not installed next to the interpreter nor on PATH"
    return [found]


def start_node(
    env: HqEnv,
    args: Sequence[str],
    *,
    hostname: str | None = None,
    wait: bool = True,
    extra_env: dict[str, str] | None = None,
    cpus: str | None = "1",
) -> subprocess.Popen:
    """Start `hq-node ARGS` like the harness starts `hq worker start` (same log and cleanup).

    The work dir lies under the env's root so the fixture's leftover check sees its processes.
    """
    index = env.next_worker
    env.next_worker += 1
    name = f"worker{index}"
    full = [f"--work-dir={env.root / name}", "--on-server-lost=stop"]
    if hostname is not None:
        full.append(f"--hostname={hostname}")
    if cpus is not None:
        full += ["--detect-resources=none", f"--cpus={cpus}"]
    full += list(args)
    log = open(env.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(
        [*hq_node_executable(), *full],
        cwd=env.work,
        env=env.env(extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    env.processes.append((name, proc))
    env.workers[index] = proc
    if wait:
        env.wait_until(
            lambda: index in env.worker_states(),
            f"{name} (hq-node) to connect",
            check=lambda: env._alive_or_fail(name, proc),
        )
    return proc


def worker_table(env: HqEnv, selector: str | int) -> Table:
    tables = parse_tables(env.command(["worker", "info", str(selector)]))
    assert len(tables) == 1, f"expected one table, got {len(tables)}"
    return tables[0]


def wait_exit(proc: subprocess.Popen, timeout: float = DEFAULT_TIMEOUT) -> int:
    """The process's exit code; fails the test if it is still running after `timeout`."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pid {proc.pid} still runs after {timeout} s") from None


def read_pid(env: HqEnv, path: Path, timeout: float = DEFAULT_TIMEOUT) -> int:
    """A pid a task wrote to `path` (waits until the file holds a whole line)."""

    def ready() -> int | None:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if text.endswith("\n"):
                return int(text)
        return None

    return env.wait_until(ready, f"a pid in {path}", timeout)


def wait_gone(env: HqEnv, pids: Sequence[int], what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    env.wait_until(lambda: not any(pid_alive(p) for p in pids), what, timeout)


def children_of(pid: int) -> list[int]:
    """Live direct children of `pid` (for a node: its executors)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def shm_segments_of(pid: int) -> list[str]:
    """Shared-memory segments and semaphores of the node with this pid."""
    marker = f".{pid}."
    with contextlib.suppress(FileNotFoundError):
        return sorted(name for name in os.listdir(SHM_DIR) if "hqshm" in name and marker in name)
    return []


def remove_shm_segments_of(pid: int) -> None:
    """Clean up after a node that could not (SIGKILL)."""
    for name in shm_segments_of(pid):
        with contextlib.suppress(OSError):
            os.unlink(SHM_DIR / name)


def kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)




def parse_cpu_list(text: str) -> set[int]:
    """The kernel's list format (`0-2,5`), as in Cpus_allowed_list and HQ_CPUS (`0,1`)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            first, last = part.split("-")
            cpus.update(range(int(first), int(last) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


def allowed_cpus(pid: int | str) -> set[int]:
    """The CPU affinity of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                return parse_cpu_list(line.split(":", 1)[1])
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def wait_log(env: HqEnv, name: str, text: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    env.wait_until(lambda: text in env.log(name), f"{text!r} in the log of {name}", timeout)
