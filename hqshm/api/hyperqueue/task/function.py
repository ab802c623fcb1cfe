"""HQ's ``hyperqueue.task.function``: ``task_main`` is what every function task runs first,
so this module imports only hqshm.api.function; ``PythonFunction`` comes when asked for."""

from typing import Any

from hqshm.api.function import PythonEnv, task_main

__all__ = ["PythonEnv", "PythonFunction", "task_main"]  # noqa: F822 - PythonFunction is lazy


def __getattr__(name: str) -> Any:
    if name == "PythonFunction":
        from hqshm.api.tasks import PythonFunction

        return PythonFunction
    raise AttributeError(f"module 'hyperqueue.task.function' has no attribute {name!r}")
