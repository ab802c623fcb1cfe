"""The server and worker processes of a ``LocalCluster``: start, wait until ready, stop.

Each is an ordinary `hq server start` / `hq worker start` (run as ``python -P -m
hqshm.cli.main``, so that it imports the installed package whatever the current directory), in
its own session, with its log in the server directory. Started from the main thread, they also
get a parent-death signal (SIGTERM, which stops them cleanly), so a script killed without a
chance to clean up does not leave them running; a thread's children would get it when that
thread ends, so they do without.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hqshm.api.errors import ClusterStartFailed, ClusterStopped, ServerAlreadyRunning
from hqshm.errors import UserError
from hqshm.link.client import ClientConnection
from hqshm.link.requests import StopServerRequest, WorkerListRequest
from hqshm.link.responses import Ack

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.02
HQ_MODULE = ("-P", "-m", "hqshm.cli.main")

# Run by the interpreter that then becomes the server or worker: ask for SIGTERM when the
# parent dies (kept across exec), give up if it died already, exec the real command.
_WITH_PARENT_DEATH_SIGNAL = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)

T = TypeVar("T")


class ClusterProcesses:
    """A server in ``server_dir`` and the workers added to it. ``owns_dir``: the directory
    was made for this cluster and is removed when it stops."""

    def __init__(self, server_dir: Path, *, owns_dir: bool = False) -> None:
        self.server_dir = server_dir
        self.owns_dir = owns_dir
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stopped = False

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        command = [*HQ_MODULE, "--server-dir", str(self.server_dir), *args]
        if threading.current_thread() is threading.main_thread():
            command = ["-c", _WITH_PARENT_DEATH_SIGNAL, str(os.getpid()), *command]
        with open(log, "ab") as f:
            return subprocess.Popen([sys.executable, *command], stdin=subprocess.DEVNULL,
                                    stdout=f, stderr=f, start_new_session=True, close_fds=True)

    def start_server(self) -> None:
        if self._request(lambda conn: True):
            raise ServerAlreadyRunning(server_dir=self.server_dir)
        self.server_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = self.server_dir / "cluster-server.log"
        self.server = self._spawn(["server", "start"], log)
        _poll("server", self.server, log, lambda: self._request(lambda conn: True))

    def start_worker(self, cores: int) -> None:
        index = len(self.workers) + 1
        folder = self.server_dir / "worker"
        folder.mkdir(mode=0o700, exist_ok=True)
        log = folder / f"{index}.log"
        worker = self._spawn(["worker", "start", f"--cpus={cores}", "--detect-resources=none",
                              f"--work-dir={folder / str(index)}"], log)
        self.workers.append(worker)

        def registered(conn: ClientConnection) -> bool:
            from hqshm.link.details import WorkerListResponse

            views = conn.request(WorkerListRequest(), WorkerListResponse, timeout=5.0).workers
            return any(view.config.pid == worker.pid for view in views)

        _poll("worker", worker, log, lambda: self._request(registered))

    def _request(self, ask: Callable[[ClientConnection], T]) -> T | None:
        """``ask`` on a fresh connection; None while the server cannot be reached."""
        try:
            with ClientConnection(self.server_dir, starting_wait=0.0) as conn:
                return ask(conn)
        except UserError:
            return None

    def stop(self) -> None:
        """Ask the server to stop (its workers stop with it), wait, kill what is left."""
        if self.stopped:
            raise ClusterStopped()
        self.stopped = True
        processes = [p for p in (self.server, *self.workers) if p is not None]
        if any(p.poll() is None for p in processes):
            self._request(lambda conn: conn.request(StopServerRequest(), Ack, timeout=5.0))
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.poll() is None:  # not reaped: its pid is still its group's id
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)  # a worker's executors too
                process.wait()
        if self.owns_dir:
            shutil.rmtree(self.server_dir, ignore_errors=True)


def _poll(what: str, process: subprocess.Popen[bytes], log: Path,
          ready: Callable[[], object]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise ClusterStartFailed(what=what, log=log, log_tail=_tail(log),
                                     problem=f"exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise ClusterStartFailed(what=what, log=log, log_tail=_tail(log),
                                     problem=f"did not start within {START_TIMEOUT:.0f} s")
        time.sleep(POLL_INTERVAL)


def _tail(log: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""
