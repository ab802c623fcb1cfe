"""An executor whose node dies while it spawns a task kills that task (issue 8, soak).

The node's death reaches the executor as SIGTERM (parent-death signal). Python runs the handler
right after the C spawn returns, before the pid is stored; the handler used to miss the new
task, which then ran its course with nobody to report it, and the server ran it again. Here
the spawn is a real `sleep` in its own session and the signal's handler is run at exactly that
moment; the node's death is faked by a node pid that is not this process's parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
from types import SimpleNamespace

import pytest

from hqshm.node import affinity
from hqshm.node.executor import Executor
from hqshm.node.warm import WarmRunner


class Left(Exception):
    """os._exit, for the test: the executor left."""


def orphaned_executor() -> Executor:
    executor = object.__new__(Executor)
    executor.node_pid = -1  # never our parent: the node is dead
    executor.pid = os.getpid()
    executor.warm = WarmRunner()
    executor.task_pid = 0
    executor.task_dir = None
    executor.function_dir = None
    executor.spawning = False
    executor.orphaned = False
    executor.stdin_files = {}
    executor.own_dir = None
    executor.results_dir = ""
    executor.sub = executor.done = SimpleNamespace(remove_spills=lambda: None)
    return executor


def test_a_node_death_during_a_spawn_kills_the_new_task(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = orphaned_executor()
    children: list[subprocess.Popen[bytes]] = []

    def spawn(_spec: object) -> int:
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        children.append(child)
        executor._terminated(signal.SIGTERM, None)  # the signal lands as the spawn returns
        return child.pid

    def leave(_code: int) -> None:
        raise Left

    monkeypatch.setattr(affinity, "spawn", spawn)
    monkeypatch.setattr(os, "_exit", leave)
    try:
        with pytest.raises(Left):
            executor._spawn(SimpleNamespace())  # type: ignore[arg-type]
        (child,) = children
        # Killed and reaped by the executor (Popen then finds no child to wait for).
        assert child.poll() is not None, "the task outlived its executor"
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_a_node_death_between_tasks_leaves_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = orphaned_executor()
    monkeypatch.setattr(os, "_exit", lambda _code: (_ for _ in ()).throw(Left()))
    with pytest.raises(Left):
        executor._terminated(signal.SIGTERM, None)


def test_a_sigterm_while_the_node_lives_is_the_nodes_to_handle() -> None:
    executor = orphaned_executor()
    executor.node_pid = os.getppid()
    executor._terminated(signal.SIGTERM, None)
    assert not executor.orphaned
