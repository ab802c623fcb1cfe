"""Function tasks on the API's side: the interpreter command (``PythonEnv``) and the payload.

A function task is a program task: the command of ``PythonEnv`` runs ``task_main``, which reads
the payload (the function, its args and kwargs, and the job's initializer, cloudpickled) from
stdin and calls the function. A node runs the tasks whose command is the plain form with its own
interpreter inside its executors instead (the warm path, hqshm/functiontask.py's ``TASK_CODE``).
An exception becomes the task's error: its traceback goes to ``$HQ_ERROR_FILENAME`` (the task
always has a task directory), which the executor reports instead of the exit code.

The payload's format and ``task_main`` live in hqshm/functiontask.py, which the node shares.
Every cold task imports this module before it runs, so it imports nothing heavy at the top
(cloudpickle only where a payload is made).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from hqshm import taskresult
from hqshm.errors import UserError
from hqshm.functiontask import TASK_CODE, PickledFunction, entry_text, pack, task_main

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

__all__ = ["TASK_CODE", "PayloadBuilder", "PythonEnv", "default_python", "task_main"]


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


# Pickled arguments up to this size go in the task's HQ_ENTRY (base64: 4/3 of it, within the
# 128 KiB that one environment value may have).
MAX_ENTRY_ARGS = 64 * 1024

# -- the payload -----------------------------------------------------------------------------


class PayloadBuilder:
    """Payloads of one submit: each function object (and the job's ``initializer``) is pickled
    once, however many tasks call it.

    ``prepare`` pickles every function task's args and kwargs first, with the job's function
    tasks found in them as references (persistent ids): it gives each task the tasks whose
    results it takes (dependencies the build adds), and the tasks so referenced keep their
    results on their node for it (``keep``: hqshm/taskresult.py)."""

    def __init__(self, initializer: Callable[[], Any] | None = None,
                 max_result: int | None = None) -> None:
        self._functions: dict[int, tuple[Callable[..., Any], PickledFunction]] = {}
        self.initializer = initializer
        self.max_result = max_result
        self._args: dict[int, bytes] = {}
        self._common: dict[int, bytes] = {}  # function -> its payload without arguments
        self._referenced: set[int] = set()

    def prepare(self, tasks: Sequence[Any], owns: Callable[[Any], bool]) -> dict[int, list[int]]:
        """Pickle the args of the function tasks among ``tasks``; task id -> the ids of the
        tasks it takes as arguments. ``owns(task)``: whether a task belongs to the job."""
        import io

        import cloudpickle

        from hqshm.api.tasks import PythonFunction, Task

        refs: dict[int, list[int]] = {}
        found: list[int] = []

        class ArgsPickler(cloudpickle.CloudPickler):  # type: ignore[misc]
            def persistent_id(self, obj: Any) -> Any:
                if not isinstance(obj, Task):
                    return None
                if not isinstance(obj, PythonFunction) or not owns(obj):
                    from hqshm.api.errors import NotAResult

                    raise NotAResult(task=repr(obj))
                found.append(obj.task_id)
                return (taskresult.PERSISTENT_TAG, obj.task_id)

        for task in tasks:
            if not isinstance(task, PythonFunction):
                continue
            found.clear()
            buffer = io.BytesIO()
            try:
                ArgsPickler(buffer, protocol=5).dump((tuple(task.args), dict(task.kwargs)))
            except UserError:
                raise
            except Exception as exc:
                raise _unpicklable(task.fn, exc) from None
            self._args[task.task_id] = buffer.getvalue()
            if found:
                refs[task.task_id] = list(dict.fromkeys(found))
                self._referenced.update(found)
        return refs

    def payload_of(self, task_id: int, fn: Callable[..., Any], args: Sequence[Any],
                   kwargs: Mapping[str, Any]) -> tuple[bytes, str | None]:
        """A prepared task's stdin and HQ_ENTRY. Arguments that fit go in the entry and the
        stdin is the function's alone, the same for every task calling it (one template, one
        group on the server); larger ones go with the function on stdin."""
        blob = self._args.pop(task_id, None)
        if blob is None:
            return self.payload(fn, args, kwargs), None
        keep = task_id in self._referenced
        if len(blob) <= MAX_ENTRY_ARGS:
            common = self._common.get(id(fn))
            if common is None:
                common = self._common[id(fn)] = self._pack(fn, (), {}, self._options(entry=True))
            return common, entry_text(blob, keep)
        return self._pack(fn, (), {}, self._options(args=blob, keep=keep)), None

    def _options(self, **options: Any) -> dict[str, Any]:
        if self.max_result is not None:
            options["max_result"] = self.max_result
        return options

    def payload(self, fn: Callable[..., Any], args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> bytes:
        return self._pack(fn, args, kwargs, None)

    def _pack(self, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
              options: dict[str, Any] | None) -> bytes:
        import cloudpickle  # only jobs with function tasks need it

        init = None if self.initializer is None else self._pickled(self.initializer)
        pickled = self._pickled(fn)
        try:
            payload: bytes = cloudpickle.dumps(pack(pickled, args, kwargs, init, options))
            return payload
        except Exception as exc:  # pickling runs the user's __reduce__ methods: anything
            raise _unpicklable(fn, exc) from None

    def _pickled(self, fn: Callable[..., Any]) -> PickledFunction:
        import cloudpickle

        cached = self._functions.get(id(fn))
        if cached is None:  # the function is kept with its pickle: its id stays its own
            try:
                cached = (fn, PickledFunction(cloudpickle.dumps(fn)))
            except Exception as exc:
                raise _unpicklable(fn, exc) from None
            self._functions[id(fn)] = cached
        return cached[1]


def _unpicklable(fn: Callable[..., Any], exc: Exception) -> Exception:
    from hqshm.api.errors import Unpicklable

    return Unpicklable(function=getattr(fn, "__name__", repr(fn)), error=exc)
