"""Executors: small pre-forked processes that start programs, one task at a time each.

An executor blocks on its submission ring, resolves the task's paths and environment (so the
node's loop never does per-task string work), creates output files and directories, spawns the
program through the affinity module (vfork semantics, pinned, in its own session), reports the
pid, waits for it, and reports how it ended. Executors stay small so spawning stays cheap.

A task whose output is streamed (`--stream`) takes a second path: its streamed channels are
pipes, which the executor copies into the node's stream file while the program runs, so that
output written before a kill is in the file within moments (spec/jobs.md §9); the end record
goes in before the task is reported ENDED. Other tasks never pay for it.

A function task whose command is the plain interpreter command with the executor's own
interpreter runs inside the executor instead (hqshm/node/warm.py): decided once per group, when
its program comes (DEFINE), so program tasks pay nothing for it. Its STARTED record carries the
executor's pid with the IN_PROCESS status, and its end is reported as a program's would be.

The node forks them before it opens any socket (hqshm/node/pool.py, the node's side). Each
executor dies with the node: the node's death sends it SIGTERM (parent-death signal), upon which
it kills its task's process group and removes what the node can no longer remove (the task's
directory, stdin files, its rings' spill files, the node's own temporary directory), so that a
node killed with SIGKILL leaves nothing behind. A SIGTERM while the node lives (sent to the whole
process group) is the node's to handle: the executor ignores it and waits for the node's STOP.
Each task dies with its executor the same way (its own parent-death signal), in case the
executor could not kill it.
This module is the executor process, with the RUN record's payload and the ENDED statuses that
the node reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from hqshm import errors, functiontask, taskresult
from hqshm.cluster.frozen import field, frozen
from hqshm.cluster.ids import split_key
from hqshm.model.program import ProgramSpec, Stdio, decode_program
from hqshm.model.streamformat import READ_SIZE
from hqshm.node import affinity, launch, results, warm
from hqshm.node.ring import Record, RecordFlag, RecordKind, Ring, RingFull, ring_doorbell
from hqshm.node.streamwriter import StreamError, StreamFiles, TaskStream

if TYPE_CHECKING:  # the pool writes the page; an executor only reads it
    from hqshm.node.pool import Control

logger = logging.getLogger(__name__)

ERROR_FILE_LIMIT = 2048
# What is read from a streamed task's pipes after it exited: all it wrote fits in the pipes
# (a writer blocks on a full pipe), unless a child it left behind keeps writing.
DRAIN_LIMIT = 4 << 20
EXIT_POLL_MS = 20  # without pidfds (Linux < 5.3): how often a streamed task's exit is checked

# How far back the warm tasks' directory is dated when made (``Executor._function_dir``):
# beyond any file system's time granularity, so that a change now cannot keep its times.
DIR_DATED_BACK = 3600.0

# ENDED record statuses
OK = 0
FAILED = 1
SKIPPED = 2  # canceled (or the node is stopping) before it started: never spawned

# An executor with at most this many records left in its submission ring asks for more.
REFILL_AT = 1
# A chain's steps (flagged AFTER_OK) come from the server, a round trip away: with this many
# left (half of hqshm/node/core.py's CHAIN_DEPTH) the executor rings at once, so that the node
# reports the ends so far and the server sends the next steps while these run.
CHAIN_REFILL_AT = 8
AFTER_OK = int(RecordFlag.AFTER_OK)
TELL_START = int(RecordFlag.TELL_START)

# STARTED record status
IN_PROCESS = 1  # a function task runs inside the executor, whose pid the record carries


@frozen
class TaskPayload:
    """The per-task part of a RUN record (the program itself comes once per group)."""

    gid: int
    entry: bytes | None  # raw HQ_ENTRY
    resource_env: dict[str, str]
    cpu_labels: list[str]
    whole_cpus: bool
    pin: bool  # apply the record's CPU mask to the process
    nodes: list[str] = field(default_factory=list)  # a multi-node task's hostnames, root first

    def encode(self) -> bytes:
        return self.pack(self.gid, self.entry, self.resource_env, self.cpu_labels,
                         self.whole_cpus, self.pin, self.nodes)

    @staticmethod
    def pack(gid: int, entry: bytes | None, resource_env: dict[str, str],
             cpu_labels: list[str], whole_cpus: bool, pin: bool, nodes: Sequence[str]) -> bytes:
        """The encoding without the object (the node's, once per task).

        The resource variables travel as a flat list of names and values, not as a map:
        msgpack interns every map key it decodes, and a name that nothing else holds was
        interned and dropped again on every task, until, a few thousand tasks in, the
        interpreter's table of interned strings doubled: 0.96 MB more in every executor."""
        return msgpack.packb([gid, entry, [x for item in resource_env.items() for x in item],
                              cpu_labels, whole_cpus, pin, nodes])

    @staticmethod
    def decode(data: bytes) -> TaskPayload:
        gid, entry, flat, labels, whole, pin, nodes = msgpack.unpackb(data)
        return TaskPayload(gid, entry, dict(zip(flat[::2], flat[1::2], strict=True)), labels,
                           whole, pin, nodes)


class Executor:
    """The executor's side: runs in the forked process until a STOP record."""

    def __init__(
        self,
        sub: Ring,
        done: Ring,
        doorbell: int,
        node: launch.NodeContext,
        control: Control,
        index: int,
        node_pid: int = 0,
        own_dir: str | None = None,
    ) -> None:
        self.sub = sub
        self.done = done
        self.doorbell = doorbell
        self.node = node
        self.control = control
        self.index = index
        self.programs: dict[int, ProgramSpec] = {}
        self.function_groups: set[int] = set()  # groups whose tasks run inside this process
        self.cpus = affinity.OwnCpus()
        self.warm = warm.WarmRunner(self.cpus)
        self._resolving: tuple[object, Callable[[int], Any]] = (None, lambda _: None)
        self.pid = os.getpid()
        self.stdin_files: dict[int, str] = {}
        self.made_dirs: set[str] = set()
        self.streams = StreamFiles(node.stream_key)
        self.node_pid = node_pid or os.getppid()
        self.own_dir = own_dir
        self.results_dir = node.results_dir  # results kept for dependants: the node's too
        # What must not outlive the node: the running task's process group and directory.
        self.task_pid = 0
        self.task_dir: str | None = None
        # The task directory of warm function tasks, kept from one to the next while each
        # leaves it as it found it (``_function_dir``, ``_keep_function_dir``).
        self.function_dir: str | None = None
        self.function_dir_id: tuple[int, ...] = ()
        self.function_dir_dated = False  # its times set back: an unchanged lstat says empty
        # How the last task ended here: a RUN record flagged AFTER_OK runs only after an OK.
        self.last_status = SKIPPED
        # The bell that asks the node for more, rung once the next record is taken: for a
        # task whose start the node waits to hear of, once that is reported, so that one bell
        # tells both (``_ended``).
        self.bell_owed = False
        # A SIGTERM of the node's death that comes while a spawn returns is acted on once its
        # pid is known: before, the handler missed the new task, which then ran its course.
        self.spawning = False
        self.orphaned = False

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._terminated)
        while True:
            record = self.sub.pop()
            if record is None:
                continue
            if self.bell_owed and not (
                    record.kind == RecordKind.RUN and record.flags & TELL_START):
                self._ring()
            if record.kind == RecordKind.STOP:
                self._remove_stdin_files()
                self._remove_function_dir()
                return
            if record.kind == RecordKind.DEFINE:
                self._define(record)
            elif record.kind == RecordKind.RUN:
                self._run(record)
            elif record.kind == RecordKind.FORGET:
                self._forget(record)

    def _terminated(self, _signum: int, _frame: object) -> None:
        """SIGTERM: the node died (parent-death signal), or the node's process group got it
        and the node, alive, stops us in its own time. A process that a function task forked
        inherits this handler: there SIGTERM does what it does by default."""
        if os.getpid() != self.pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if os.getppid() == self.node_pid:
            return
        if self.spawning:
            self.orphaned = True
            return
        self._die_with_node()

    def _follow(self, cpus: list[int] | None) -> None:
        """Onto a program task's CPUs (home for an unpinned one) before its launch, so that
        its child is born there (``affinity.OwnCpus``). A move that fails is left to the
        child, whose own pinning fails the task with the error a launch gives."""
        try:  # noqa: SIM105 - per task: suppress() costs more than the call
            self.cpus.move(cpus)
        except OSError:
            pass

    def _spawn(self, spec: affinity.SpawnSpec) -> int:
        """Start the task's program; its pid is ``task_pid`` before a node's death is acted on."""
        self.spawning = True
        try:
            self.task_pid = affinity.spawn(spec)
            return self.task_pid
        finally:
            self.spawning = False
            if self.orphaned:
                self._die_with_node()

    def _die_with_node(self) -> None:
        """Kill the task, remove what the dead node cannot, leave (never back to the loop)."""
        pid = self.task_pid
        if pid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if self.task_dir is not None:
            _remove_any(self.task_dir)
        self._remove_function_dir()
        self._remove_stdin_files()
        self.sub.remove_spills()
        self.done.remove_spills()
        if self.results_dir:
            shutil.rmtree(self.results_dir, ignore_errors=True)
        if self.own_dir is not None:
            # Every executor tries: the last to get here finds every task dead.
            shutil.rmtree(self.own_dir, ignore_errors=True)
        if self.warm.running:  # a function task's process group is ours: its processes and us
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
        os._exit(0)

    def _remove_stdin_files(self) -> None:
        for path in self.stdin_files.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.stdin_files.clear()

    def _define(self, record: Record) -> None:
        # A group defined again (the node registered with a new server) may have new stdin.
        self._remove_stdin_file(record.key)
        spec = self.programs[record.key] = decode_program(record.payload)
        if warm.is_function_program(spec, self.node.base_env):
            self.function_groups.add(record.key)
        else:
            self.function_groups.discard(record.key)

    def _forget(self, record: Record) -> None:
        """Groups the node dropped (their tasks all ended here and at the server): what this
        executor keeps of each goes, so that it holds the live groups only, not every group
        it ever ran (one per single-task job)."""
        gids = array("Q")
        gids.frombytes(record.payload[: len(record.payload) // 8 * 8])
        if sys.byteorder != "little":
            gids.byteswap()
        for gid in gids:
            self.programs.pop(gid, None)
            self.function_groups.discard(gid)
            self._remove_stdin_file(gid)

    def _remove_stdin_file(self, gid: int) -> None:
        path = self.stdin_files.pop(gid, None)
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _ended(
        self, record: Record, status: int, t0: float, t1: float, error: str = "", pid: int = 0,
        result: results.Report | None = None,
    ) -> None:
        self.last_status = status
        flags, payload = results.ended_payload(error, result)
        try:
            self._push_ended(record, status, t0, t1, pid, flags, payload)
        except RingFull as exc:  # /dev/shm is full: no room for a large payload
            if result is not None:  # the task's end goes; its result, too large, does not
                result = (results.NOT_KEPT, result[1], str(exc).encode("utf-8", "replace"))
            flags, payload = results.ended_payload(error[:512], result)
            self._push_ended(record, status, t0, t1, pid, flags, payload)
        # With its next tasks already queued the executor goes on at once, and the node
        # collects this report on its next tick; an executor down to its last queued task
        # rings the bell, so that the node refills its ring before it idles (waiting until
        # it idles left it idle for as long as the node took to get a CPU), and so does a
        # failure the node should hear about promptly. With one task left the bell waits
        # until that one is taken, and if the node waits to hear of its start, until then:
        # one wake of the node then collects both reports.
        pending = self.sub.pending()
        if status != OK or pending == 0 or (
                pending == CHAIN_REFILL_AT and record.flags & AFTER_OK):
            self._ring()
        elif pending <= REFILL_AT:
            self.bell_owed = True

    def _push_ended(self, record: Record, status: int, t0: float, t1: float, pid: int,
                    flags: int, payload: bytes) -> None:
        self.done.push(key=record.key, instance=record.instance, kind=RecordKind.ENDED,
                       status=status, t_start=t0, t_end=t1, pid=pid, flags=flags,
                       payload=payload)

    def _ring(self) -> None:
        self.bell_owed = False
        ring_doorbell(self.doorbell)

    def _started(self, record: Record, pid: int, t0: float, status: int = 0) -> None:
        """Report the start; ring the node if it waits to hear of it (``TELL_START``)."""
        self.done.push(key=record.key, instance=record.instance, kind=RecordKind.STARTED,
                       pid=pid, status=status, t_start=t0)
        if record.flags & TELL_START:
            self._ring()

    def _run(self, record: Record) -> None:
        t0 = time.time()
        if self.control.must_skip(self.index, record.key) or (
                record.flags & AFTER_OK and self.last_status != OK):
            self._ended(record, SKIPPED, t0, t0)
            return
        task = TaskPayload.decode(record.payload)
        spec = self.programs[task.gid]
        _, task_id = split_key(record.key)
        task_dir = None
        in_process = task.gid in self.function_groups and warm.runs_warm(task.resource_env)
        reused = in_process and not task.nodes
        if spec.task_dir or task.nodes:  # multi-node tasks always get one (jobs.md §15)
            try:
                task_dir = self.task_dir = (
                    self._function_dir() if reused
                    else tempfile.mkdtemp(prefix="t", dir=self.node.work_dir))
                if task.nodes:
                    launch.write_node_files(task_dir, task.nodes)
            except OSError as exc:
                self._ended(
                    record,
                    FAILED,
                    t0,
                    time.time(),
                    f"Cannot create task_dir in worker's workdir at {self.node.work_dir}: {exc}",
                )
                return
        try:
            plan = launch.plan(
                spec,
                task_id=task_id,
                instance=record.instance,
                # Bytes as the user gave them; os.fsencode restores them in the environment.
                entry=None if task.entry is None
                else task.entry.decode("utf-8", "surrogateescape"),
                resource_env=task.resource_env,
                cpus=task.cpu_labels,
                node=self.node,
                whole_cpus=task.whole_cpus,
                task_dir=task_dir,
                nodes=task.nodes,
            )
            problem = self._prepare(plan, spec)
            if problem:
                self._ended(record, FAILED, t0, time.time(), problem)
                return
            if spec.pin != "none" and not task.cpu_labels:
                self._ended(record, FAILED, t0, time.time(), errors.PIN_WITHOUT_CPUS)
                return
            if spec.stream_dir and Stdio.STREAM in (spec.stdout.kind, spec.stderr.kind):
                self._run_streamed(record, task, spec, plan, t0, task_dir)
                return
            if in_process:
                self._run_in_process(record, task, spec, plan, t0, task_dir)
                return
            # A function task started cold has a task directory (for its error file), where it
            # writes its result (hqshm/functiontask.py, task_main); only the dependencies'
            # results need the store's name.
            function = spec.task_dir
            if function and self.node.results_dir:
                plan.env["HQSHM_RESULT_STORE"] = f"{self.node.results_dir}:{spec.server_uid}"
            cpus = record.cpus if task.pin and record.cpus else None
            self._follow(cpus)
            try:
                pid = self._spawn(
                    affinity.SpawnSpec(
                        argv=plan.argv,
                        env=plan.env,
                        cwd=plan.cwd,
                        stdin_path=self._stdin_path(task.gid, spec),
                        stdout_path=plan.stdout,
                        stderr_path=plan.stderr,
                        cpus=cpus,
                        mem_node=record.numa if record.numa >= 0 else None,
                        mem_mode=self.node.memory_mode,
                    )
                )
            except affinity.SpawnError as exc:
                self._ended(record, FAILED, t0, time.time(), _spawn_failure(exc, plan))
                return
            self._started(record, pid, t0)
            status = _wait(pid)
            self.task_pid = 0
            t1 = time.time()
            result = (results.cold_report(self.node.results_dir, spec.server_uid, spec.job_id,
                                          task_id, task_dir) if function else None)
            if status == 0:
                _remove_outputs(plan)
                self._ended(record, OK, t0, t1, pid=pid, result=result)
            else:
                self._ended(record, FAILED, t0, t1, _failure_text(status, task_dir), pid=pid,
                            result=result)
        finally:
            if task_dir is not None:
                if reused:
                    self._keep_function_dir()
                else:
                    _remove_any(task_dir)
                self.task_dir = None

    def _function_dir(self) -> str:
        """The task directory of a warm function task: this executor's, made at its first
        such task and kept while the tasks leave it empty, which saves a directory's creation
        and removal per task (hundreds of microseconds on a disk's file system, more than the
        rest of a warm task). Its name is known to the node (``function_dir_path``), which
        removes it when this executor dies with a task."""
        path = self.function_dir
        if path is None:
            path = function_dir_path(self.node, self.pid)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:  # left by a dead executor whose pid this one has
                _remove_any(path)
                os.mkdir(path, 0o700)
            # Dated back: whatever a task adds to it or removes dates it now, so while its
            # lstat stays as it was it holds nothing, and reading it per task (most of the
            # check's cost) is left for where its times cannot be set.
            dated = time.time() - DIR_DATED_BACK
            try:
                os.utime(path, (dated, dated), follow_symlinks=False)
                self.function_dir_dated = True
            except OSError:
                self.function_dir_dated = False
            self.function_dir, self.function_dir_id = path, _dir_state(os.lstat(path))
        return path

    def _keep_function_dir(self) -> None:
        """After a task: the directory stays for the next one if the task left it unchanged
        (the same directory, mode and times: nothing added or removed since it was made
        empty), which a fresh directory would be; else it goes (with the task's files, its
        error file among them) and the next task gets a new one."""
        path = self.function_dir
        if path is None:
            return
        try:
            if _dir_state(os.lstat(path)) == self.function_dir_id and (
                    self.function_dir_dated or not os.listdir(path)):
                return
        except OSError:
            pass
        self._remove_function_dir()

    def _remove_function_dir(self) -> None:
        path, self.function_dir = self.function_dir, None
        if path is not None:
            _remove_any(path)

    def _run_in_process(
        self,
        record: Record,
        task: TaskPayload,
        spec: ProgramSpec,
        plan: launch.LaunchPlan,
        t0: float,
        task_dir: str | None,
    ) -> None:
        """A function task inside this process, reported as its program would be."""
        entry = plan.env.get("HQ_ENTRY")
        if entry is not None and entry.startswith(functiontask.ENTRY_PREFIX):
            del plan.env["HQ_ENTRY"]  # the arguments' carrier, not the task's environment
        call = warm.FunctionCall(
            payload=spec.stdin,
            job=(spec.server_uid, spec.job_id),
            plan=plan,
            cpus=record.cpus if task.pin and record.cpus else None,
            numa=record.numa if record.numa >= 0 else None,
            mem_mode=self.node.memory_mode,
            resolve=self._resolver(spec),
            entry=entry,
            group=spec,
            varying=launch.task_variables(task.resource_env),
        )
        pid = self.pid

        def started() -> None:
            self._started(record, pid, t0, IN_PROCESS)

        self.control.clear_interrupt(self.index)  # the node marks it only after STARTED
        try:
            ending = self.warm.run(
                call, started, lambda: self.control.interrupted(self.index, record.key))
        except affinity.SpawnError as exc:
            self._ended(record, FAILED, t0, time.time(), _spawn_failure(exc, plan))
            return
        t1 = time.time()
        result = None
        outcome = ending.outcome
        if outcome is not None:
            result = results.report(self.node.results_dir, spec.server_uid, spec.job_id,
                                    split_key(record.key)[1], outcome.kind, outcome.value,
                                    outcome.keep, outcome.max_result)
        if ending.ok:
            _remove_outputs(plan)
            self._ended(record, OK, t0, t1, pid=pid, result=result)
        else:
            self._ended(record, FAILED, t0, t1, _error_text(task_dir, ending.error()), pid=pid,
                        result=result)

    def _resolver(self, spec: ProgramSpec) -> Callable[[int], Any]:
        """Results of the job's tasks given as arguments, from this node's store."""
        key = (spec.server_uid, spec.job_id)
        if self._resolving[0] != key:
            self._resolving = (key, taskresult.resolver(self.node.results_dir, spec.server_uid,
                                                         spec.job_id))
        return self._resolving[1]

    def _run_streamed(
        self,
        record: Record,
        task: TaskPayload,
        spec: ProgramSpec,
        plan: launch.LaunchPlan,
        t0: float,
        task_dir: str | None,
    ) -> None:
        try:
            worker_id = self.control.worker_id or self.node.worker_id
            fd = self.streams.open(spec.stream_dir, spec.server_uid, worker_id)
        except StreamError as exc:
            self._ended(record, FAILED, t0, time.time(), f"Streaming: {exc}")
            return
        stream = TaskStream(fd, spec.job_id, split_key(record.key)[1], record.instance)
        pipes: dict[int, int] = {}  # read end -> channel
        write_ends = []
        paths = [plan.stdout, plan.stderr]
        for channel, stdio in enumerate((spec.stdout, spec.stderr)):
            if stdio.kind == Stdio.STREAM:
                r, w = os.pipe2(os.O_CLOEXEC)
                pipes[r] = channel
                write_ends.append(w)
                # SpawnSpec takes paths: the child opens its own copy of the write end.
                paths[channel] = f"/proc/self/fd/{w}"
        self._follow(None)  # it copies the task's output as it runs: not on the task's CPUs
        try:
            pid = self._spawn(
                affinity.SpawnSpec(
                    argv=plan.argv,
                    env=plan.env,
                    cwd=plan.cwd,
                    stdin_path=self._stdin_path(task.gid, spec),
                    stdout_path=paths[0],
                    stderr_path=paths[1],
                    cpus=record.cpus if task.pin and record.cpus else None,
                    mem_node=record.numa if record.numa >= 0 else None,
                    mem_mode=self.node.memory_mode,
                )
            )
        except affinity.SpawnError as exc:
            for r in pipes:
                os.close(r)
            error = _spawn_failure(exc, plan, streamed=tuple(pipes.values()))
            try:
                stream.finish()
            except StreamError as failure:
                error = f"Streaming: {failure}"
            self._ended(record, FAILED, t0, time.time(), error)
            return
        finally:
            for w in write_ends:
                os.close(w)
        self._started(record, pid, t0)
        status, problem = _pump(pid, pipes, stream)
        self.task_pid = 0
        t1 = time.time()
        if problem:
            self._ended(record, FAILED, t0, t1, problem, pid=pid)
        elif status == 0:
            _remove_outputs(plan)
            self._ended(record, OK, t0, t1, pid=pid)
        else:
            self._ended(record, FAILED, t0, t1, _failure_text(status, task_dir), pid=pid)

    def _prepare(self, plan: launch.LaunchPlan, spec: ProgramSpec) -> str:
        """Create the working directory and the output files' directories; "" when all is well."""
        if plan.cwd not in self.made_dirs:
            try:
                os.makedirs(plan.cwd, exist_ok=True)
            except OSError as exc:
                return f"Could not create working directory: {_os_error(exc)}"
            self.made_dirs.add(plan.cwd)
        for channel, path in (("stdout", plan.stdout), ("stderr", plan.stderr)):
            if path is None:
                continue
            parent = os.path.dirname(path)
            if parent in self.made_dirs:
                continue
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                return f"Cannot create {channel} directory at {parent}: {_os_error(exc)}"
            self.made_dirs.add(parent)
        if len(self.made_dirs) > 4096:
            self.made_dirs.clear()
        return ""

    def _stdin_path(self, gid: int, spec: ProgramSpec) -> str | None:
        """Stdin data goes through a file, so a task that does not read it never blocks us."""
        if not spec.stdin:
            return None
        path = self.stdin_files.get(gid)
        if path is None:
            fd, path = tempfile.mkstemp(prefix="stdin-", dir=self.node.work_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(spec.stdin)
            self.stdin_files[gid] = path
        return path


def _os_error(exc: OSError) -> str:
    """HQ renders OS errors the Rust way: `File exists (os error 17)`."""
    return errors.os_error_text(exc.errno) if exc.errno else str(exc)


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return status
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _pump(pid: int, pipes: dict[int, int], stream: TaskStream) -> tuple[int, str]:
    """Copy a running task's pipes into its stream until it exits, then what is left in them
    and the end record. Returns the wait status and "" or the streaming failure.

    Data read while the task runs is written at once, one record per read (so a kill loses
    nothing already read); once the task has exited, the rest goes out with the end record in
    one write, which for a short task makes the whole stream a single append."""
    problem = ""
    pidfd = -1
    with contextlib.suppress(OSError, AttributeError):
        pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in pipes:
        poller.register(fd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    status: int | None = None
    try:
        while pipes and status is None:
            ready = poller.poll(-1 if pidfd >= 0 else EXIT_POLL_MS)
            if pidfd < 0 or any(fd == pidfd for fd, _ in ready):
                status = _try_wait(pid)
                if status is not None:
                    break  # the drain below reads what is ready
            for fd, _ in ready:
                channel = pipes.get(fd)
                if channel is None:
                    continue
                data = os.read(fd, READ_SIZE)
                if not data:
                    poller.unregister(fd)
                    os.close(fd)
                    del pipes[fd]
                elif not problem:
                    try:
                        stream.write(channel, data)
                    except StreamError as exc:
                        problem = f"Streaming: {exc}"
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pid, signal.SIGKILL)
        if status is None:
            status = _wait(pid)
        tail = _drain(pipes)
        if not problem:
            try:
                stream.finish(tail)
            except StreamError as exc:
                problem = f"Streaming: {exc}"
    finally:
        for fd in pipes:
            os.close(fd)
        if pidfd >= 0:
            os.close(pidfd)
    return status, problem


def _try_wait(pid: int) -> int | None:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return status if done else None


def _drain(pipes: dict[int, int]) -> list[tuple[int, bytes]]:
    """What the exited task left in its pipes, without waiting for children that hold them."""
    tail = []
    budget = DRAIN_LIMIT
    for fd, channel in pipes.items():
        os.set_blocking(fd, False)
        while budget > 0:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                break
            tail.append((channel, data))
            budget -= len(data)
    return tail


def _remove_any(path: str) -> None:
    """What is at ``path`` now: a task's directory (most tasks leave it empty, which one rmdir
    removes) with its contents, or what a task put in its place (a file, a link: not what it
    points to)."""
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _dir_state(st: os.stat_result) -> tuple[int, ...]:
    """What changes when anything is added to or removed from a directory, or it is replaced
    or its mode changed (the change time also when its times are set)."""
    return st.st_dev, st.st_ino, st.st_mode, st.st_mtime_ns, st.st_ctime_ns


def function_dir_path(node: launch.NodeContext, pid: int) -> str:
    """The task directory that executor ``pid`` of this node gives its warm function tasks: in
    the work dir, named after the node's key (drawn per node, so nodes sharing a work dir
    differ) and the executor."""
    return os.path.join(node.work_dir, f"t{node.stream_key}-{pid}")


def remove_function_dir(node: launch.NodeContext, pid: int) -> None:
    """The node's part: the directory of an executor that died without removing it."""
    _remove_any(function_dir_path(node, pid))


def _remove_outputs(plan: launch.LaunchPlan) -> None:
    for remove, path in ((plan.rm_stdout, plan.stdout), (plan.rm_stderr, plan.stderr)):
        if remove and path:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _failure_text(status: int, task_dir: str | None) -> str:
    return _error_text(task_dir, end_text(status))


def end_text(status: int) -> str:
    """How a process that ended with wait status ``status`` failed, in HQ's words."""
    if os.WIFSIGNALED(status):
        return errors.signal_error(os.WTERMSIG(status))
    return errors.exit_code_error(os.WEXITSTATUS(status))


def _error_text(task_dir: str | None, default: str) -> str:
    """The error a failed task wrote to its error file (spec/jobs.md §7), else ``default``."""
    if task_dir is not None:
        custom = _read_error_file(os.path.join(task_dir, "hq-error"))
        if custom is not None:
            return custom
    return default


def _read_error_file(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(ERROR_FILE_LIMIT + 1)
    except OSError:
        return None
    if not data:
        return errors.ERROR_FILE_EMPTY
    if len(data) >= ERROR_FILE_LIMIT:  # spec/jobs.md §7: 2048 bytes or more are cut
        return data[:ERROR_FILE_LIMIT].decode("utf-8", "replace") + errors.ERROR_FILE_TRUNCATED
    return data.decode("utf-8", "replace")


def _spawn_failure(
    exc: affinity.SpawnError, plan: launch.LaunchPlan, streamed: Iterable[int] = ()
) -> str:
    stage = exc.stage
    for channel in streamed:
        if stage == (affinity.SpawnStage.STDOUT, affinity.SpawnStage.STDERR)[channel]:
            name = ("stdout", "stderr")[channel]
            return f"Streaming: cannot attach the {name} pipe: {errors.os_error_text(exc.errno)}"
    if stage == affinity.SpawnStage.CWD:
        return f"Could not create working directory: {errors.os_error_text(exc.errno)}"
    if stage == affinity.SpawnStage.STDOUT:
        return f"Cannot create stdout file at {plan.stdout}: {errors.os_error_text(exc.errno)}"
    if stage == affinity.SpawnStage.STDERR:
        return f"Cannot create stderr file at {plan.stderr}: {errors.os_error_text(exc.errno)}"
    return errors.spawn_error(plan.argv, exc.errno, plan.cwd)
