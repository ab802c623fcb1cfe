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

import binascii
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
    try:  # not hashlib, which loads OpenSSL (as cluster/digests.py, which this layer may not use)
        from _blake2 import blake2b
    except ImportError:
        from hashlib import blake2b

    key = blake2b(data, digest_size=16).digest()
    fn = _functions.get(key)
    if fn is None:
        fn = pickle.loads(data)
        if len(_functions) >= MAX_FUNCTIONS:
            del _functions[next(iter(_functions))]
        _functions[key] = fn
    return fn


def pack(fn: PickledFunction, args: Sequence[Any], kwargs: Mapping[str, Any],
         initializer: PickledFunction | None, options: Mapping[str, Any] | None = None
         ) -> tuple[Any, ...]:
    """What a payload pickles; ``load_payload`` reads it back. ``options`` (hqshm's, from the
    API's PayloadBuilder): ``args`` (the args and kwargs pickled apart, with tasks given as
    arguments as persistent ids), ``keep`` (store the result on the node: a later task takes
    it as an argument), ``max_result`` (the most bytes of a result sent to the server)."""
    if options is None:
        return fn, tuple(args), dict(kwargs), initializer
    return fn, tuple(args), dict(kwargs), initializer, dict(options)


ENTRY_PREFIX = "hqshm-args:"
"""A function task's own arguments in its HQ_ENTRY (``entry_text``): its payload on stdin is
then the function's alone, the same for every task calling it, so that they share one template
and the server one group (each distinct stdin would be a group of its own)."""


def entry_text(args: bytes, keep: bool) -> str:
    """HQ_ENTRY carrying a task's pickled arguments (text: environment values hold no NUL)."""
    import base64

    return f"{ENTRY_PREFIX}{'k' if keep else '-'}:{base64.b64encode(args).decode()}"


def _read_entry(entry: str | None) -> tuple[bytes, bool]:
    """Per task: binascii's strict mode checks the alphabet in C (``b64decode``'s
    ``validate`` runs a regular expression)."""
    if entry is None or not entry.startswith(ENTRY_PREFIX):
        raise ValueError("the task's arguments are missing (no HQ_ENTRY of hqshm's)")
    flag, _, data = entry[len(ENTRY_PREFIX):].partition(":")
    return binascii.a2b_base64(data, strict_mode=True), flag == "k"


class Call:
    """A payload read back: what to call, and how to treat its result."""

    __slots__ = ("fn", "args", "kwargs", "initializer", "keep", "max_result", "used_entry")

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
                 initializer: Callable[[], Any] | None, keep: bool, max_result: int) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.initializer, self.keep, self.max_result = initializer, keep, max_result
        self.used_entry = False


class _ArgsUnpickler(pickle.Unpickler):
    """Arguments whose persistent ids name tasks of the job: their results."""

    def __init__(self, data: bytes, resolve: Callable[[int], Any] | None) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._resolve = resolve

    def persistent_load(self, pid: Any) -> Any:
        from hqshm import taskresult

        if (not isinstance(pid, tuple) or len(pid) != 2 or pid[0] != taskresult.PERSISTENT_TAG
                or type(pid[1]) is not int):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        if self._resolve is None:
            raise taskresult.ResultError("this task takes results of other tasks, which only "
                                         "a worker's function task can resolve")
        return self._resolve(pid[1])


MAX_PAYLOADS = 16  # shared payloads an interpreter keeps read (``load_payload``)
# A payload that is the function's alone (its tasks' arguments come in their HQ_ENTRY), the
# same bytes for its every task -> what it holds: read once per interpreter, not per task.
_payloads: dict[bytes, tuple[Any, ...]] = {}


