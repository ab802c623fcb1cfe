"""Function tasks end to end: the interpreter command, the payload, and ``task_main``.

A function task is a program task: the command of ``PythonEnv`` runs ``task_main``, which reads
the payload (the function, its args and kwargs, cloudpickled) from stdin and calls the function.
An exception becomes the task's error: its traceback goes to ``$HQ_ERROR_FILENAME`` (the task
always has a task directory), which the executor reports instead of the exit code.

Everything about the payload's format lives here, so that running function tasks in the node's
warm interpreters later changes one module. Every task imports this module before it runs, so it
imports nothing heavy at the top (cloudpickle only where a payload is made).
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

TASK_CODE = "from hyperqueue.task.function import task_main as m; m()"


def default_python() -> str:
    """This interpreter when hqshm is installed in it, else HQ's ``python3``.

    HQ runs ``python3``, which is often not the interpreter that has the package (a venv that
    is used but not activated, a system python3 next to a conda one): the task would fail with
    an import error. The interpreter running the client has it, and on the nodes of a cluster
    it is usually the same path on a shared file system.
    """
    import importlib.metadata
    import site

    # Only the site directories: a source checkout on sys.path has metadata of its own.
    sites = [d for d in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(d)]
    found = importlib.metadata.distributions(name="hqshm", path=sites)
    installed = next(iter(found), None) is not None
    return sys.executable if installed and sys.executable else "python3"


class PythonEnv:
    """How a function task starts its interpreter.

    ``python_bin`` None: ``python3`` when there is a prologue (it usually activates the
    environment to use), else ``default_python()``. HQ's default is always ``python3``.
    """

    def __init__(self, python_bin: str | None = None, prologue: str | None = None,
                 shell: str = "bash") -> None:
        if python_bin is None:
            python_bin = "python3" if prologue else default_python()
        self.python_bin: str = python_bin
        self.prologue = prologue
        self.shell = shell

    def __repr__(self) -> str:
        return (f"PythonEnv(python_bin={self.python_bin!r}, prologue={self.prologue!r}, "
                f"shell={self.shell!r})")

    def command(self) -> list[str]:
        if self.prologue is None:
            return [self.python_bin, "-c", TASK_CODE]
        return [self.shell, "-c", f'{self.prologue}\n\n{self.python_bin} -c "{TASK_CODE}"']


# -- the payload -----------------------------------------------------------------------------


class _PickledFunction:
    """A function pickled once (cloudpickle pickles a closure's whole world by value); it
    unpickles as the function itself, so the payload is plain ``(fn, args, kwargs)``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return pickle.loads, (self.data,)


class PayloadBuilder:
    """Payloads of one submit: each function object is pickled once, however many tasks
    call it."""

    def __init__(self) -> None:
        self._functions: dict[int, tuple[Callable[..., Any], _PickledFunction]] = {}

    def payload(self, fn: Callable[..., Any], args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> bytes:
        import cloudpickle  # only jobs with function tasks need it

        try:
            cached = self._functions.get(id(fn))
            if cached is None:  # the function is kept with its pickle: its id stays its own
                cached = (fn, _PickledFunction(cloudpickle.dumps(fn)))
                self._functions[id(fn)] = cached
            payload: bytes = cloudpickle.dumps((cached[1], tuple(args), dict(kwargs)))
            return payload
        except Exception as exc:  # pickling runs the user's __reduce__ methods: anything
            from hqshm.api.errors import Unpicklable

            raise Unpicklable(function=getattr(fn, "__name__", repr(fn)), error=exc) from None


# -- inside the task -------------------------------------------------------------------------


def task_main() -> None:
    """Run the function of the payload on stdin; exit 1 with its traceback as the error."""
    try:
        level = os.environ.get("HQ_PYLOG")
        if level:
            import logging

            logging.basicConfig(level=level.upper())
        fn, args, kwargs = pickle.loads(sys.stdin.buffer.read())
        fn(*args, **kwargs)
    except Exception as exc:
        import traceback

        # The frames below this one: the user's code (or the unpickling), not hqshm's.
        frames = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        text = "".join(traceback.format_exception(type(exc), exc, frames))
        error_file = os.environ.get("HQ_ERROR_FILENAME")
        if error_file:
            with open(error_file, "w") as f:
                f.write(text)
        sys.stderr.write(text)
        sys.exit(1)
