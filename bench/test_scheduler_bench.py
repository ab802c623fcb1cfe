"""The server core's cost per task end on a wide cluster (issue 9, item 6: at most 20 us of
server CPU a task with 100 nodes).

In-process, no I/O: a core with N one-CPU workers and an array of tasks, every worker full
(one running, its prefill queued). One step is what a node's report of one task's end costs
the core: the ``TaskUpdates`` handled (started, then finished), a scheduling pass, the new
assignment decided. The workers take turns, as 100 nodes running `sleep 0.1` do. Before the
core kept its workers ordered by fill (``RoomIndex``), each pass scanned every worker twice
(fill, then prefill) and a step cost O(workers); it should now barely grow with N.
``extra_info["us_per_task"]`` is the figure (the codec, the job book and the sockets come on top
in a real server: ``bench/scale_bench.py``).

Run: ``python -m pytest bench/test_scheduler_bench.py``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hqshm.cluster import reactor
from hqshm.cluster.core import Core, Group
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import ComputeTasks, TaskUpdates
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
from hqshm.cluster.scheduler import schedule
from pytest_benchmark.fixture import BenchmarkFixture

TASKS = 200_000
STEPS = 2_000


class Recorder:
    """An outbox and task events that keep only what the bench needs: who got which task."""

    def __init__(self) -> None:
        self.events = self
        self.sent: list[tuple[int, object]] = []

    def send(self, worker: int, message: object) -> None:
        self.sent.append((worker, message))

    def __getattr__(self, name: str) -> object:
        if name.startswith("task"):  # tasks_started, tasks_finished...: nothing to keep
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def one_cpu_cluster(nodes: int, memory: bool = False
                    ) -> tuple[Core, Recorder, dict[int, list[int]]]:
    """``memory``: each node has memory too (as `hq worker start` detects), which no task asks
    for, so that every node has room in some pool while its CPU is promised."""
    core, out = Core(), Recorder()
    pools = [ResourcePool("cpus", PoolKind.RANGE, start=0, end=0)]
    if memory:
        pools.append(ResourcePool("mem", PoolKind.SUM, size=16_000 * FRACTIONS))
    one_cpu = ResourceDescriptor(tuple(pools))
    for i in range(nodes):
        reactor.add_worker(core, f"node{i}", one_cpu, "default", None, 0.0)
    request = ResourceRequest((RequestVariant((ResourceEntry("cpus", FRACTIONS,
                                                             Policy.COMPACT),)),))
    keys = np.array([task_key(1, i) for i in range(TASKS)], dtype=np.uint64)
    reactor.add_group(core, Group(gid=1, job_id=1, request=request, priority=0, body=b"",
                                  keys=keys))
    schedule(core, out, 0.0)
    return core, out, collect(out, {})


def collect(out: Recorder, queues: dict[int, list[int]]) -> dict[int, list[int]]:
    for wid, message in out.sent:
        if isinstance(message, ComputeTasks):
            queues.setdefault(wid, []).extend(message.keys)
    out.sent.clear()
    return queues


@pytest.mark.parametrize(("nodes", "memory"), [(1, False), (10, False), (100, False),
                                               (100, True)], ids=["1", "10", "100", "100+mem"])
def test_task_end_and_pass(benchmark: BenchmarkFixture, nodes: int, memory: bool) -> None:
    core, out, queues = one_cpu_cluster(nodes, memory)
    turns = itertools.cycle(sorted(queues))
    clock = itertools.count(1)

    def step() -> None:
        wid = next(turns)
        key = queues[wid].pop(0)
        now = float(next(clock))
        reactor.on_task_updates(core, out, wid, TaskUpdates(started=((key, 0, now, 0),)), now)
        reactor.on_task_updates(core, out, wid,
                                TaskUpdates(finished=((key, 0, now, now + 0.1, 0),)), now)
        schedule(core, out, now)
        collect(out, queues)

    benchmark.pedantic(step, rounds=STEPS, iterations=1, warmup_rounds=100)
    assert all(queues[w] for w in queues), "every worker kept its next task"
    benchmark.extra_info["us_per_task"] = round(benchmark.stats.stats.median * 1e6, 1)
