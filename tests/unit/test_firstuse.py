"""cluster/firstuse.py: the server's modules load without numpy, and the first use imports it
with OpenBLAS told to start no threads, the variable gone again afterwards (issue 9, item 3)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import os, sys
import hqshm.server.process
from hqshm.cluster import firstuse
from hqshm.cluster.firstuse import np
print('numpy' in sys.modules, firstuse.loaded(np))
table = np.zeros(3, dtype=np.int64)
print('numpy' in sys.modules, firstuse.loaded(np), type(table).__name__, np is not sys.modules['numpy'])
print(np.random.default_rng(7).integers(10) >= 0, os.environ.get('OPENBLAS_NUM_THREADS'))
print(len(os.listdir('/proc/self/task')))
print(type(np) is type(os), type(firstuse.zmq) is type(os))  # numpy's is a plain module now
"""


def _probe(blas_threads: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if blas_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = blas_threads
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_server_imports_numpy_at_its_first_use_with_no_blas_threads() -> None:
    before, after, submodule, threads, plain = _probe(None)
    assert plain == "True False"  # attribute reads as fast as on numpy; pyzmq still unused
    assert before == "False False"
    assert after == "True True ndarray True"
    assert submodule == "True None"  # numpy's own lazy submodules load; the variable is gone
    assert threads == "1"  # no OpenBLAS thread: the interpreter's own alone


def test_a_users_blas_setting_is_kept() -> None:
    assert _probe("3")[2] == "True 3"
