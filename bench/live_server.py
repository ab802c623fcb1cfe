"""A real hqshm server for the benchmarks that time `hq` as a user runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


def hq_command() -> list[str]:
    """The installed `hq` next to this interpreter, else the module."""
    candidate = Path(sys.executable).parent / "hq"
    return [str(candidate)] if candidate.exists() else [sys.executable, "-P", "-m", "hqshm.cli.main"]


@contextlib.contextmanager
def running_server(server_dir: Path, args: Sequence[str] = (), timeout: float = 30
                   ) -> Iterator[tuple[dict[str, str], subprocess.Popen]]:
    """Start `hq server start ARGS` on server_dir, wait until it answers, stop it (SIGINT)
    after.

    Yields the environment that points `hq` at it, and the server process.
    """
    env = dict(os.environ, HQ_SERVER_DIR=str(server_dir))
    hq = hq_command()
    proc = subprocess.Popen([*hq, "server", "start", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while subprocess.run([*hq, "server", "info"], env=env,
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield env, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_node(env: dict[str, str], args: Sequence[str] = (), log: Path | None = None
               ) -> subprocess.Popen:
    """`hq worker start ARGS` in a session of its own (so that its executors and tasks form one
    process group that stop_nodes can signal); its output goes to `log`, else nowhere."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen([*hq_command(), "worker", "start", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log is not None:
            out.close()


def stop_nodes(nodes: Sequence[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGINT every node's process group at once, wait up to `timeout` for all of them, then
    SIGKILL the groups of those still there (and of those gone, for any executor left)."""
    for node in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=max(0.0, deadline - time.monotonic()))
    for node in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        node.wait()


@contextlib.contextmanager
def running_node(env: dict[str, str], args: Sequence[str] = (), log: Path | None = None
                 ) -> Iterator[subprocess.Popen]:
    """start_node, and stop_nodes after."""
    node = start_node(env, args, log)
    try:
        yield node
    finally:
        stop_nodes([node])


def stop_on_signals() -> None:
    """Make SIGINT (even where the script was started ignoring it), SIGTERM and SIGHUP raise
    KeyboardInterrupt, so that the finally blocks above stop the server and the nodes."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
