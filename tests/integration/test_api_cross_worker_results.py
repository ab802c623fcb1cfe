"""Held results (above 1 MiB) taken as arguments by tasks on another worker (issue 10, item 4):
the server fetches them from the worker that made them and sends them, in parts, to the
dependant's worker before the task (hqshm/server/results.py ``attach``), where they are mapped
as if made there; a worker gone before the fetch fails the dependant with a clear error; the
order of the messages to a worker is kept while it waits (a cancel does not overtake the task,
and the task does not run); forgetting the job removes the pushed copy."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import result_functions as rf
from harness import HqEnv
from test_api_large_results import stored_on_workers

from hqshm import taskresult
from hqshm.api.client import Client
from hqshm.api.job import Job
from hqshm.api.resources import ResourceRequest

HERE = ResourceRequest(resources={"here": 1})
THERE = ResourceRequest(resources={"there": 1})


def two_workers(hq_env: HqEnv) -> None:
    hq_env.start_worker(cpus=1, args=["--resource", "here=sum(1)"])
    hq_env.start_worker(cpus=1, args=["--resource", "there=sum(1)"])


def test_a_large_array_goes_to_a_dependant_on_another_worker(hq_env: HqEnv,
                                                            client: Client) -> None:
    two_workers(hq_env)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    a = job.function(rf.make_array, args=(625_000,), resources=HERE)  # 5 MB of float64
    b = job.function(rf.array_info, args=(a,), resources=THERE)
    c = job.function(rf.echo, args=(a,), resources=THERE)
    submitted = client.submit(job)
    info = submitted.result(b, timeout=60)
    assert info["sum"] == float(np.arange(625_000.0).sum())
    assert info["base"] == "mmap" and not info["writeable"]  # mapped from the pushed copy
    value = submitted.result(c, timeout=60)
    assert isinstance(value, np.ndarray) and np.array_equal(value, np.arange(625_000.0))
    # a on worker 1, its copy on worker 2 (pushed once for b and c), c held on worker 2.
    files = stored_on_workers(client, submitted.id)
    assert len(files) == 3 and len({f.name for f in files}) == 2
    client.forget(submitted)
    hq_env.wait_until(lambda: not stored_on_workers(client, submitted.id),
                      "the workers to remove the job's results and the pushed copy")


def test_a_chain_of_large_results_across_workers(hq_env: HqEnv, client: Client) -> None:
    two_workers(hq_env)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    size = 3_000_000
    step = job.function(rf.big, args=(size,), resources=HERE)
    for i in range(4):
        step = job.function(rf.chain, args=(step,), resources=THERE if i % 2 == 0 else HERE)
    submitted = client.submit(job)
    assert submitted.result(step, timeout=60) == b"x" * size
    assert client.wait_for_jobs([submitted])


def test_a_producer_gone_before_its_dependant_is_sent_is_a_clear_error(
        hq_env: HqEnv, client: Client) -> None:
    two_workers(hq_env)
    gate = hq_env.work / "gate"
    job = Job(default_env=rf.FUNCTIONS_PATH)
    a = job.function(rf.big, args=(3_000_000,), resources=HERE)
    # Two prerequisites on worker 2 hold b back: a task with one left would go there early
    # (cluster/scheduler.py place_early), with a's result fetched while worker 1 still lived.
    wait = job.function(rf.wait_for_file, args=(str(gate),), resources=THERE)
    wait2 = job.function(rf.wait_for_file, args=(str(gate),), resources=THERE)
    b = job.function(rf.echo, args=(a,), resources=THERE, deps=[wait, wait2])
    submitted = client.submit(job)
    hq_env.wait_for_tasks(submitted.id, "finished", count=1)  # a (the gate waits)
    hq_env.kill_worker(1)
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")
    gate.touch()
    with pytest.raises(taskresult.ResultError,
                       match=r"The result of task 0 \(an argument of this task\) could not be "
                             r"fetched: worker 1, which held it, is gone"):
        submitted.result(b, timeout=60)
    info = hq_env.command(["task", "info", str(submitted.id), "3"])
    assert "could not be fetched: worker 1" in info


def test_a_result_above_the_cap_on_another_worker_is_a_clear_error(hq_env: HqEnv,
                                                                   client: Client) -> None:
    two_workers(hq_env)
    job = Job(default_env=rf.FUNCTIONS_PATH, max_result_size=100)
    a = job.function(rf.big, args=(1000,), resources=HERE)
    b = job.function(rf.echo, args=(a,), resources=THERE)
    submitted = client.submit(job)
    with pytest.raises(taskresult.ResultError,
                       match=r"could not be fetched: it is larger \(\d+ bytes\) than its job's "
                             r"max_result_size \(100 bytes\), so it stays on worker 1"):
        submitted.result(b, timeout=60)


def test_a_cancel_does_not_overtake_a_dependant_waiting_for_its_argument(
        hq_env: HqEnv, client: Client) -> None:
    """The dependant's ComputeTasks waits for the fetch (worker 1 is stopped meanwhile); the
    cancel sent after it waits behind it: the dependant never runs, and worker 2 serves on."""
    two_workers(hq_env)
    trace, gate = hq_env.work / "ran", hq_env.work / "gate"
    job = Job(default_env=rf.FUNCTIONS_PATH)
    a = job.function(rf.big, args=(12_000_000,), resources=HERE)
    # Two prerequisites: with one, the dependant would go to worker 2 early (and its argument
    # with it) while worker 1 still ran (cluster/scheduler.py place_early).
    wait = job.function(rf.wait_for_file, args=(str(gate),), resources=THERE)
    wait2 = job.function(rf.wait_for_file, args=(str(gate),), resources=THERE)
    job.function(rf.mark, args=(str(trace), a), resources=THERE, deps=[wait, wait2])
    submitted = client.submit(job)
    hq_env.wait_for_tasks(submitted.id, "finished", count=1)  # a (the gate waits)
    producer = hq_env.workers[1].pid
    os.kill(producer, signal.SIGSTOP)  # the fetch of a's result waits for it
    try:
        gate.touch()
        hq_env.wait_for_tasks(submitted.id, "finished", count=3)
        time.sleep(0.3)  # the dependant went to worker 2's held queue
        hq_env.command(["job", "cancel", str(submitted.id)])
        assert hq_env.task_states(submitted.id)[3] == "canceled"
    finally:
        os.kill(producer, signal.SIGCONT)
    time.sleep(1.0)
    assert not trace.exists()
    # Worker 2's queue was released: it runs the next job's task that takes a's kind of value.
    job2 = Job(default_env=rf.FUNCTIONS_PATH)
    c = job2.function(rf.big, args=(2_000_000,), resources=HERE)
    d = job2.function(rf.mark, args=(str(trace), c), resources=THERE)
    submitted2 = client.submit(job2)
    assert submitted2.result(d, timeout=60) == 2_000_000
    assert trace.exists()
    assert hq_env.task_states(submitted.id) == {0: "finished", 1: "finished", 2: "finished",
                                                3: "canceled"}


@pytest.mark.slow
def test_a_gather_of_more_inline_results_than_one_frame_holds(hq_env: HqEnv,
                                                             client: Client) -> None:
    """300 results of 1 MB (each inline, under KEPT_INLINE) made on one worker, all taken by
    one task on the other: 300 MB, past the node link's 256 MiB frame limit. In one message
    they ended the link, and the gather never ran; now the message carries a share and the
    rest is stored on the worker before it (hqshm/server/results.py, ATTACH_BYTES)."""
    two_workers(hq_env)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    size = 1_000_000
    parts = [job.function(rf.big, args=(size,), resources=HERE, stdout=None, stderr=None)
             for _ in range(300)]
    total = job.function(rf.total_length, args=tuple(parts), resources=THERE)
    submitted = client.submit(job)
    assert submitted.result(total, timeout=120) == 300 * size
    assert client.wait_for_jobs([submitted])
