"""A function task's payload and how it is called, on either of the two paths that run it.

The API writes the payload (hqshm/api/function.py, ``PayloadBuilder``): ``pack``'s tuple of the
function, its args and kwargs and the job's initializer (or None), pickled with cloudpickle. The
function and the initializer are each a ``PickledFunction``: pickled once per submit, unpickled
through ``load_function``, which keeps what it loaded, so that an interpreter that runs many
tasks unpickles each function once.

The cold path is HQ's: the task's program starts an interpreter that runs ``task_main``, which
reads the payload from stdin and calls ``run_payload`` once. The warm path (hqshm/node/warm.py)
calls ``run_payload`` inside the node's executor, task after task. Both report an exception with
``report_error``, so the task's error is the same text.

The API and the node share this module, so it sits at the package's root and imports nothing of
hqshm; every cold task imports it before it runs, so it imports little else at the top.
"""

from __future__ import annotations

import os
import pickle
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping, Sequence
    from typing import Any

TASK_CODE = "from hyperqueue.task.function import task_main as m; m()"
"""What a function task's interpreter runs (HQ's code), with the payload on its stdin.

The warm path: a node runs a task inside one of its executors, which already run Python with
hqshm imported, when the task's program is exactly ``[python, "-c", TASK_CODE]`` and ``python``
names the executor's own interpreter: its path (``sys.executable``), another name of it in the
same directory (``python3`` next to ``python``), or a bare name that the task's PATH finds there.
Any other command (``PythonEnv`` with a prologue, another interpreter, other flags) starts an
interpreter as HQ does. A few tasks start one even so, because an interpreter that is already
running cannot honour them: a task whose own environment sets a ``PYTHON*`` variable other than
``PYTHONPATH``, one pinned with ``taskset``, one whose output is streamed, and one given GPUs.
``hqshm.node.warm.is_function_program`` and ``runs_warm`` implement this rule.
"""

MAX_FUNCTIONS = 256  # functions an interpreter keeps unpickled; the oldest goes first
MAX_STATES = 64  # initializers' results an interpreter keeps, one per job

NO_STATE_TEXT = ("hqshm.api.worker_state() has no state to give: it is for function tasks of a "
                 "Job made with initializer=...")


class PickledFunction:
    """A function pickled once (cloudpickle pickles a closure's whole world by value), which
    unpickles through ``load_function`` as the function itself."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return load_function, (self.data,)


_functions: dict[bytes, Callable[..., Any]] = {}  # digest of the pickle -> the function


def load_function(data: bytes) -> Callable[..., Any]:
    """The function of a pickle, unpickled once per interpreter (by a digest, so that the cache
    does not keep every pickle's bytes): its module globals persist from task to task."""
    import hashlib

    key = hashlib.blake2b(data, digest_size=16).digest()
    fn = _functions.get(key)
    if fn is None:
        fn = pickle.loads(data)
        if len(_functions) >= MAX_FUNCTIONS:
            del _functions[next(iter(_functions))]
        _functions[key] = fn
    return fn


def pack(fn: PickledFunction, args: Sequence[Any], kwargs: Mapping[str, Any],
         initializer: PickledFunction | None) -> tuple[Any, ...]:
    """What a payload pickles; ``run_payload`` reads it back."""
    return fn, tuple(args), dict(kwargs), initializer


# -- the job's initializer -------------------------------------------------------------------

_NOT_RUN = object()
_states: dict[Hashable, tuple[Callable[[], Any], Any]] = {}  # job -> (initializer, its result)
_state: Any = _NOT_RUN  # the running task's


def worker_state() -> Any:
    """What the job's initializer returned in this interpreter (``hqshm.api.worker_state``)."""
    if _state is _NOT_RUN:
        raise LookupError(NO_STATE_TEXT)
    return _state


def _initialized(job: Hashable, initializer: Callable[[], Any]) -> Any:
    """The initializer's result for ``job``, calling it the first time (again after it
    raised: the task that called it fails with its error)."""
    kept = _states.get(job)
    if kept is None or kept[0] is not initializer:
        kept = (initializer, initializer())
        if len(_states) >= MAX_STATES and job not in _states:
            del _states[next(iter(_states))]
        _states[job] = kept
    return kept[1]


# -- calling ---------------------------------------------------------------------------------


def run_payload(data: bytes, job: Hashable = None) -> None:
    """Call the payload's function, after the job's initializer if this interpreter has not run
    it for ``job`` yet. Whatever the function raises goes to the caller."""
    global _state
    # Payloads made before initializers (kept in a journal since) have three items.
    fn, args, kwargs, *rest = pickle.loads(data)
    initializer = rest[0] if rest else None
    _state = _NOT_RUN if initializer is None else _initialized(job, initializer)
    fn(*args, **kwargs)


def configure_logging() -> None:
    """Logging of the task from ``HQ_PYLOG`` (DEBUG, INFO, ...), as HQ's task_main does."""
    level = os.environ.get("HQ_PYLOG")
    if level:
        import logging

        logging.basicConfig(level=level.upper())


def error_text(exc: BaseException) -> str:
    """The traceback of ``exc`` from the first frame that is not hqshm's: the user's code (or
    the unpickling), whichever path called it."""
    import traceback

    frames = exc.__traceback__
    while frames is not None and frames.tb_frame.f_globals.get("__name__", "").startswith("hqshm."):
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(exc), exc, frames))


def report_error(exc: BaseException) -> None:
    """The task's error: its traceback to ``$HQ_ERROR_FILENAME`` (the node reports that file's
    text) and to stderr."""
    text = error_text(exc)
    error_file = os.environ.get("HQ_ERROR_FILENAME")
    if error_file:
        with open(error_file, "w") as f:
            f.write(text)
    sys.stderr.write(text)


def task_main() -> None:
    """The cold path: run the payload on stdin; exit 1 with the traceback as the error."""
    try:
        configure_logging()
        run_payload(sys.stdin.buffer.read())
    except Exception as exc:
        report_error(exc)
        sys.exit(1)
