"""Executors forget the groups their node dropped (issue 9: memory of long-running processes).

The pool's side (which executor has which program, what each must forget) and the executor's
(what it keeps per group) meet in the submission ring: the records the pool pushes are popped
here and handed to an executor object, as its loop would.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from hqshm.model.program import ProgramSpec, Stdio
from hqshm.node.core import HANDOFF_DEPTH
from hqshm.node.executor import Executor
from hqshm.node.pool import FORGET_PER_RECORD, SUB_CAPACITY, ExecutorHandle, ExecutorPool
from hqshm.node.ring import Record, RecordKind, Ring


def body(stdin: bytes = b"") -> bytes:
    return ProgramSpec(args=("true",), env={}, cwd="/work", stdout=Stdio(Stdio.NONE),
                       stderr=Stdio(Stdio.NONE), job_id=1, submit_dir="/work",
                       server_uid="uid", stdin=stdin).encode()


@pytest.fixture
def handle(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    sub = Ring.create("hqshm-test-forget", capacity=SUB_CAPACITY, payload_size=16384,
                      spill_dir=str(tmp_path), spin=0.0)
    done = Ring.create("hqshm-test-forget-done", capacity=2, payload_size=1024,
                       spill_dir=str(tmp_path), spin=0.0)
    yield ExecutorHandle(0, os.getpid(), sub, done)
    sub.close()
    done.close()


def bare_pool(handle: ExecutorHandle) -> ExecutorPool:
    pool = object.__new__(ExecutorPool)
    pool.handles = [handle]
    return pool


def bare_executor(work_dir: pathlib.Path) -> Executor:
    executor = object.__new__(Executor)
    executor.programs = {}
    executor.function_groups = set()
    executor.stdin_files = {}
    executor.node = type("Node", (), {"base_env": {}, "work_dir": str(work_dir)})()
    return executor


def popped(ring: Ring) -> list[Record]:
    records = []
    while (record := ring.pop(0)) is not None:
        records.append(record)
    return records


def apply(executor: Executor, records: list[Record]) -> None:
    """What the executor's loop does with each record but running the task."""
    for record in records:
        if record.kind == RecordKind.DEFINE:
            executor._define(record)
        elif record.kind == RecordKind.FORGET:
            executor._forget(record)


def dispatch(pool: ExecutorPool, handle: ExecutorHandle, gid: int, stdin: bytes = b"") -> None:
    pool.dispatch(handle, key=gid << 32, instance=0, gid=gid, body=body(stdin), cpus=[],
                  numa=-1, payload=b"")


def test_an_executor_forgets_a_group_before_its_next_task(
        handle: ExecutorHandle, tmp_path: pathlib.Path) -> None:
    pool, executor = bare_pool(handle), bare_executor(tmp_path)
    dispatch(pool, handle, 1, stdin=b"input")
    apply(executor, popped(handle.sub))
    path = executor._stdin_path(1, executor.programs[1])
    assert path is not None and os.path.exists(path)
    pool.forget(1)
    pool.forget(99)  # never sent to it: nothing to tell
    assert not handle.defined and list(handle.forgets) == [1]
    dispatch(pool, handle, 2)
    records = popped(handle.sub)
    assert [r.kind for r in records] == [RecordKind.FORGET, RecordKind.DEFINE, RecordKind.RUN]
    apply(executor, records)
    assert list(executor.programs) == [2] and not executor.stdin_files
    assert not os.path.exists(path)
    assert handle.defined == {2} and not handle.forgets


def test_a_group_defined_again_is_sent_again(handle: ExecutorHandle,
                                             tmp_path: pathlib.Path) -> None:
    pool, executor = bare_pool(handle), bare_executor(tmp_path)
    dispatch(pool, handle, 1)
    apply(executor, popped(handle.sub))
    pool.forget(1)
    dispatch(pool, handle, 1)  # the server defined it again
    records = popped(handle.sub)
    assert [r.kind for r in records] == [RecordKind.DEFINE, RecordKind.RUN]
    apply(executor, records)
    assert list(executor.programs) == [1]


def test_the_tasks_in_flight_never_fill_the_ring(handle: ExecutorHandle) -> None:
    """The one it is about to run and the hand-offs behind it, each after a FORGET and a
    DEFINE: a push that waited for room would stall the node's loop."""
    pool = bare_pool(handle)
    handle.defined.add(1)
    for gid in range(2, 2 + 1 + HANDOFF_DEPTH):
        pool.forget(gid - 1)
        dispatch(pool, handle, gid)
    assert handle.sub.pending() == SUB_CAPACITY


def test_many_groups_go_in_records_of_bounded_size(handle: ExecutorHandle,
                                                   tmp_path: pathlib.Path) -> None:
    pool, executor = bare_pool(handle), bare_executor(tmp_path)
    many = range(1, FORGET_PER_RECORD + 11)
    executor.programs = dict.fromkeys(many)  # type: ignore[arg-type]
    handle.defined.update(many)
    pool.forget_groups()  # registered with a new server: every program is stale
    assert not handle.defined and len(handle.forgets) == len(many)
    dispatch(pool, handle, 5)  # a new group 5: defined anew, not forgotten after
    records = popped(handle.sub)
    assert [r.kind for r in records] == [RecordKind.FORGET, RecordKind.DEFINE, RecordKind.RUN]
    assert records[0].key == FORGET_PER_RECORD and len(records[0].payload) <= 16384
    apply(executor, records)
    assert len(handle.forgets) == 9  # the rest go before the next task
    dispatch(pool, handle, 5)
    apply(executor, popped(handle.sub))
    assert list(executor.programs) == [5] and not handle.forgets
