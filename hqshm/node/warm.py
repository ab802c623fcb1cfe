"""Function tasks inside the executor: the warm path (docs/architecture.md).

An executor already runs Python with hqshm imported. A function task whose command is the plain
interpreter command with the executor's own interpreter (hqshm/functiontask.py, ``TASK_CODE``,
states the rule) runs in it instead of in an interpreter of its own: no interpreter start, and
what the function imports stays imported for the next task. What the task observes is the cold
path's. The executor takes on, in the order of a program's launch, a process group of its own
(the node's signals reach it and the processes the function starts, as they reach a program's
session), the task's CPUs and memory policy, working directory, stdin (/dev/null: the payload
comes with the group's program), stdout and stderr files; then the task's environment, and
``sys.path``, ``sys.argv``, standard streams, root logger and SIGINT handler as a fresh
interpreter has them. It calls the function and puts all of it back (also the warning filters,
umask and the handlers of the signals the executor relies on), whatever the function did short of
ending the process.

Two things are not put back, because doing so costs more than the task: the environment and
the CPU affinity. Each task changes only what differs from the task before (``putenv`` costs
microseconds a variable, and a task has dozens; moving to other CPUs costs hundreds), after
checking that the function before did not change them itself. After a task of the same group
only the variables that can differ between its tasks are compared (``launch.TASK_VARIABLES``
and the task's resources'). Signal handlers are read and set through ``_signal``, whose
callers in ``signal`` cost ten times as much for their enums. Nothing else in an executor reads
its environment (programs get theirs whole). The CPUs are the executor's own
(``affinity.OwnCpus``), which its program tasks move as well: an unpinned task's takes it home.

Interrupts: the node interrupts a task with SIGINT to its process group, here the executor's.
It marks the task's key on the control page first (hqshm/node/pool.py), and the executor raises
KeyboardInterrupt in the function only if it still runs that key: a late signal meant for the
task before must not hit the next one. SIGKILL (after the grace period, or a function that
ignores KeyboardInterrupt) ends the executor with its task, and the pool starts a new one; so
does a function that calls ``os._exit`` or crashes.
"""

from __future__ import annotations

import _signal  # signal's C functions: its wrappers convert to enums, 5 us a call
import contextlib
import errno
import functools
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any, TextIO

from hqshm import errors, functiontask, taskresult
from hqshm.cluster.frozen import field, frozen
from hqshm.model.program import PinMode, ProgramSpec, Stdio
from hqshm.node import affinity
from hqshm.node.affinity import SpawnError, SpawnStage
from hqshm.node.launch import LaunchPlan

OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # as a program's launch
# CUDA and ROCm read which devices they may use once per process, at their first use.
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
# Handlers the executor relies on: its SIGINT (ignored) and SIGTERM (the node's death),
# SIGCHLD (waitpid of the programs it spawns), SIGPIPE (ignored, as Python sets it).
KEPT_SIGNALS = (int(signal.SIGINT), int(signal.SIGTERM), int(signal.SIGCHLD),
                int(signal.SIGPIPE))
_SIGINT = int(signal.SIGINT)
_MEM_POLICIES = {int(mode): mode for mode in affinity.MemPolicy}  # an enum's call costs 1 us
# The CPUs this process may run on, as a set (without the C module's list: 3 us against 0.4).
_sched_getaffinity = getattr(os, "sched_getaffinity", None)


# -- which tasks ---------------------------------------------------------------------------


def is_function_program(spec: ProgramSpec, base_env: Mapping[str, str]) -> bool:
    """Whether a group's tasks run inside the executor (``TASK_CODE`` states the rule).

    Decided once per group. ``PYTHON*`` variables configure an interpreter as it starts, so a
    task that sets its own starts its own (``PYTHONPATH`` excepted: it goes on ``sys.path``)."""
    args = spec.args
    if len(args) != 3 or args[1] != "-c" or args[2] != functiontask.TASK_CODE:
        return False
    if spec.pin == PinMode.TASKSET:  # the program would run under `taskset`
        return False
    if spec.stream_dir and Stdio.STREAM in (spec.stdout.kind, spec.stderr.kind):
        return False  # streamed channels are pipes that the executor reads as the task runs
    if any(name.startswith("PYTHON") and name != "PYTHONPATH" for name in spec.env):
        return False
    return _runs_this_interpreter(
        args[0], spec.env.get("PATH", base_env.get("PATH", affinity.DEFAULT_PATH)))


def runs_warm(resource_env: Mapping[str, str]) -> bool:
    """Whether a task of a function group runs warm: not when it was given GPUs, which an
    executor that used others before could not honour."""
    return not any(name in resource_env for name in GPU_VARIABLES)


