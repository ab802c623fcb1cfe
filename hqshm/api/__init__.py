"""hqshm's Python API: build jobs of programs and Python functions, submit them, wait.

Modules, one job each: ``resources`` (ResourceRequest), ``output`` (StdioDef), ``tasks`` (Task,
ExternalProgram, PythonFunction), ``function`` (PythonEnv, the payload and task_main), ``job``
(Job, SubmittedJob), ``build`` (a Job as the job model's GraphSubmission), ``connection`` (the
requests), ``client`` (Client), ``processes`` and ``localcluster`` (LocalCluster),
``visualization`` and ``errors``. The ``hyperqueue`` package (in ./hyperqueue, installed under
that name) re-exports them in HQ's module layout.

This module stays empty of imports: every function task imports the package before it runs.
The API sits above ``model`` and ``link`` (tests/unit/test_layers.py).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any


def get_version() -> str:
    """The version of hqshm (HQ's ``get_version`` gives HQ's)."""
    from hqshm import __version__

    return __version__


def worker_state() -> Any:
    """Inside a function task: what its job's initializer (``Job(initializer=...)``) returned in
    this interpreter. The initializer runs once per executor of a worker and job, before the
    job's first task there, so its tasks share what it made (a loaded model, a connection); a
    task started in an interpreter of its own (``PythonEnv`` with a prologue) runs it itself.
    Raises ``LookupError`` in a task of a job without an initializer, and outside tasks."""
    from hqshm.functiontask import worker_state as state

    return state()