def load_payload(data: bytes, resolve: Callable[[int], Any] | None = None,
                 entry: str | None = None) -> Call:
    """Unpickle a payload, with the task's arguments from ``entry`` (its HQ_ENTRY) when the
    payload says they are there; tasks given as arguments become their results through
    ``resolve(task_id)``. Raises what unpickling or resolving raises.

    A payload whose arguments are in the entry holds nothing a task could change (the
    function and initializer are ``load_function``'s, kept anyway), so it is read once; the
    arguments are unpickled anew for each task, as they would be in an interpreter of its own."""
    parts = _payloads.get(data)
    if parts is None:
        parts = _read_payload(data)
        if parts[6]:
            if len(_payloads) >= MAX_PAYLOADS:
                del _payloads[next(iter(_payloads))]
            _payloads[data] = parts
    fn, args, kwargs, initializer, blob, keep, in_entry, max_result = parts
    if in_entry:
        blob, keep = _read_entry(entry)
    if isinstance(blob, bytes):
        args, kwargs = _ArgsUnpickler(blob, resolve).load()
    loaded = Call(fn, args, kwargs, initializer, keep, max_result)
    loaded.used_entry = in_entry
    return loaded


def _read_payload(data: bytes) -> tuple[Any, ...]:
    """The payload's function, args, kwargs, initializer, pickled args (or None), keep,
    whether the args are in the entry, and the result's byte limit."""
    from hqshm import taskresult

    # Payloads made before initializers (kept in a journal since) have three items.
    fn, args, kwargs, *rest = pickle.loads(data)
    initializer = rest[0] if rest else None
    options = rest[1] if len(rest) > 1 and isinstance(rest[1], dict) else {}
    max_result = options.get("max_result", taskresult.DEFAULT_MAX_RESULT)
    return (fn, args, kwargs, initializer, options.get("args"), bool(options.get("keep")),
            options.get("entry") is True,
            max_result if type(max_result) is int else taskresult.DEFAULT_MAX_RESULT)


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


def run_payload(data: bytes, job: Hashable = None,
                resolve: Callable[[int], Any] | None = None) -> Any:
    """Call the payload's function, after the job's initializer if this interpreter has not run
    it for ``job`` yet, and return its value. Whatever the function raises goes to the
    caller."""
    return call(load_payload(data, resolve), job)


def call(loaded: Call, job: Hashable = None) -> Any:
    global _state
    initializer = loaded.initializer
    _state = _NOT_RUN if initializer is None else _initialized(job, initializer)
    return loaded.fn(*loaded.args, **loaded.kwargs)


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
    """The cold path: run the payload on stdin; exit 1 with the traceback as the error. The
    result goes to the task directory's ``hq-result`` for the executor (``write_cold_result``)."""
    loaded = None
    try:
        configure_logging()
        loaded = load_payload(sys.stdin.buffer.read(), _cold_resolver(),
                              os.environ.get("HQ_ENTRY"))
        if loaded.used_entry:  # hqshm's carrier of the arguments, not the task's
            del os.environ["HQ_ENTRY"]
        value = call(loaded)
    except Exception as exc:
        report_error(exc)
        _write_cold_result(1, exc, loaded)
        sys.exit(1)
    _write_cold_result(0, value, loaded)


def _cold_resolver() -> Callable[[int], Any] | None:
    """Results of other tasks from the node's store, which the executor names in
    ``HQSHM_RESULT_STORE`` (directory and server UID) for a function task it starts."""
    store = os.environ.get("HQSHM_RESULT_STORE")
    job = os.environ.get("HQ_JOB_ID", "")
    if not store or not job.isdigit():
        return None
    from hqshm import taskresult

    root, _, uid = store.rpartition(":")
    return taskresult.resolver(root, uid, int(job))


def _write_cold_result(kind: int, value: Any, loaded: Call | None) -> None:
    """``hq-result`` in the task directory: kind, keep, the byte limit, then the blob."""
    task_dir = os.environ.get("HQ_TASK_DIR")
    if not task_dir:
        return
    import struct

    from hqshm import taskresult

    try:
        parts = taskresult.encode_parts(value)
    except taskresult.ResultError as exc:
        if kind == taskresult.EXCEPTION:  # an exception that does not pickle: its text
            parts = taskresult.encode_parts(taskresult.ResultError(repr(value)))
        else:
            report_error(exc)
            sys.exit(1)
    keep = loaded is not None and loaded.keep
    limit = taskresult.DEFAULT_MAX_RESULT if loaded is None else loaded.max_result
    try:
        with open(os.path.join(task_dir, taskresult.RESULT_FILE), "wb") as f:
            f.write(struct.pack("<BBQ", kind, keep, limit))
            for part in parts:
                f.write(part)
    except OSError:
        pass