@functools.lru_cache(maxsize=64)
def _runs_this_interpreter(python: str, path: str) -> bool:
    """``python`` (with the task's ``path``) is this interpreter; asked once per group, and the
    groups of a job of function tasks are many (every task whose arguments differ is one)."""
    program = python if os.sep in python else _on_path(python, path)
    return program is not None and _is_own_interpreter(program)


def _on_path(name: str, path: str) -> str | None:
    """Where exec finds ``name`` on ``path``; None also when a relative directory comes first
    (relative to the task's working directory, which may differ from task to task)."""
    for directory in path.split(os.pathsep):
        if not os.path.isabs(directory):
            return None
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _is_own_interpreter(program: str) -> bool:
    """``program`` is this interpreter: the same file, reached from the same directory (a venv's
    ``python`` and ``python3`` are one interpreter with one environment; the system's
    ``python3`` that a venv's link points to is another environment)."""
    own = sys.executable
    if not own or not os.path.isabs(program):
        return False
    program, own = os.path.normpath(program), os.path.normpath(own)
    return (os.path.dirname(program) == os.path.dirname(own)
            and os.path.realpath(program) == os.path.realpath(own))


# -- running one -----------------------------------------------------------------------------


@frozen
class FunctionCall:
    """One function task as the warm path runs it."""

    payload: bytes = field(repr=False)
    job: Hashable  # whose initializer's result the task shares: (server uid, job id)
    plan: LaunchPlan
    cpus: Sequence[int] | None  # None: not pinned
    numa: int | None  # the NUMA node to bind memory to
    mem_mode: int  # affinity.MemPolicy value
    # The results of tasks given as arguments, by task id (hqshm/taskresult.py's resolver).
    resolve: Callable[[int], Any] | None = None
    entry: str | None = None  # HQ_ENTRY: the task's own arguments (functiontask.entry_text)
    # The task's program (the same object for each task of its group), and the variables of
    # ``plan.env`` that can differ between two tasks of it (hqshm/node/launch.py's).
    group: object = None
    varying: Collection[str] = ()


@frozen
class Outcome:
    """What the function gave: its value or the exception it raised (``taskresult`` kinds),
    with the payload's ``keep`` and ``max_result`` (defaults when the payload did not load)."""

    kind: int
    value: Any
    keep: bool = False
    max_result: int = taskresult.DEFAULT_MAX_RESULT


@frozen
class Ending:
    """How the task's interpreter would have ended: its exit code, or the signal; and the
    function's outcome when it returned or raised an Exception."""

    code: int = 0
    signum: int = 0
    outcome: Outcome | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.signum == 0

    def error(self) -> str:
        """The task's error when it wrote none to its error file: a program's end in HQ's
        words."""
        if self.signum:
            return errors.signal_error(self.signum)
        return errors.exit_code_error(self.code)


@frozen
class _Saved:
    """The executor's own state, saved at its first function task."""

    pid: int
    pgid: int
    cwd: int  # an fd of the working directory: fchdir works even if it was renamed
    fds: tuple[int | None, ...]  # copies of fds 0-2 (None: closed)
    devnull: int
    path_tail: list[str]  # sys.path after its first entry, less the executor's PYTHONPATH
    path: list[str]
    argv: list[str]
    streams: tuple[Any, Any, Any]  # sys.stdin, sys.stdout, sys.stderr
    log_handlers: list[logging.Handler]
    log_level: int
    warning_filters: list[Any]
    signals: dict[int, Any]
    umask: int


