"""Runs the batch system's programs (qsub, sbatch, qstat, scontrol, qdel, scancel) for the
server without blocking its loop: the thin edge of automatic allocation.

Programs are found by name on ``PATH`` (tests and sites put their own first) and run in a small
thread pool, each with a time limit and with its output cut at ``MAX_OUTPUT`` bytes (read from a
temporary file, so a flood of output costs disk, not memory). A finished command's callback
runs on the server's thread: the worker thread queues it and rings a socket pair that the loop
reads. A callback that raises is logged and dropped: the last-resort guard.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hqshm.cluster.frozen import frozen

logger = logging.getLogger(__name__)

MAX_OUTPUT = 256 * 1024  # bytes of stdout and of stderr kept from one command
SUBMIT_TIMEOUT = 120.0
QUERY_TIMEOUT = 60.0


@frozen
class CommandResult:
    program: str
    returncode: int | None  # None: it could not be started (or timed out)
    stdout: str
    stderr: str
    start_error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error(self) -> str:
        """HQ's wording: `<program> start failed: ...` or `<program> execution failed: Exit
        code: <n>\\nStderr: <stderr>\\nStdout: <stdout>`."""
        if self.returncode is None:
            return f"{self.program} start failed: {self.start_error}"
        return (f"{self.program} execution failed: Exit code: {self.returncode}\n"
                f"Stderr: {self.stderr}\nStdout: {self.stdout}")


def _read(handle: object) -> str:
    handle.seek(0)  # type: ignore[attr-defined]
    data: bytes = handle.read(MAX_OUTPUT + 1)  # type: ignore[attr-defined]
    text = data[:MAX_OUTPUT].decode("utf-8", "replace").strip()
    return text + (" [output cut]" if len(data) > MAX_OUTPUT else "")


def run_command(argv: Sequence[str], cwd: Path | None, env: Mapping[str, str] | None,
                timeout: float) -> CommandResult:
    """Run one program to its end (blocking: worker threads and shutdown only)."""
    program = argv[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        except OSError as exc:
            return CommandResult(program, None, "", "", exc.strerror or str(exc))
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return CommandResult(program, None, _read(out), _read(err),
                                 f"it did not end within {timeout:.0f} s")
        return CommandResult(program, code, _read(out), _read(err))


class Runner:
    def __init__(self, add_reader: Callable[[int, Callable[[], object]], None],
                 env: Mapping[str, str] | None = None, threads: int = 4) -> None:
        self.env = dict(os.environ) if env is None else dict(env)
        self._done: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hq-autoalloc",
                                        initializer=_unblock_stop_signals)
        add_reader(self._wake_r.fileno(), self.drain)
        self.busy = 0

    def run(self, argv: Sequence[str], cwd: Path | None, on_done: Callable[[CommandResult], None],
            timeout: float = QUERY_TIMEOUT) -> None:
        """Run in the background; ``on_done`` gets the result on the server's thread."""
        self.busy += 1
        self._pool.submit(self._work, list(argv), cwd, on_done, timeout)

    def call(self, fn: Callable[[], None]) -> None:
        """Run a blocking chore (removing old directories) in the background."""
        self._pool.submit(self._chore, fn)

    def _chore(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a chore failing must not end the thread
            logger.warning("An automatic allocation chore failed", exc_info=True)

    def _work(self, argv: list[str], cwd: Path | None, on_done: Callable[[CommandResult], None],
              timeout: float) -> None:
        try:
            result = run_command(argv, cwd, self.env, timeout)
        except Exception as exc:  # noqa: BLE001 - report it as the command's failure
            result = CommandResult(argv[0], None, "", "", repr(exc))
        with self._lock:
            self._done.append(lambda: on_done(result))
        with contextlib.suppress(OSError):  # full (the loop drains it) or closed (stopping)
            self._wake_w.send(b"\0")

    def drain(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            with self._lock:
                if not self._done:
                    return
                callback = self._done.popleft()
            self.busy -= 1
            try:
                callback()
            except Exception:  # noqa: BLE001 - the last resort: log, serve on
                logger.exception("Handling a batch system's answer failed")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()


def _unblock_stop_signals() -> None:
    """A command thread's programs (sbatch, qsub, worker stop commands) must take SIGINT and
    SIGTERM as usual; a thread made while the server still held them (serverstart) would pass
    them on blocked."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
