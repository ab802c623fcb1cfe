"""Laptop mode: `hq local start` runs a server and a node here in the background; `hq local stop`
stops both and waits until no process of theirs is left.

Both run as ordinary detached `hq server start` / `hq worker start` processes (own session,
output in log files next to the server's instances), so every other `hq` command works on them
unchanged and nothing of them lives in the shell that started them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hqshm.cli.commands.context import Context
from hqshm.errors import UserError
from hqshm.link import serverdir
from hqshm.link.details import WorkerListResponse
from hqshm.link.requests import ServerInfoRequest, StopServerRequest, WorkerListRequest
from hqshm.link.responses import Ack, ServerInfo

logger = logging.getLogger("hqshm.cli")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.02


def run(ctx: Context, command: str) -> int:
    return {"start": start, "stop": stop}[command](ctx)


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    # -P: import what is installed, never a source checkout that happens to be the current
    # directory (it has no compiled launcher, and nodes would spawn tasks 3x slower).
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "hqshm.cli.main", *args],
            stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True,
            close_fds=True,
        )


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _poll(what: str, proc: subprocess.Popen, log: Path, ready) -> object:  # noqa: ANN001
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"The {what} exited with code {proc.returncode} while starting:\n"
                            f"{_tail(log)}\n(full log: {log})")
        result = ready()
        if result:
            return result
        time.sleep(POLL_INTERVAL)
    proc.kill()
    raise UserError(f"The {what} did not come up within {START_TIMEOUT:.0f} s (log: {log})")


def start(ctx: Context) -> int:
    server_dir = ctx.server_dir
    try:
        info = ctx.request(ServerInfoRequest(), ServerInfo, timeout=5.0)
    except UserError:
        info = None
    if info is not None:
        raise UserError(f"A server is already running at {server_dir}; stop it first with "
                        f"`hq local stop --server-dir {server_dir}`")
    server_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = ["--server-dir", str(server_dir)]
    server_log = server_dir / "local-server.log"
    stale = serverdir.current_target(server_dir)
    server = _spawn([*base, "server", "start"], server_log)
    # The server publishes its access file before its heavy imports; the worker starts then,
    # alongside them, rather than after the server answers (its registration waits in the
    # socket). A stale hq-current of a dead server does not count.
    _poll("server", server, server_log,
          lambda: (target := serverdir.current_target(server_dir)) is not None
          and target != stale)
    worker_args = [*base, "worker", "start"]
    if ctx.args.cpus:
        worker_args += ["--cpus", ctx.args.cpus]
    worker_log = server_dir / "local-worker.log"
    worker = _spawn(worker_args, worker_log)

    def server_ready() -> object:
        try:
            return ctx.request(ServerInfoRequest(), ServerInfo, timeout=2.0)
        except UserError:
            return None

    try:
        info = _poll("server", server, server_log, server_ready)
    except UserError:
        worker.kill()  # nothing to register with
        worker.wait()
        raise
    assert isinstance(info, ServerInfo)

    def worker_ready() -> object:
        response = ctx.request(WorkerListRequest(), WorkerListResponse, timeout=2.0)
        return response.workers or None

    try:
        workers = _poll("worker", worker, worker_log, worker_ready)
    except UserError:
        with contextlib.suppress(UserError):
            ctx.request(StopServerRequest(), Ack, timeout=5.0)
        raise
    view = workers[0]  # type: ignore[index]
    from hqshm.cli.resourceview import descriptor_summary

    cpus = descriptor_summary(view.config.resources, multiline=False)
    if view.config.launcher_fallback:
        logger.warning("The worker has no compiled task launcher (%s): tasks start about 3x "
                       "slower. Reinstall hqshm where a C compiler is available "
                       "(pip install --force-reinstall .) to build it.",
                       view.config.launcher_fallback)
    if ctx.out.mode == "json":
        ctx.out.json({"server_dir": str(server_dir), "server_pid": info.pid,
                      "worker_pid": view.config.pid, "worker_id": view.id})
    elif ctx.out.mode == "quiet":
        ctx.out.line(str(server_dir))
    else:
        ctx.out.line(f"hqshm is running on this machine (server pid {info.pid}, worker pid "
                     f"{view.config.pid}: {cpus}).")
        ctx.out.line("Submit work with `hq submit ...`; stop everything with `hq local stop`.")
        ctx.out.line(f"Logs: {server_log}, {worker_log}")
    return 0


def stop(ctx: Context) -> int:
    info = ctx.request(ServerInfoRequest(), ServerInfo, timeout=10.0)
    workers = ctx.request(WorkerListRequest(), WorkerListResponse, timeout=10.0)
    pids = [info.pid] + [w.config.pid for w in workers.workers if w.config.pid]
    ctx.request(StopServerRequest(), Ack, timeout=10.0)
    logger.info("Stopping server")
    deadline = time.monotonic() + STOP_TIMEOUT
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    for pid in left:
        logger.warning("Process %d did not stop in %.0f s; killing it", pid, STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ctx.out.empty()
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