class WarmRunner:
    """Runs function tasks in this process, one at a time (an executor's)."""

    def __init__(self, cpus: affinity.OwnCpus | None = None) -> None:
        self._saved: _Saved | None = None
        self._environment: _Environment | None = None
        self.cpus = cpus or affinity.OwnCpus()  # the executor's, shared with its programs
        # sys.path of the last task's PYTHONPATH, PYTHONSAFEPATH and working directory.
        self._path: tuple[tuple[str, bool, str], tuple[str, ...]] | None = None
        self._interrupt_handler = self._on_interrupt  # one bound method for every task
        self._streams: list[TextIO] = []
        self.running = False  # between taking on a task and putting the executor back
        self._armed = False  # SIGINT may raise KeyboardInterrupt (once)
        self._interrupted: Callable[[], bool] = bool

    def run(self, call: FunctionCall, started: Callable[[], None],
            interrupted: Callable[[], bool]) -> Ending:
        """Take the task on, call ``started``, run it, put the executor back. ``interrupted``
        says whether the node interrupts this task. Raises SpawnError, at the stage a program's
        launch would have failed at, when the task cannot be set up."""
        saved = self._saved or self._save()
        self._interrupted = interrupted
        try:
            self._enter(call, saved)
            started()
            ending = self._call(call)
            if os.getpid() != saved.pid:  # the function forked, and its child returned here
                _leave_process(ending)
            return ending
        finally:
            self._leave(call, saved)

    # -- before --

    def _save(self) -> _Saved:
        own_path = {os.path.abspath(p)
                    for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
        tail = sys.path if sys.flags.safe_path else sys.path[1:]
        root = logging.getLogger()
        self._saved = _Saved(
            pid=os.getpid(), pgid=os.getpgid(0),
            cwd=os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
            fds=tuple(_copy_fd(fd) for fd in (0, 1, 2)),
            devnull=os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC),
            path_tail=[p for p in tail if p not in own_path],
            path=sys.path, argv=sys.argv, streams=(sys.stdin, sys.stdout, sys.stderr),
            log_handlers=root.handlers, log_level=root.level,
            warning_filters=list(warnings.filters),
            signals={sig: _signal.getsignal(sig) for sig in KEPT_SIGNALS}, umask=_umask())
        self._environment = _Environment()
        return self._saved

    def _enter(self, call: FunctionCall, saved: _Saved) -> None:
        plan = call.plan
        program = plan.argv[0]
        for stream in saved.streams[1:]:  # what the executor wrote is not the task's output
            try:  # noqa: SIM105 - per task: suppress() costs more than the call
                stream.flush()
            except Exception:  # whatever the stream is now
                pass
        self.running = True
        try:  # noqa: SIM105 - per task: suppress() costs more than the call
            os.setpgid(0, 0)
        except OSError:  # a session leader already leads its group
            pass
        if call.cpus != self.cpus.cpus:  # per task: no call when they stay
            _step(SpawnStage.AFFINITY, program, self.cpus.move, call.cpus)
        if call.numa is not None:
            _step(SpawnStage.MEMPOLICY, program, affinity.set_memory_policy,
                  _MEM_POLICIES[call.mem_mode], call.numa)
        _step(SpawnStage.CWD, program, os.chdir, plan.cwd)
        os.dup2(saved.devnull, 0)
        self._redirect(plan.stdout, 1, SpawnStage.STDOUT, program, saved)
        self._redirect(plan.stderr, 2, SpawnStage.STDERR, program, saved)
        assert self._environment is not None
        self._environment.become(plan.env, call.group, call.varying)
        self._fresh_interpreter(plan.env, plan.cwd, saved)

    @staticmethod
    def _redirect(path: str | None, fd: int, stage: SpawnStage, program: str,
                  saved: _Saved) -> None:
        if path is None:
            os.dup2(saved.devnull, fd)
            return
        opened = _step(stage, program, os.open, path, OUTPUT_FLAGS, 0o666)
        os.dup2(opened, fd)
        os.close(opened)

    def _fresh_interpreter(self, env: Mapping[str, str], cwd: str, saved: _Saved) -> None:
        """``sys`` and logging as ``python -c`` with this environment starts them (in the
        working directory ``cwd``, against which PYTHONPATH's relative entries count)."""
        key = (env.get("PYTHONPATH", ""), bool(env.get("PYTHONSAFEPATH")), cwd)
        if self._path is None or self._path[0] != key:
            pythonpath = [os.path.abspath(p) for p in key[0].split(os.pathsep) if p]
            self._path = (key, (*([] if key[1] else [""]), *pythonpath, *saved.path_tail))
        sys.path = list(self._path[1])
        sys.argv = ["-c"]
        sys.stdin, sys.stdout, sys.stderr = self._task_streams(saved)
        root = logging.root
        root.handlers = []
        # Not setLevel, which clears every logger's cache of enabled levels (most of a task's
        # set-up): the executor's loggers log only between tasks and the tasks' only during
        # them, each under one level of the root, so each cache stays right. ``_leave``
        # clears them all when a task changed the level (HQ_PYLOG's basicConfig does).
        root.level = logging.WARNING
        _signal.signal(_SIGINT, self._interrupt_handler)

    def _task_streams(self, saved: _Saved) -> list[TextIO]:
        """Text streams on fds 0-2 like a fresh interpreter's, made once (again if the function
        closed one): making them costs more than the rest of a task's set-up."""
        streams = self._streams
        if not streams or streams[0].closed or streams[1].closed or streams[2].closed:
            like = saved.streams[1]
            encoding = getattr(like, "encoding", None) or "utf-8"
            handling = getattr(like, "errors", None) or "strict"
            self._streams = [
                _stream(0, "r", encoding, handling),
                _stream(1, "w", encoding, handling),
                _stream(2, "w", encoding, "backslashreplace", line_buffered=True),
            ]
        return self._streams

    # -- the call --

    def _on_interrupt(self, _signum: int, _frame: object) -> None:
        if self._armed and self._interrupted():
            self._armed = False
            raise KeyboardInterrupt

    def _call(self, call: FunctionCall) -> Ending:
        try:
            return self._armed_call(call)
        except KeyboardInterrupt as exc:  # it came as the call ended: still the task's end
            _print_traceback(exc)
            return Ending(signum=signal.SIGINT)

    def _armed_call(self, call: FunctionCall) -> Ending:
        """The function's end, its threads joined, as the cold interpreter's would be."""
        before = _threads()
        self._armed = True
        try:
            if self._interrupted():  # the node's signal came before we were armed
                raise KeyboardInterrupt
            ending = _call_function(call)
            _join_new_threads(before)  # as an interpreter does before it exits
            return ending
        except KeyboardInterrupt as exc:
            _print_traceback(exc)
            return Ending(signum=signal.SIGINT)
        finally:
            self._armed = False

    # -- after --

    def _leave(self, call: FunctionCall, saved: _Saved) -> None:
        """Put the executor back, whatever the function did (each system call on its own: one
        failing skips no other)."""
        self._armed = False
        for sig, handler in saved.signals.items():
            if _signal.getsignal(sig) != handler:
                try:  # noqa: SIM105 - per task: suppress() costs more than the call
                    _signal.signal(sig, handler)
                except (OSError, ValueError):
                    pass
        out, err = sys.stdout, sys.stderr
        streams = self._streams[1:]  # the task's stdout and stderr (its stdin has nothing)
        if len(streams) != 2 or streams[0] is not out or streams[1] is not err:
            # The function put its own in place: those too (by identity: theirs may not compare).
            streams = list({id(s): s for s in (*streams, out, err)}.values())
        for stream in streams:
            try:  # noqa: SIM105 - per task: suppress() costs more than the call
                stream.flush()
            except Exception:  # whatever the function made of it
                pass
        sys.stdin, sys.stdout, sys.stderr = saved.streams
        sys.path, sys.argv = saved.path, saved.argv
        root = logging.root
        root.handlers = saved.log_handlers
        if root.level == logging.WARNING:
            root.level = saved.log_level
        else:
            root.setLevel(saved.log_level)
        if warnings.filters != saved.warning_filters:
            warnings.filters[:] = saved.warning_filters
            warnings._filters_mutated()  # type: ignore[attr-defined]  # as catch_warnings does
        os.umask(saved.umask)
        for fd, kept in enumerate(saved.fds):
            try:
                if kept is None:
                    os.close(fd)
                else:
                    os.dup2(kept, fd)
            except OSError:
                pass
        try:  # noqa: SIM105 - per task: suppress() costs more than the call
            os.fchdir(saved.cwd)
        except OSError:
            pass
        self._check_affinity()
        if call.numa is not None:
            with contextlib.suppress(OSError):
                affinity.set_memory_policy(affinity.MemPolicy.DEFAULT, None)
        self._leave_group(saved)
        self.running = False

    def _check_affinity(self) -> None:
        """Back to the executor's own CPUs if the function changed the ones it was given."""
        try:
            now = (_sched_getaffinity(0) if _sched_getaffinity is not None
                   else set(affinity.get_affinity()))
            if now != self.cpus.cpu_set:
                self.cpus.go_home()
        except OSError:
            pass

    def _leave_group(self, saved: _Saved) -> None:
        """Back into the node's process group. What an interrupted function left in its own
        is killed, as the node kills what a killed program left in its session."""
        try:  # noqa: SIM105 - per task: suppress() costs more than the call
            os.setpgid(0, saved.pgid)
        except OSError:
            pass
        if self._interrupted() and os.getpgid(0) != saved.pid:
            with contextlib.suppress(OSError):
                os.killpg(saved.pid, signal.SIGKILL)


