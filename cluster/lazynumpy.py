"""numpy, imported at its first use instead of with the module that names it.

numpy takes 30-80 ms to import on a small node, as long as the rest of the server's modules
together, and a server needs none of it to start, bind its sockets and register workers: only
jobs' task tables are arrays. The server's modules name this ``np``; the first attribute read
imports numpy and copies its namespace into this module object, so every later ``np.x`` is a
plain module attribute lookup, as fast as with numpy itself. ``load`` imports it ahead of need,
when a server has nothing else to do.

The server multiplies no matrices, so the import tells OpenBLAS to start no threads: by default
it starts one a core when it loads, 127 of them on a 128-core login node. The variable is set
for the import alone, where the user set none, and never reaches a task.
"""

from __future__ import annotations

import os
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["load", "loaded", "np"]


class _FirstUseImport(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        # Only reached for names not in this object's namespace yet: before the import, and
        # numpy's own lazily imported submodules after it.
        if "ndarray" not in self.__dict__:
            self.__dict__.update(vars(_import_numpy()))
        value = getattr(sys.modules["numpy"], name)
        setattr(self, name, value)
        return value


def _import_numpy() -> types.ModuleType:
    unset = "OPENBLAS_NUM_THREADS" not in os.environ
    if unset:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy
    finally:
        if unset:
            del os.environ["OPENBLAS_NUM_THREADS"]
    return numpy


if TYPE_CHECKING:
    import numpy as np
else:
    np = _FirstUseImport("numpy")


def loaded() -> bool:
    return "ndarray" in vars(np)


def load() -> None:
    """Import numpy now, if it was not yet."""
    np.ndarray  # noqa: B018 - the read is the import
