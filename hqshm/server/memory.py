"""Handing freed memory back to the system.

glibc keeps what the server freed (the columns and programs of forgotten jobs) in its heap for
later allocations; ``malloc_trim`` returns the free pages, so that `hq job forget` shows in the
server's RSS. Elsewhere (another C library) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> None:
    """Collect cycles, then give free heap pages back (a few ms on a large heap)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