class _Environment:
    """``os.environ`` as the last function task left it, made each next task's by changing
    only what differs."""

    def __init__(self) -> None:
        # CPython's encoded copy of the environment, compared whole in microseconds: decoding
        # it (os.environ.copy()) costs a hundred.
        self._raw: dict[bytes, bytes] = getattr(os.environ, "_data")  # noqa: B009
        self._now: Mapping[str, str] = dict(os.environ)
        self._raw_now = dict(self._raw)
        self._group: object = None  # the program of the task that ``_now`` is of
        self._varying: Collection[str] = ()  # the names that can differ in its next task

    def become(self, env: Mapping[str, str], group: object = None,
               varying: Collection[str] = ()) -> None:
        """``env`` of a task of ``group`` (its program), in which only the names in ``varying``
        can differ from one task of the group to the next: after a task of the same group
        that left the environment alone, only those are compared (a dozen against some fifty
        names)."""
        environ, now = os.environ, self._now
        if self._raw != self._raw_now:  # the function before changed it
            now = self._now = dict(os.environ)
        elif group is not None and group is self._group:
            for name in varying if varying is self._varying else {*varying, *self._varying}:
                value = env.get(name)
                if value is None:
                    if name in now:
                        environ.pop(name, None)
                elif now.get(name) != value:
                    environ[name] = value
            self._now, self._varying = env, varying
            self._raw_now = dict(self._raw)
            return
        self._group, self._varying = group, varying
        for name in now.keys() - env.keys():
            environ.pop(name, None)
        for name, value in env.items():
            if now.get(name) != value:
                environ[name] = value
        self._now = env
        self._raw_now = dict(self._raw)


