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


def get_version() -> str:
    """The version of hqshm (HQ's ``get_version`` gives HQ's)."""
    from hqshm import __version__

    return __version__
