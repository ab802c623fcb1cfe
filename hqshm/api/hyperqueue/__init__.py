"""HyperQueue's Python package, provided by hqshm: HQ scripts run unchanged.

Each module of HQ's layout re-exports hqshm's API (hqshm/api). This one names its classes
lazily (PEP 562), so that ``import hyperqueue`` stays cheap: function tasks import
``hyperqueue.task.function`` before they run.
"""

from __future__ import annotations

from hqshm.api import get_version

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

_LAZY = {
    "Client": "hqshm.api.client",
    "Job": "hqshm.api.job",
    "LocalCluster": "hqshm.api.localcluster",
}

__all__ = ["Client", "Job", "LocalCluster", "get_version"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hyperqueue' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
