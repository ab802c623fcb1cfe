"""Nodes that outlive their server (issue 8 item 3; `--on-server-lost reconnect`, not in HQ).

A node started with `--on-server-lost reconnect` whose server dies keeps running its tasks,
keeps their reports, and registers again (within 10 s) with the server restarted in the same
server directory. A server restored from its journal takes back the tasks it restored as
running on that node and never runs them again; a fresh server (another UID) rejects them, and
the node kills them and goes on as a new worker.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from harness import HqEnv
from job_helpers import submit
from worker_helpers import read_pid, wait_exit, wait_gone

REREGISTER_LIMIT = 10.0  # the bound, from the server's start to the registration
LOST = "Server lost; running tasks go on"


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def wait_lines(env: HqEnv, path: Path, count: int) -> list[str]:
    return env.wait_until(lambda: len(lines(path)) >= count and lines(path),
                          f"{count} lines in {path.name}")


def online_workers(env: HqEnv) -> list[dict]:
    return env.json(["worker", "list"])


def restart_and_wait_for_the_node(env: HqEnv, server_args: list[str],
                                  down: float = 0.0) -> dict:
    """SIGKILL the server, start it again after ``down`` seconds, and wait for the node to
    register (its record)."""
    env.kill_server(signal.SIGKILL)
    env.wait_until(lambda: LOST in env.log("worker1"), "the node to see its server lost")
    time.sleep(down)
    env.start_server(server_args)
    started = time.monotonic()
    [worker] = env.wait_until(lambda: online_workers(env), "the node to register again",
                              timeout=REREGISTER_LIMIT + 5.0)
    assert time.monotonic() - started < REREGISTER_LIMIT
    return worker


@pytest.mark.parametrize("down", [0.0, 4.0], ids=["tasks-still-running", "tasks-ended"])
def test_tasks_of_a_node_that_outlives_its_server_finish_once(hq_env: HqEnv, tmp_path: Path,
                                                              down: float) -> None:
    """Whether the tasks still run when the server comes back or ended while it was
    away (their reports kept), the restored server takes them back: instance 0, once."""
    journal = tmp_path / "journal"
    ran = tmp_path / "ran"
    hq_env.start_server(["--journal", str(journal)])
    node = hq_env.start_worker(cpus=3, on_server_lost="reconnect")
    script = f'echo "$HQ_TASK_ID:$HQ_INSTANCE_ID" >> {ran}; sleep 3'
    submit(hq_env, ["--array", "0-2", "--", "bash", "-c", script])
    wait_lines(hq_env, ran, 3)
    hq_env.wait_for_tasks(1, "running", count=3)  # their starts are in the journal
    worker = restart_and_wait_for_the_node(hq_env, ["--journal", str(journal)], down)
    assert worker["id"] == 2  # a new registration: the next id of the restored server
    hq_env.wait_for_job_state(1, "FINISHED")
    assert sorted(lines(ran)) == ["0:0", "1:0", "2:0"]  # once each, never instance 1
    assert node.poll() is None
    assert "3 tasks taken back by the server, 0 rejected" in hq_env.log("worker1")


def test_a_fresh_server_rejects_the_tasks_and_the_node_goes_on_as_a_new_worker(
        hq_env: HqEnv, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    hq_env.start_server()
    node = hq_env.start_worker(cpus=2, on_server_lost="reconnect")
    script = f'echo "start:$HQ_TASK_ID" >> {ran}; sleep 4; echo "end:$HQ_TASK_ID" >> {ran}'
    submit(hq_env, ["--array", "0-1", "--", "bash", "-c", script])
    wait_lines(hq_env, ran, 2)
    worker = restart_and_wait_for_the_node(hq_env, [])  # no journal: another server UID
    assert (worker["id"], worker["configuration"]["hostname"]) == (1, "worker1")
    hq_env.wait_until(lambda: "0 tasks taken back by the server, 2 rejected"
                      in hq_env.log("worker1"), "the node to kill what it held")
    time.sleep(5.0)  # past the end the killed tasks would have had
    assert sorted(lines(ran)) == ["start:0", "start:1"]
    # The new server knows nothing of them; the node runs its tasks as any worker.
    job = submit(hq_env, ["--", "bash", "-c", f'echo "new:$HQ_TASK_ID" >> {ran}'])
    assert job == 1
    hq_env.wait_for_job_state(job, "FINISHED")
    assert lines(ran)[-1] == "new:0"
    assert node.poll() is None


def test_a_stopped_server_still_stops_a_reconnecting_node(hq_env: HqEnv) -> None:
    """`hq server stop` is no loss: the node kills its tasks and exits 1, as with `stop`."""
    hq_env.start_server()
    node = hq_env.start_worker(on_server_lost="reconnect")
    hq_env.command(["submit", "--", "bash", "-c", "echo $$ > task.pid; sleep 60"])
    task = read_pid(hq_env, hq_env.work / "task.pid")
    hq_env.command(["server", "stop"])
    assert wait_exit(node) == 1
    wait_gone(hq_env, [task], "the task to be killed")
    assert LOST not in hq_env.log("worker1")


def test_a_node_outlives_two_restarts_in_a_row(hq_env: HqEnv, tmp_path: Path) -> None:
    """The tasks a restored server took back are that node's in its journal: a second
    restart gives them back to it again."""
    journal = tmp_path / "journal"
    ran = tmp_path / "ran"
    hq_env.start_server(["--journal", str(journal)])
    hq_env.start_worker(cpus=2, on_server_lost="reconnect")
    script = f'echo "$HQ_TASK_ID:$HQ_INSTANCE_ID" >> {ran}; sleep 6'
    submit(hq_env, ["--array", "0-1", "--", "bash", "-c", script])
    hq_env.wait_for_tasks(1, "running", count=2)
    for expected_id in (2, 3):
        worker = restart_and_wait_for_the_node(hq_env, ["--journal", str(journal)])
        assert worker["id"] == expected_id
        taken = expected_id - 1  # times the node was given its two tasks back
        hq_env.wait_until(lambda n=taken: hq_env.log("worker1").count("2 tasks taken back") == n,
                          "the node to be given its tasks back")
    hq_env.wait_for_job_state(1, "FINISHED")
    assert sorted(lines(ran)) == ["0:0", "1:0"]
