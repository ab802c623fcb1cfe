"""When an executor rings its node for a chain (hqshm/node/executor.py, ``Executor._ended``):
for a chain's steps (AFTER_OK) once CHAIN_REFILL_AT are left, so that the node asks the server
for the next steps while those run (half of the node's CHAIN_DEPTH); other tasks ring as
test_executor_bell.py shows (a bare executor here: the rule, not the process)."""

from __future__ import annotations

import os
import pathlib

import pytest

from hqshm.node.core import CHAIN_DEPTH
from hqshm.node.executor import CHAIN_REFILL_AT, FAILED, OK, Executor
from hqshm.node.ring import Record, RecordFlag, RecordKind, Ring, drain_doorbell, open_doorbell


@pytest.fixture
def executor(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    sub = Ring.create("hqshm-test-bell", capacity=4 * CHAIN_DEPTH, payload_size=1024,
                      spill_dir=str(tmp_path), spin=0.0)
    done = Ring.create("hqshm-test-bell-done", capacity=4 * CHAIN_DEPTH, payload_size=1024,
                       spill_dir=str(tmp_path), spin=0.0)
    read_fd, write_fd = open_doorbell()
    bare = object.__new__(Executor)
    bare.sub, bare.done, bare.doorbell, bare.bell_owed = sub, done, write_fd, False
    yield bare, read_fd
    sub.close()
    done.close()
    os.close(read_fd)
    os.close(write_fd)


def rang(read_fd: int) -> bool:
    try:
        got = os.read(read_fd, 4096)
    except BlockingIOError:
        return False
    drain_doorbell(read_fd)
    return bool(got)


def run_record(key: int, flags: int = 0) -> Record:
    return Record(key, 0, RecordKind.RUN, flags, -1, 0, 0, 0.0, 0.0, [], b"")


def queue(ring: Ring, n: int) -> None:
    for i in range(n):
        ring.push(key=100 + i, instance=0, kind=RecordKind.RUN, flags=RecordFlag.AFTER_OK)


def test_a_chain_step_rings_when_half_its_queue_is_left(executor) -> None:  # type: ignore[no-untyped-def]
    bare, bell = executor
    assert CHAIN_REFILL_AT == CHAIN_DEPTH // 2
    queue(bare.sub, CHAIN_REFILL_AT + 1)
    bare._ended(run_record(1, RecordFlag.AFTER_OK), OK, 0.0, 0.0)
    assert not rang(bell)  # more than half left
    bare.sub.pop(0)
    bare._ended(run_record(2, RecordFlag.AFTER_OK), OK, 0.0, 0.0)
    assert rang(bell)
    bare.sub.pop(0)
    bare._ended(run_record(3, RecordFlag.AFTER_OK), OK, 0.0, 0.0)
    assert not rang(bell)  # once a crossing: the node has asked already


def test_other_tasks_ring_only_near_the_end_of_their_queue(executor) -> None:  # type: ignore[no-untyped-def]
    bare, bell = executor
    queue(bare.sub, CHAIN_REFILL_AT)
    bare._ended(run_record(1), OK, 0.0, 0.0)  # a hand-off of a plain group
    assert not rang(bell) and not bare.bell_owed
    bare._ended(run_record(2), FAILED, 0.0, 0.0, error="failed")
    assert rang(bell)  # a failure is news at once
    while bare.sub.pop(0) is not None:
        pass
    bare._ended(run_record(3), OK, 0.0, 0.0)
    assert rang(bell)  # nothing left
