"""Where a task's stdout and stderr go: ``StdioDef`` and the API's default paths.

The API's defaults have no `job-<id>` directory, unlike the CLI's (HQ's Python API does this).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Literal

from hqshm.model.submission import StdioDesc

OnClose = Literal["none", "rm-if-finished"]


DEFAULT_STDOUT = "%{CWD}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/%{TASK_ID}.stderr"


def default_stdout() -> str:
    return DEFAULT_STDOUT


def default_stderr() -> str:
    return DEFAULT_STDERR


@dataclasses.dataclass(frozen=True)
class StdioDef:
    """A path (None: the default one) and what to do with the file when the task ends."""

    path: str | Path | None
    on_close: OnClose

    @staticmethod
    def from_path(path: str | Path) -> StdioDef:
        return StdioDef(path=path, on_close="none")

    @staticmethod
    def remove_if_finished(path: str | Path | None = None) -> StdioDef:
        """The file is removed when the task finishes successfully (kept when it fails)."""
        return StdioDef(path=path, on_close="rm-if-finished")


Stdio = str | Path | StdioDef | None  # what `stdout=` and `stderr=` accept


def as_stdio_def(value: Stdio) -> StdioDef | None:
    """What a task keeps in its ``stdout``/``stderr`` attribute: a StdioDef, or None."""
    if value is None or isinstance(value, StdioDef):
        return value
    if type(value) is str:
        return _from_text(value)
    return StdioDef.from_path(value)


@functools.lru_cache(maxsize=256)
def _from_text(path: str) -> StdioDef:
    """StdioDefs of path strings, shared (they are frozen): every task of a job of a million
    function tasks has the default paths, and two objects each were 180 bytes of the task's
    780."""
    return StdioDef.from_path(path)


def stdio_desc(value: StdioDef | None, default: str) -> StdioDesc:
    """The job model's description: None discards the output."""
    if value is None:
        return StdioDesc(StdioDesc.NONE)
    path = default if value.path is None else str(value.path)
    return StdioDesc(StdioDesc.FILE, path, rm_if_finished=value.on_close == "rm-if-finished")
