"""Functions that the Python API's tests run as function tasks.

Tasks import this module by name (the tests put its folder on the task's PYTHONPATH), as a
script's tasks import the modules it defines its functions in: cloudpickle sends them by
reference, so tracebacks show their source lines.
"""

from __future__ import annotations

import os


def greet(name: str, *, punctuation: str = "!") -> None:
    print(f"Hello {name}{punctuation}")


def fail() -> None:
    raise Exception("MyException")


def write_env(variable: str, path: str) -> None:
    with open(path, "w") as f:
        f.write(os.environ.get(variable, "<unset>"))


def foo_bar_baz() -> None:
    raise ValueError("broken")
