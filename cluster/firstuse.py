"""numpy and pyzmq, imported at their first use instead of with the modules that name them.

numpy takes 30-80 ms to import on a small node, as long as the rest of the server's modules
together, and a server needs none of it to start, bind its sockets and register workers: only
jobs' task tables are arrays. A node needs no pyzmq until it connects, after it has forked its
executors, which then do not carry pyzmq's 4 MB (each counts it again in its memory). Modules
name these stand-ins ``np`` and ``zmq``; the first attribute read imports the real module and
copies its namespace into the stand-in, which then becomes a plain module: every later
``np.x`` is a module attribute lookup, as fast as with the module itself. ``load`` imports
one ahead of need.

The server multiplies no matrices, so numpy's import tells OpenBLAS to start no threads: by
default it starts one a core when it loads, 127 of them on a 128-core login node. The variable
is set for the import alone, where the user set none, and never reaches a task.
"""

from __future__ import annotations

import os
import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["load", "loaded", "np", "zmq"]


class _FirstUseImport(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        # Only reached for names not in this object's namespace: before the import.
        if not loaded(self):
            self.__dict__.update(vars(_import(self.__name__)))
            # A plain module from now on. A class with __getattr__ makes every attribute read
            # go through Python's slower hook (the server's scheduling step took 30% longer);
            # the module's own __getattr__, copied with its namespace, still serves its lazily
            # imported submodules.
            self.__class__ = types.ModuleType  # type: ignore[assignment]
        return getattr(sys.modules[self.__name__], name)


def _import(name: str) -> types.ModuleType:
    unset = name == "numpy" and "OPENBLAS_NUM_THREADS" not in os.environ
    if unset:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        __import__(name)
    finally:
        if unset:
            del os.environ["OPENBLAS_NUM_THREADS"]
    return sys.modules[name]


if TYPE_CHECKING:
    import numpy as np
    import zmq
else:
    np = _FirstUseImport("numpy")
    zmq = _FirstUseImport("zmq")


def loaded(module: types.ModuleType) -> bool:
    """Whether the module behind a stand-in was imported (a real module always was)."""
    return "__file__" in vars(module)


def load(module: types.ModuleType) -> None:
    """Import the module behind a stand-in now, if it was not yet."""
    if not loaded(module):
        module.__file__  # noqa: B018 - not in a stand-in's namespace: the read imports it
