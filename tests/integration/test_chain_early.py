"""Chains of dependent tasks with dependants sent early to their prerequisite's worker
(``scheduler.place_early``, the node's ``ComputeTasks.after``): order, results, failures
and a lost worker behave as when the server released each step itself."""

from __future__ import annotations

import pytest
import result_functions as rf
from harness import HqEnv

from hqshm.api.client import Client
from hqshm.api.job import Job


def test_a_chain_of_two_hundred_function_tasks_passes_results(hq_env: HqEnv,
                                                              client: Client) -> None:
    hq_env.start_worker(cpus=2)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    data = bytes(range(256)) * 4
    task = job.function(rf.echo, args=(data,))
    for _ in range(200):
        task = job.function(rf.chain, args=(task,))
    submitted = client.submit(job)
    shift = 200 % len(data)
    assert submitted.result(task, timeout=120) == data[shift:] + data[:shift]
    rows = hq_env.json(["task", "list", str(submitted.id)])[str(submitted.id)]
    assert {r["state"] for r in rows} == {"finished"}
    # In order: each step's argument is the result of the one before (the value shows it).


def test_a_failing_step_cancels_the_rest_as_before(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=2)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    task = job.function(rf.echo, args=(b"x" * 1024,))
    for _ in range(10):
        task = job.function(rf.chain, args=(task,))
    failing = job.program(["false"], deps=[task])
    task = job.function(rf.echo, args=(b"y",), deps=[failing])
    rest = [task]
    for _ in range(9):
        task = job.function(rf.chain, args=(task,))
        rest.append(task)
    submitted = client.submit(job)
    hq_env.wait_for_job_state(submitted.id, ["FAILED", "ABORTED", "CANCELED"])
    states = hq_env.task_states(submitted.id)
    assert states[failing.task_id] == "failed"
    assert all(states[t.task_id] == "finished" for t in job.tasks[:11])
    after = {states[t.task_id] for t in rest}
    assert after == {"aborted"}, after  # as a failed dependency always did


def test_killing_the_worker_mid_chain_completes_on_another(hq_env: HqEnv,
                                                          client: Client) -> None:
    hq_env.start_worker(cpus=2)
    job = Job()
    task = job.program(["sleep", "0.1"])
    for _ in range(30):
        task = job.program(["sleep", "0.1"], deps=[task])
    submitted = client.submit(job)
    job_id = submitted.id
    hq_env.wait_until(
        lambda: list(hq_env.task_states(job_id).values()).count("finished") >= 5,
        "five steps finished")
    hq_env.kill_worker(next(iter(hq_env.workers)))
    hq_env.start_worker(cpus=2)
    hq_env.wait_for_job_state(job_id, "FINISHED", timeout=60)
    assert set(hq_env.task_states(job_id).values()) == {"finished"}


@pytest.mark.parametrize("cpus", [1])
def test_a_job_file_graph_with_a_failing_step(hq_env: HqEnv, client: Client,
                                                             cpus: int,
                                                             tmp_path: object) -> None:
    from pathlib import Path
    hq_env.start_worker(cpus=cpus)
    path = Path(str(tmp_path)) / "job.toml"
    path.write_text("\n".join([
        '[[task]]', 'id = 0', 'command = ["true"]',
        '[[task]]', 'id = 1', 'command = ["true"]', 'deps = [0]',
        '[[task]]', 'id = 2', 'command = ["false"]', 'deps = [1]',
        '[[task]]', 'id = 3', 'command = ["true"]', 'deps = [2]',
        '[[task]]', 'id = 4', 'command = ["true"]', 'deps = [1]',
    ]) + "\n")
    hq_env.command(["job", "submit-file", str(path)])
    hq_env.wait_for_job_state(1, ["FAILED"])
    states = hq_env.task_states(1)
    assert states[0] == states[1] == states[4] == "finished"
    assert states[2] == "failed"
    assert states[3] == "aborted"


def test_a_step_chained_behind_a_failing_one_never_runs(hq_env: HqEnv, tmp_path: object) -> None:
    """The next step waits behind its running prerequisite on the same executor (flagged to
    start only after a good end): when that fails, it must not run, and ends aborted."""
    from pathlib import Path
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    work = Path(str(tmp_path))
    path = work / "job.toml"
    path.write_text("\n".join([
        '[[task]]', 'id = 0', 'command = ["sleep", "0.5"]',
        '[[task]]', 'id = 1', 'command = ["sh", "-c", "sleep 0.5; exit 3"]', 'deps = [0]',
        '[[task]]', 'id = 2', f'command = ["touch", "{work / "ran"}"]', 'deps = [1]',
        '[[task]]', 'id = 3', f'command = ["touch", "{work / "ran-too"}"]', 'deps = [2]',
    ]) + "\n")
    hq_env.command(["job", "submit-file", str(path)])
    hq_env.wait_for_job_state(1, ["FAILED"])
    states = hq_env.task_states(1)
    assert (states[0], states[1], states[2], states[3]) == (
        "finished", "failed", "aborted", "aborted")
    assert not (work / "ran").exists() and not (work / "ran-too").exists()
    hq_env.command(["job", "submit-file", str(path)])  # the node is still sound
    hq_env.wait_for_job_state(2, ["FAILED"])
