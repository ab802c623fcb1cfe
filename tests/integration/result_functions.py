"""Functions whose results the results tests check (imported by reference by the tasks)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FUNCTIONS_PATH = {"PYTHONPATH": str(Path(__file__).parent)}


def add(a: int, b: int = 0) -> int:
    return a + b


def echo(value: Any) -> Any:
    return value


def nothing() -> None:
    return None


def boom(text: str) -> None:
    raise ValueError(text)


def exit_code(code: int) -> None:
    raise SystemExit(code)


def make_array(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype=np.float64)


def array_info(array: Any) -> dict[str, Any]:
    """Whether ``array`` is a view of a shared mapping (no copy) and its sum."""
    import numpy as np

    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    while isinstance(base, memoryview):
        base = base.obj
    return {"sum": float(array.sum()), "writeable": bool(array.flags.writeable),
            "base": type(base).__name__, "pid": os.getpid()}


def unpicklable() -> Any:
    return (x for x in range(3))


def chain(previous: bytes) -> bytes:
    return previous[1:] + previous[:1]


def big(n: int) -> bytes:
    return b"x" * n


def total_length(*blobs: bytes) -> int:
    return sum(len(blob) for blob in blobs)


def wait_for_file(path: str) -> None:
    """Return once ``path`` exists (a gate a test opens)."""
    import time

    while not os.path.exists(path):
        time.sleep(0.02)


def mark(path: str, value: Any) -> int:
    """Leave a trace that this task ran; the size of ``value``."""
    Path(path).write_text("ran")
    return len(value)


def import_numpy(_i: int) -> tuple[int, bool]:
    """(this interpreter's pid, whether numpy was imported in it before this task)."""
    import sys

    before = "numpy" in sys.modules
    import numpy  # noqa: F401

    return os.getpid(), before


def sleep_then(seconds: float, value: Any) -> Any:
    import time

    time.sleep(seconds)
    return value
