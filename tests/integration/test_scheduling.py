"""Where tasks run: load balancing, work stealing, worker loss and packing.

Spec: design.md "Cluster layer" (prefill, work stealing, a task never runs twice for one
instance), jobs.md §1 and §8.3 (instance ids, worker loss), conformance.md "Server" (packing) and
"Submitting and job states" (worker loss).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from harness import HqEnv
from job_helpers import submit, task_json, task_workers, worker_runtime_info


def test_tasks_spread_by_worker_speed_and_run_once(hq_env: HqEnv) -> None:
    hq_env.start_server()
    delays = {"fast": "0", "medium": "0.3", "slow": "2"}
    for name, delay in delays.items():
        hq_env.start_worker(cpus=1, hostname=name, env={"DELAY": delay})
    log = hq_env.root / "ran"
    n_tasks = 40
    flags = f"--array 1-{n_tasks} --stdout none --stderr none".split()
    submit(hq_env, [*flags, "--", "bash", "-c", f"sleep $DELAY; echo $HQ_TASK_ID >> {log}"])
    hq_env.command(["job", "wait", "1"])
    assert hq_env.job_states() == {1: "FINISHED"}
    ran = Counter(int(line) for line in log.read_text().split())
    assert ran == Counter(range(1, n_tasks + 1)), "every task runs exactly once"
    per_worker = Counter(task_workers(hq_env, 1).values())
    assert sum(per_worker.values()) == n_tasks
    assert set(per_worker) <= set(delays)
    assert per_worker["fast"] > per_worker["slow"], per_worker
    assert per_worker["fast"] > per_worker["medium"], per_worker


def test_idle_worker_steals_a_task_queued_on_a_busy_one(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    submit(hq_env, ["--array", "1-2", "--", "sleep", "100"])
    # Both tasks are on worker 1: one running, one queued behind it, none left at the server.
    hq_env.wait_until(
        lambda: worker_runtime_info(hq_env, 1) == "assigned tasks: 2; running tasks: 1",
        "worker 1 to hold both tasks",
    )
    states = hq_env.task_states(1)
    assert sorted(states.values()) == ["running", "waiting"]
    queued = next(t for t, s in states.items() if s == "waiting")
    hq_env.start_worker(cpus=1)
    # Worker 1 cannot start the queued task for 100 s; only a steal lets it run now.
    hq_env.wait_for_tasks(1, "running", count=2)
    assert task_workers(hq_env, 1)[queued] == "worker2"
    assert sorted(task_workers(hq_env, 1).values()) == ["worker1", "worker2"]
    assert worker_runtime_info(hq_env, 1) == "assigned tasks: 1; running tasks: 1"
    assert worker_runtime_info(hq_env, 2) == "assigned tasks: 1; running tasks: 1"
    assert {t["id"]: t.get("worker") for t in task_json(hq_env, 1).values()}[queued] == 2


def test_tasks_of_a_killed_worker_run_again_elsewhere(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    script = "echo $HQ_INSTANCE_ID; if [ $HQ_INSTANCE_ID = 0 ]; then sleep 100; fi"
    submit(hq_env, ["--array", "1-2", "--", "bash", "-c", script])
    hq_env.wait_for_tasks(1, "running", count=2)
    hq_env.kill_worker(1)
    hq_env.wait_until(
        lambda: hq_env.task_states(1) == {1: "waiting", 2: "waiting"},
        "the lost worker's tasks to be waiting again",
    )
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")
    hq_env.start_worker(cpus=2)
    hq_env.command(["job", "wait", "1"])
    assert hq_env.job_states() == {1: "FINISHED"}
    assert task_workers(hq_env, 1) == {1: "worker2", 2: "worker2"}
    for task_id in (1, 2):
        assert (hq_env.work / "job-1" / f"{task_id}.stdout").read_text() == "1\n"


@pytest.mark.slow
def test_single_cpu_jobs_pack_onto_two_of_four_workers(hq_env: HqEnv) -> None:
    hq_env.start_server()
    release = hq_env.root / "release"
    # Tasks hold their CPU until released, so placement never depends on how fast workers
    # start: with 4 CPUs a worker, 8 single-CPU tasks fill exactly two workers.
    for _ in range(8):
        submit(hq_env, ["--", "bash", "-c", f"while [ ! -e {release} ]; do sleep 0.05; done"])
    for _ in range(4):
        hq_env.start_worker(cpus=4)
    hq_env.wait_for_job_state(list(range(1, 9)), "RUNNING")
    hosts = {task_workers(hq_env, job)[0] for job in range(1, 9)}
    release.touch()
    hq_env.command(["job", "wait", "all"])
    assert hq_env.job_states() == dict.fromkeys(range(1, 9), "FINISHED")
    assert len(hosts) == 2, hosts
    assert hosts == {task_workers(hq_env, job)[0] for job in range(1, 9)}


def test_a_waiting_higher_priority_task_is_not_overtaken_by_lower_ones(hq_env: HqEnv) -> None:
    """Issue 8: five 2-CPU tasks of priority 50 stay WAITING on a 4-CPU worker while a 4-CPU
    task of priority 100 waits for the cores a running task holds; it starts first."""
    hq_env.start_server()
    hq_env.start_worker(cpus=4)
    order, gate = hq_env.root / "order", hq_env.root / "gate"

    def task(name: str, then: str = "true") -> list[str]:
        return ["--", "bash", "-c", f"echo {name} >> {order}; {then}"]

    quiet = ["--stdout", "none", "--stderr", "none"]
    submit(hq_env, [*quiet, "--cpus", "2",
                    *task("base", f"while [ ! -e {gate} ]; do sleep 0.05; done")])
    hq_env.wait_for_tasks(1, "running")
    submit(hq_env, [*quiet, "--cpus", "4", "--priority", "100", *task("big", "sleep 0.5")])
    submit(hq_env, [*quiet, "--array", "1-5", "--cpus", "2", "--priority", "50",
                    *task("small")])
    time.sleep(1.0)  # time enough for a small task to take the two free cores, if it could
    assert hq_env.task_states(2) == {0: "waiting"}
    assert set(hq_env.task_states(3).values()) == {"waiting"}
    gate.touch()
    hq_env.command(["job", "wait", "all"])
    assert hq_env.job_states() == {1: "FINISHED", 2: "FINISHED", 3: "FINISHED"}
    assert order.read_text().split() == ["base", "big", *["small"] * 5]
