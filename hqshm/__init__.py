"""hqshm: a HyperQueue-compatible task runtime with shared-memory node queues.

The package is layered (docs/architecture.md, enforced by tests/unit/test_layers.py): ``cluster``
(the runtime layer, installed from the repository's cluster/ folder) knows tasks, resources and
workers; ``model`` is the shared job model; ``link`` the client <-> server link; ``node`` and
``server`` the two long-running processes; ``cli`` the `hq` command and ``api`` the Python API
on top of them. This module holds the version and names the API's public classes, imported only
when first used (PEP 562), so that importing any part stays cheap.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

# Public name -> the module of the API that defines it.
_API = {
    "Client": "hqshm.api.client",
    "FailedJobsException": "hqshm.api.errors",
    "FailedTaskContext": "hqshm.api.errors",
    "Job": "hqshm.api.job",
    "SubmittedJob": "hqshm.api.job",
    "get_job_id": "hqshm.api.job",
    "LocalCluster": "hqshm.api.localcluster",
    "WorkerConfig": "hqshm.api.localcluster",
    "ResourceRequest": "hqshm.api.resources",
    "PythonEnv": "hqshm.api.function",
    "StdioDef": "hqshm.api.output",
    "visualize_job": "hqshm.api.visualization",
    "get_version": "hqshm.api",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'hqshm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


class _ClusterBeside:
    """Finds ``hqshm.cluster`` in a checkout: the repository's cluster/ folder, which
    installing puts inside the package. A script run from the repository's root (or
    ``python -c`` there) imports the checkout's hqshm/ folder rather than the installed
    package; without this it failed with "No module named 'hqshm.cluster'"."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        if name != "hqshm.cluster":
            return None
        import importlib.util
        import os

        return importlib.util.spec_from_file_location(
            name, os.path.join(self.folder, "__init__.py"),
            submodule_search_locations=[self.folder])


def _find_cluster_beside() -> None:
    """Where hqshm/ has no cluster/ (a checkout's source folder), look for it beside; last
    among the finders, so that an installed or editable package's own mapping comes first."""
    import os
    import sys

    here = os.path.dirname(__file__)
    if os.path.isdir(os.path.join(here, "cluster")):
        return
    folder = os.path.join(os.path.dirname(here), "cluster")
    if os.path.isfile(os.path.join(folder, "__init__.py")) and not any(
            isinstance(finder, _ClusterBeside) for finder in sys.meta_path):
        sys.meta_path.append(_ClusterBeside(folder))


_find_cluster_beside()