# -- helpers ---------------------------------------------------------------------------------


def _step(stage: SpawnStage, program: str, action: Callable[..., Any], *args: Any) -> Any:
    """One set-up step; its OSError as the SpawnError a program's launch raises there."""
    try:
        return action(*args)
    except OSError as exc:
        raise SpawnError(stage, exc.errno or errno.EINVAL, program) from None


def _stream(fd: int, mode: str, encoding: str, errors: str, line_buffered: bool = False
            ) -> TextIO:
    """A text stream on ``fd`` that the executor keeps from task to task."""
    return open(fd, mode, buffering=1 if line_buffered else -1,  # noqa: SIM115
                encoding=encoding, errors=errors, closefd=False)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _copy_fd(fd: int) -> int | None:
    try:
        return os.dup(fd)
    except OSError:
        return None


def _call_function(call: FunctionCall) -> Ending:
    """Run the payload; its end as the cold interpreter's: ``task_main`` reports an
    Exception, the interpreter ends with SystemExit's code, or prints what else escaped and
    exits 1. KeyboardInterrupt goes to the caller."""
    loaded = None
    try:
        if call.plan.env.get("HQ_PYLOG"):  # os.environ's now, read in a tenth of the time
            functiontask.configure_logging()
        loaded = functiontask.load_payload(call.payload, call.resolve, call.entry)
        value = functiontask.call(loaded, call.job)
        return Ending(outcome=Outcome(taskresult.VALUE, value, loaded.keep, loaded.max_result))
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        return Ending(code=_exit_code(exc))
    except Exception as exc:
        with contextlib.suppress(Exception):
            functiontask.report_error(exc)
        if loaded is None:
            return Ending(code=1, outcome=Outcome(taskresult.EXCEPTION, exc))
        return Ending(code=1, outcome=Outcome(taskresult.EXCEPTION, exc, loaded.keep,
                                              loaded.max_result))
    except BaseException as exc:  # noqa: BLE001 - the interpreter's end for anything else
        _print_traceback(exc)
        return Ending(code=1)


def _exit_code(exc: SystemExit) -> int:
    """The exit status of an interpreter that ends with ``exc``: ``sys.exit``'s number, or 1
    after printing any other value."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def _print_traceback(exc: BaseException) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(functiontask.error_text(exc))


def _threads() -> set[Any] | None:
    """The threads alive now; None when the executor's own is the only one (most tasks: a
    look at two dicts instead of a locked walk over them)."""
    threading = sys.modules.get("threading")
    if threading is None or _alone(threading):
        return None
    return set(threading.enumerate())


def _alone(threading: Any) -> bool:
    """Only the calling thread runs (``start`` returns once a thread left ``_limbo``)."""
    return len(threading._active) == 1 and not threading._limbo


def _join_new_threads(before: set[Any] | None) -> None:
    threading = sys.modules.get("threading")
    if threading is None or _alone(threading):
        return
    before = before or set()
    for thread in threading.enumerate():
        if thread not in before and not thread.daemon and thread is not threading.current_thread():
            thread.join()


def _leave_process(ending: Ending) -> None:
    """A child that the function forked got back here: it ends as the cold interpreter's
    child would have, never running the executor's code."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(128 + ending.signum if ending.signum else ending.code)
