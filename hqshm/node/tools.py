"""Running a machine's tools at worker start (`nvidia-smi`, `scontrol`, `qstat`...).

A worker must start on a machine whose tools are missing, broken or hung, so a tool is looked
up on the worker's PATH, runs at most a few seconds in a session of its own (a timeout kills
whatever it started too) and every failure is a ``ToolError`` that says why, for the caller to
log as it sees fit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping


class ToolError(Exception):
    """Why a tool gave no answer; ``missing``: it is not on PATH (often not a problem)."""

    def __init__(self, message: str, *, missing: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
        self.timed_out = timed_out


def call(argv: list[str], env: Mapping[str, str], timeout: float) -> str:
    """Stdout of ``argv`` (its program found on ``env``'s PATH); raises ``ToolError``."""
    path = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if path is None:
        raise ToolError(f"{argv[0]} is not on PATH", missing=True)
    try:
        # A session of its own, so that a timeout kills whatever the tool started too (a
        # grandchild holding the pipe would otherwise block us past the timeout).
        proc = subprocess.Popen(
            [path, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolError(f"Cannot run {argv[0]}: {exc}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ToolError(f"{argv[0]} did not answer within {timeout:g} s",
                        timed_out=True) from None
    if proc.returncode != 0:
        raise ToolError(f"{argv[0]} exited with {proc.returncode}: "
                        f"{err.decode(errors='replace').strip()[:200]}")
    return out.decode(errors="replace")
