"""When a real executor rings its node's doorbell: after a task's end when its ring runs low,
and, for a hand-off whose start the node waits to hear of (``RecordFlag.TELL_START``), once
that one started, so that one wake of the node collects both reports."""

from __future__ import annotations

import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_env import executor_pool

from hqshm.model.program import ProgramSpec, Stdio
from hqshm.node.executor import TaskPayload
from hqshm.node.pool import ExecutorPool
from hqshm.node.ring import RecordFlag, RecordKind

GID = 1
WAIT = 20.0  # seconds: a bell that does not come within this is missing


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ExecutorPool]:
    yield from executor_pool(tmp_path)


def program(tmp_path: Path) -> ProgramSpec:
    return ProgramSpec(args=("sleep", "0.2"), env={}, cwd=str(tmp_path),
                       stdout=Stdio(Stdio.NONE), stderr=Stdio(Stdio.NONE), job_id=3,
                       submit_dir=str(tmp_path), server_uid="uid001")


def dispatch(pool: ExecutorPool, spec: ProgramSpec, task: int, flags: int = 0) -> int:
    key = (spec.job_id << 32) | task
    payload = TaskPayload(GID, None, {}, [], True, False).encode()
    pool.dispatch(pool.handles[0], key, 0, GID, spec.encode(), [], -1, payload, flags)
    return key


def reports_at_bell(pool: ExecutorPool) -> list[tuple[RecordKind, int]]:
    """Wait for the bell, then what the completion ring holds: (kind, key) each."""
    ready, _, _ = select.select([pool.doorbell_r], [], [], WAIT)
    assert ready, "no bell"
    return [(record.kind, record.key) for _, record in pool.drain()]


def test_a_hand_off_told_started_rings_once_with_the_end_before_it(
        pool: ExecutorPool, tmp_path: Path) -> None:
    spec = program(tmp_path)
    first = dispatch(pool, spec, 0)
    second = dispatch(pool, spec, 1, int(RecordFlag.TELL_START))
    reports = reports_at_bell(pool)
    assert reports[:3] == [(RecordKind.STARTED, first), (RecordKind.ENDED, first),
                           (RecordKind.STARTED, second)]
    until_end(pool, second, reports)


def test_a_plain_hand_off_rings_for_more_at_the_end_before_it(
        pool: ExecutorPool, tmp_path: Path) -> None:
    spec = program(tmp_path)
    first = dispatch(pool, spec, 0)
    second = dispatch(pool, spec, 1)
    reports = reports_at_bell(pool)
    assert reports[:2] == [(RecordKind.STARTED, first), (RecordKind.ENDED, first)]
    until_end(pool, second, reports)


def until_end(pool: ExecutorPool, key: int, reports: list[tuple[RecordKind, int]]) -> None:
    """Bells come until the task's end is reported."""
    while (RecordKind.ENDED, key) not in reports:
        reports = reports_at_bell(pool)
