"""An executor follows its program tasks' CPUs (``affinity.OwnCpus``), so that their children are
born where they must run; what a task's program sees is unchanged: its own CPUs when pinned, the
executor's starting ones when not, whatever ran before it."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_env import executor_pool

from hqshm.model.program import ProgramSpec, Stdio
from hqshm.node.affinity import OwnCpus
from hqshm.node.executor import OK, TaskPayload
from hqshm.node.pool import ExecutorPool
from hqshm.node.ring import RecordKind

HOME = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(HOME) < 2, reason="needs two CPUs to move between")


@pytest.fixture
def own() -> Iterator[OwnCpus]:
    try:
        yield OwnCpus()
    finally:
        os.sched_setaffinity(0, HOME)


@two_cpus
def test_own_cpus_move_and_come_home(own: OwnCpus) -> None:
    own.move([HOME[1]])
    assert os.sched_getaffinity(0) == {HOME[1]} and own.cpu_set == {HOME[1]}
    own.move(None)
    assert os.sched_getaffinity(0) == set(HOME) and own.cpu_set == set(HOME)


def test_a_failed_move_stays_put(own: OwnCpus) -> None:
    own.move([HOME[0]])
    with pytest.raises(OSError):
        own.move([1 << 16])  # no such CPU
    assert own.cpus == [HOME[0]] and os.sched_getaffinity(0) == {HOME[0]}
    own.go_home()
    assert own.cpus is None and os.sched_getaffinity(0) == set(HOME)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ExecutorPool]:
    yield from executor_pool(tmp_path)


def cpus_seen(pool: ExecutorPool, tmp_path: Path, task: int, cpus: list[int]) -> str:
    """Run a program that writes the CPUs it may use, pinned to ``cpus`` if any."""
    out = tmp_path / f"cpus{task}"
    spec = ProgramSpec(args=("grep", "Cpus_allowed_list", "/proc/self/status"), env={},
                       cwd=str(tmp_path), stdout=Stdio(Stdio.FILE, str(out)),
                       stderr=Stdio(Stdio.NONE), job_id=3, submit_dir=str(tmp_path),
                       server_uid="uid001")
    key = (spec.job_id << 32) | task
    gid = task + 1  # a group each: its own output file
    payload = TaskPayload(gid, None, {}, [str(c) for c in cpus] or ["0"], True,
                          bool(cpus)).encode()
    pool.dispatch(pool.handles[0], key, 0, gid, spec.encode(), cpus, -1, payload)
    while True:
        ready, _, _ = select.select([pool.doorbell_r], [], [], 20.0)
        assert ready, "the task did not end"
        for _, record in pool.drain():
            if record.key == key and record.kind == RecordKind.ENDED:
                assert record.status == OK
                return out.read_text().split()[-1]


@two_cpus
def test_an_unpinned_task_after_a_pinned_one_gets_the_executors_cpus(
        pool: ExecutorPool, tmp_path: Path) -> None:
    home = cpus_seen(pool, tmp_path, 0, [])
    assert cpus_seen(pool, tmp_path, 1, [HOME[1]]) == str(HOME[1])
    assert cpus_seen(pool, tmp_path, 2, []) == home
