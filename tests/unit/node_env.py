"""Scenario environment for the node's core: builders, a recording outbox, a fake clock.

Tests read as scenarios: ``env = NodeEnv(cpus=2)``, ``gid = env.group()``, ``keys =
env.compute(gid, 3)``, ``env.turn()`` (what one turn of the loop does after reading its
inputs), then ``env.out.take(Dispatch, count=2)``, ``env.end(key)`` and
``env.out.assert_empty()``. Ids come from counters; builders fill in defaults so a test names
only what it is about. Every message between the server and the node goes through the real
``NODE_LINK`` codec: what the env delivers to the core, and what the core sends.

The env plays the executors as the loop reports them: ``start`` (the program runs as a pid),
``end`` (ok, failed or skipped), ``die`` (the executor process died).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core_env import round_trip
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import ComputeTasks, DefineGroup, NodeRegistered, TaskUpdates
from hqshm.cluster.resources import (
    FRACTIONS,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
    ResourcePool,
    ResourceRequest,
)

from hqshm.model.program import ProgramSpec, Stdio
from hqshm.node import launch
from hqshm.node.core import NodeCore, NodeSettings, Signal
from hqshm.node.pool import ExecutorPool

M = TypeVar("M")

HOSTNAME = "node1"


class FakeClock:
    """Both of the node's clocks, moving only when the test says so."""

    def __init__(self, epoch: float = 1_700_000_000.0, mono: float = 500.0) -> None:
        self._epoch = epoch
        self._mono = mono

    def now(self) -> float:
        return self._epoch

    def mono(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._epoch += seconds
        self._mono += seconds


# --- what the core asks the loop to do ------------------------------------------------------


@dataclass(frozen=True)
class Dispatch:
    executor: int
    key: int
    instance: int
    gid: int
    cpus: list[int]
    numa: int
    entry: bytes | None
    env: dict[str, str]
    cpu_labels: list[str]
    whole_cpus: bool
    nodes: tuple[str, ...]
    after_ok: bool = False  # to start only if the task before it on the executor ended well
    tell_start: bool = False  # its executor rings the node once it started it


@dataclass(frozen=True)
class Skip:
    executor: int
    key: int


@dataclass(frozen=True)
class Signaled:
    pid: int
    signal: Signal


@dataclass(frozen=True)
class Interrupted:
    """SIGINT to a function task that runs inside its executor."""

    executor: int
    key: int
    pid: int


@dataclass(frozen=True)
class ExecutorStarted:
    index: int


@dataclass(frozen=True)
class Forgotten:
    """The core dropped a group: executors that have its program drop it."""

    gid: int


@dataclass(frozen=True)
class RegisterAgain:
    """The core asks the loop to register with the server that came back (reconnect)."""

    server_uid: str
    resumed: tuple[tuple[int, int, int], ...]
    time_limit: float | None


class RecordingOutbox:
    """The core's ``Outbox``: messages to the server (after a codec round trip) and actions,
    in one ordered log. ``report`` is recorded as the ``TaskUpdates`` it sends."""

    def __init__(self, executors: int, bodies: dict[int, bytes]) -> None:
        self.log: list[object] = []
        self.executors = executors
        self.bodies = bodies  # gid -> the body the env defined, which dispatches must carry
        self.rooms: dict[int, int] = {}

    def send(self, message: object) -> None:
        self.log.append(round_trip(message))

    def report(self, updates: TaskUpdates) -> None:
        self.send(updates)

    def dispatch(self, executor: int, key: int, instance: int, gid: int, body: bytes,
                 cpus: list[int], numa: int, entry: bytes | None, env: dict[str, str],
                 cpu_labels: list[str], whole_cpus: bool, nodes: tuple[str, ...],
                 after_ok: bool = False, tell_start: bool = False) -> None:
        assert 0 <= executor < self.executors, f"dispatch to executor {executor} never started"
        assert body == self.bodies[gid], "dispatched with another group's body"
        self.log.append(Dispatch(executor, key, instance, gid, cpus, numa, entry, env,
                                 cpu_labels, whole_cpus, nodes, after_ok, tell_start))

    def skip(self, executor: int, key: int) -> None:
        self.log.append(Skip(executor, key))

    def send_signal(self, pid: int, signal: Signal) -> None:
        self.log.append(Signaled(pid, signal))

    def interrupt_function(self, executor: int, key: int, pid: int) -> None:
        self.log.append(Interrupted(executor, key, pid))

    def start_executor(self) -> None:
        self.log.append(ExecutorStarted(self.executors))
        self.executors += 1

    def room(self, executor: int) -> int:
        """Room in the executor's submission ring: unbounded unless a test sets ``rooms``."""
        return self.rooms.get(executor, 1 << 20)

    def register_again(self, server_uid: str, resumed: tuple[tuple[int, int, int], ...],
                       time_limit: float | None) -> None:
        self.log.append(RegisterAgain(server_uid, resumed, time_limit))

    def forget_group(self, gid: int) -> None:
        self.log.append(Forgotten(gid))

    def take(self, kind: type[M], count: int | None = None) -> list[M]:
        """Remove and return what was recorded of one kind, in order; with ``count``, insist."""
        taken = [m for m in self.log if isinstance(m, kind)]
        self.log = [m for m in self.log if not isinstance(m, kind)]
        if count is not None:
            assert len(taken) == count, f"expected {count} {kind.__name__}, got {taken}"
        return taken

    def take_one(self, kind: type[M]) -> M:
        return self.take(kind, count=1)[0]

    def discard(self, kind: type[Any]) -> None:
        self.log = [m for m in self.log if not isinstance(m, kind)]

    def assert_empty(self) -> None:
        assert not self.log, f"unexpected: {self.log}"


# --- builders -------------------------------------------------------------------------------


def cpus_pool(n: int) -> ResourcePool:
    return ResourcePool("cpus", PoolKind.RANGE, start=0, end=n - 1)


def variant(*, cpus: float | None = 1, n_nodes: int = 0, **others: float) -> RequestVariant:
    """``cpus`` (None: no CPUs) plus other amounts in units; ``gpus_nvidia`` names gpus/nvidia."""
    amounts = ({"cpus": cpus} if cpus is not None else {}) | others
    entries = tuple(
        ResourceEntry(name.replace("_", "/"), round(units * FRACTIONS), Policy.COMPACT)
        for name, units in amounts.items()
    )
    return RequestVariant(entries, n_nodes=n_nodes)


def program(time_limit: float | None = None, job_id: int = 1) -> ProgramSpec:
    return ProgramSpec(args=("true",), env={}, cwd="/work", stdout=Stdio(Stdio.NONE),
                       stderr=Stdio(Stdio.NONE), job_id=job_id, submit_dir="/work",
                       server_uid="uid", time_limit=time_limit)


class NodeEnv:
    """One core on ``cpus`` CPUs (plus ``pools``), its recording outbox and a fake clock."""

    def __init__(self, cpus: int = 2, *pools: ResourcePool, **settings: Any) -> None:
        self.clock = FakeClock()
        self.bodies: dict[int, bytes] = {}
        all_pools = tuple(sorted((cpus_pool(cpus), *pools), key=lambda p: p.name))
        self.settings = NodeSettings(ResourceDescriptor(all_pools), HOSTNAME, **settings)
        self.out = RecordingOutbox(max(1, cpus), self.bodies)
        self.core = NodeCore(self.settings, self.out, self.clock.mono())
        self._gids: Iterator[int] = itertools.count(1)
        self._jobs: Iterator[int] = itertools.count(1)
        self._task_ids: dict[int, Iterator[int]] = {}
        self._pids: Iterator[int] = itertools.count(1000)
        self.pids: dict[int, int] = {}  # key -> pid of its program, once started

    # --- the server's side ------------------------------------------------------------------

    def deliver(self, message: object) -> None:
        """A message from the server, as the loop reads it."""
        self.core.heard(self.clock.mono())
        self.core.on_message(round_trip(message), self.clock.mono())

    def register(self, worker_id: int = 7, idle_timeout: float | None = None,
                 server_uid: str = "uid", rejected: Sequence[int] = ()) -> None:
        """The server's ``NodeRegistered`` (through the codec), as the loop hands it over."""
        reply = round_trip(NodeRegistered(worker_id, server_uid, idle_timeout, tuple(rejected)))
        self.core.heard(self.clock.mono())
        self.core.registered(reply.worker_id, reply.idle_timeout, self.clock.mono(),
                             reply.server_uid, reply.rejected)

    def group(self, *variants: RequestVariant, priority: int = 0,
              time_limit: float | None = None) -> int:
        """Define a group (one CPU per task unless ``variants`` say otherwise); its gid."""
        gid = next(self._gids)
        body = program(time_limit).encode()
        self.bodies[gid] = body
        request = ResourceRequest(variants or (variant(),))
        self.deliver(DefineGroup(gid, request, priority, body))
        return gid

    def compute(self, gid: int, n: int = 1, *, job: int | None = None,
                instances: Sequence[int] = (), entries: Sequence[bytes] = (),
                nodes: Sequence[str] = ()) -> list[int]:
        """Send ``n`` tasks of a group (of a new job unless ``job``); their keys."""
        job_id = next(self._jobs) if job is None else job
        ids = self._task_ids.setdefault(job_id, itertools.count())
        keys = tuple(task_key(job_id, next(ids)) for _ in range(n))
        self.deliver(ComputeTasks(gid, keys, tuple(instances), tuple(entries), tuple(nodes)))
        return list(keys)

    # --- one turn of the loop -----------------------------------------------------------------

    def turn(self) -> None:
        """What the loop does after it read its inputs: timers, start what fits, flush."""
        self.core.timers(self.clock.mono())
        if self.core.stopping:
            return
        self.core.start_tasks(self.clock.now(), self.clock.mono())
        self.core.flush(self.clock.mono())

    def run(self, gid: int, n: int = 1, **compute: Any) -> list[int]:
        """Compute ``n`` tasks, start what fits (with pids), drop their dispatches and reports."""
        keys = self.compute(gid, n, **compute)
        self.turn()
        dispatched = [d.key for d in self.out.take(Dispatch)]
        for key in dispatched:
            self.start(key)
        self.core.flush(self.clock.mono(), force=True)
        self.out.take(TaskUpdates)
        return keys

    # --- the executors' side -----------------------------------------------------------------

    def executor_of(self, key: int) -> int:
        return self.core.running[key].slot.index

    def start(self, key: int, at: float | None = None, in_process: bool = False) -> int:
        """The executor spawned the task's program (or runs the function task
        ``in_process``, under its own pid); the pid."""
        pid = next(self._pids)
        self.pids[key] = pid
        now = self.clock.now()
        self.core.on_started(self.executor_of(key), key, pid, now if at is None else at, now,
                             self.clock.mono(), in_process)
        return pid

    def end(self, key: int, ok: bool = True, error: str = "", skipped: bool = False,
            duration: float = 1.0) -> None:
        now = self.clock.now()
        self.core.on_ended(self.executor_of(key), key, ok, skipped, now - duration, now,
                           error.encode(), now, self.clock.mono())

    def die(self, executor: int, cause: str = "signal 9", as_program: str = "") -> None:
        self.core.executor_died(executor, cause, self.clock.now(), self.clock.mono(), as_program)

    # --- looking ----------------------------------------------------------------------------

    def check(self) -> None:
        self.core.check()


def executor_pool(tmp_path: Path, count: int = 1, worker_id: int = 1
                  ) -> Iterator[ExecutorPool]:
    """A real pool of ``count`` executor processes for a node in ``tmp_path`` (a fixture's
    body)."""
    node = launch.NodeContext(worker_id=worker_id, hostname="test",
                              work_dir=str(tmp_path / "work"), hq_path="hq",
                              base_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    os.makedirs(node.work_dir)
    executors = ExecutorPool(count, node)
    try:
        yield executors
    finally:
        executors.stop()
