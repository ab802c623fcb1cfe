"""Nodes as users see them: `hq worker start` / `hq-node`, their options, states and commands.

Spec: deployment.md §4, cli.md §4, output.md §3.2/§3.3/§4.2/§5, jobs.md §7.
"""

from __future__ import annotations

import os
import re
import signal
import socket

import pytest
from harness import HqEnv, parse_tables
from worker_helpers import (
    children_of,
    kill_pids,
    read_pid,
    remove_shm_segments_of,
    shm_segments_of,
    start_node,
    wait_exit,
    wait_gone,
    wait_log,
    worker_table,
)

# A task that announces itself, then runs until the test creates the file `go` (cwd = work).
GATED = (
    "touch started-$HQ_TASK_ID; while [ ! -f go ]; do sleep 0.02; done; "
    "echo ok > finished-$HQ_TASK_ID"
)
# A task whose own pid (after exec) is in task.pid.
SLEEPER = "echo $$ > task.pid; exec sleep 100"

WORKER_INFO_KEYS = [
    "Worker",
    "State",
    "Hostname",
    "Started",
    "Data provider",
    "Working directory",
    "Heartbeat",
    "Idle timeout",
    "Overview interval",
    "Resources",
    "Time Limit",
    "Process pid",
    "Group",
    "Manager",
    "Manager Job ID",
    "Last task started",
    "Runtime Info",
]
JSON_WORKER_KEYS = {
    "id",
    "configuration",
    "allocation",
    "runtime_info",
    "last_task_started",
    "started",
    "ended",
}
JSON_CONFIGURATION_KEYS = {
    "heartbeat_interval",
    "idle_timeout",
    "time_limit",
    "work_dir",
    "hostname",
    "group",
    "listen_address",
    "resources",
    "on_server_lost",
    "min_utilization",
}
QUOTED_TIMESTAMP = re.compile(r'^"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"$')


def started_files(hq_env: HqEnv) -> list[str]:
    return sorted(p.name for p in hq_env.work.glob("started-*"))


def finished_files(hq_env: HqEnv) -> list[str]:
    return sorted(p.name for p in hq_env.work.glob("finished-*"))


# --- starting workers ---------------------------------------------------------------------


def test_worker_start_and_hq_node_are_the_same_program(hq_env: HqEnv) -> None:
    hq_env.start_server()
    first = hq_env.start_worker(cpus=1)
    second = start_node(hq_env, [], hostname="node2", cpus="1")
    table = hq_env.command(["worker", "list"], as_table=True)
    assert table.column("ID") == ["1", "2"]
    assert table.column("Hostname") == ["worker1", "node2"]
    assert table.column("State") == ["RUNNING", "RUNNING"]
    assert worker_table(hq_env, 1).get("Process pid") == str(first.pid)
    assert worker_table(hq_env, 2).get("Process pid") == str(second.pid)
    # Each node has one CPU, so each must run one of the two gated tasks.
    hq_env.command(["submit", "--array", "1-2", "--", "bash", "-c", GATED])
    hq_env.wait_until(lambda: len(started_files(hq_env)) == 2, "both tasks to start")
    (hq_env.work / "go").touch()
    hq_env.wait_for_job_state(1, "FINISHED")
    workers = hq_env.command(["task", "list", "1"], as_table=True).column("Worker")
    assert sorted(workers) == ["node2", "worker1"]


def test_cpus_given_as_count_and_as_list(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4)
    hq_env.start_worker(cpus="[0,1]")
    table = hq_env.command(["worker", "list"], as_table=True)
    assert table.column("Resources") == ["cpus 4", "cpus 2"]
    assert worker_table(hq_env, 1).get("Resources") == "cpus: 4"
    assert worker_table(hq_env, 2).get("Resources") == "cpus: 2"
    [count] = hq_env.json(["worker", "info", "1"])
    assert count["configuration"]["resources"]["resources"] == [
        {"name": "cpus", "kind": "range", "start": 0, "end": 3}
    ]
    [listed] = hq_env.json(["worker", "info", "2"])
    assert listed["configuration"]["resources"]["resources"] == [
        {"name": "cpus", "kind": "list", "values": ["0", "1"]}
    ]


def test_cpus_are_detected_without_cpus_option(hq_env: HqEnv) -> None:
    hq_env.start_server()
    start_node(hq_env, [], hostname="detected", cpus=None)
    mine = sorted(os.sched_getaffinity(0))
    [worker] = hq_env.json(["worker", "info", "1"])
    pools = {p["name"]: p for p in worker["configuration"]["resources"]["resources"]}
    cpus = pools["cpus"]
    if cpus["kind"] == "list":
        labels = cpus["values"]
    else:
        assert cpus["kind"] == "groups", cpus
        labels = [label for group in cpus["groups"] for label in group]
    assert sorted(int(label) for label in labels) == mine
    resources = worker_table(hq_env, 1).get("Resources").splitlines()
    if cpus["kind"] == "list":
        assert resources[0] == f"cpus: {len(mine)}"
    assert any(line.startswith("mem: ") for line in resources), "mem is detected by default"


def test_hostname_and_worker_address(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(hostname="myhost")
    start_node(hq_env, [])  # no --hostname: the system's
    assert hq_env.command(["worker", "address", "1"]) == "myhost\n"
    assert worker_table(hq_env, 1).get("Hostname") == "myhost"
    assert hq_env.command(["worker", "address", "2"]) == socket.gethostname() + "\n"
    hq_env.command(["worker", "address", "5"], expect_fail="Worker 5 not found")


def test_work_dir_is_created_and_used(hq_env: HqEnv) -> None:
    hq_env.start_server()
    work_dir = hq_env.root / "worker1"
    hq_env.start_worker()
    assert work_dir.is_dir()
    assert worker_table(hq_env, 1).get("Working directory") == str(work_dir)
    hq_env.command(
        [
            "submit",
            "--task-dir",
            "--wait",
            "--",
            "bash",
            "-c",
            'echo "$HQ_TASK_DIR"; test -d "$HQ_TASK_DIR"',
        ]
    )
    assert hq_env.job_states() == {1: "FINISHED"}
    task_dir = (hq_env.work / "job-1" / "0.stdout").read_text().strip()
    assert task_dir.startswith(f"{work_dir}/"), task_dir


# The workers of these tests leave after a second or so: waiting to see them online, or reading
# their table before they leave, would race with their timeouts on a busy machine.


def test_idle_timeout_stops_worker_with_exit_code_0(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker(args=["--idle-timeout", "1s"], wait=False)
    assert wait_exit(worker) == 0
    assert worker_table(hq_env, 1).get("Idle timeout") == "1s"
    assert hq_env.worker_states() == {1: "IDLE TIMEOUT"}
    assert hq_env.command(["worker", "list"], as_table=True).rows == []


def test_running_task_keeps_idle_worker_alive(hq_env: HqEnv) -> None:
    hq_env.start_server()
    # The task runs twice as long as the idle timeout; had the worker left, nobody would
    # finish it (there is no other worker). It waits before the worker starts: a worker that
    # idled while `hq submit` started would leave before it could get the task.
    hq_env.command(["submit", "--", "bash", "-c", "sleep 2; echo $HQ_INSTANCE_ID"])
    worker = hq_env.start_worker(args=["--idle-timeout", "1s"])
    hq_env.wait_for_job_state(1, "FINISHED")
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == "0\n"
    assert wait_exit(worker) == 0
    assert hq_env.worker_states() == {1: "IDLE TIMEOUT"}


def test_server_idle_timeout_applies_to_workers_without_their_own(hq_env: HqEnv) -> None:
    hq_env.start_server(["--idle-timeout", "1s"])
    worker = hq_env.start_worker(wait=False)
    assert wait_exit(worker, timeout=8.0) == 0
    assert worker_table(hq_env, 1).get("Idle timeout") == "1s"
    assert hq_env.worker_states() == {1: "IDLE TIMEOUT"}


def test_time_limit_is_reached_and_shown(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker(args=["--time-limit", "1s 200ms"], wait=False)
    hq_env.wait_for_worker_state(1, "TIME LIMIT REACHED")
    wait_exit(worker)
    assert worker_table(hq_env, 1).get("Time Limit") == "1s 200ms"


def test_server_lost_with_stop_kills_running_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker(on_server_lost="stop")
    hq_env.command(["submit", "--", "bash", "-c", SLEEPER])
    task = read_pid(hq_env, hq_env.work / "task.pid")
    hq_env.kill_server()
    assert wait_exit(worker) == 1
    wait_gone(hq_env, [task], "the task to be killed")


def test_server_lost_with_finish_running_lets_running_task_finish(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker(cpus=1, on_server_lost="finish-running")
    hq_env.command(["submit", "--array", "1-2", "--", "bash", "-c", GATED])
    hq_env.wait_until(lambda: started_files(hq_env), "a task to start")
    hq_env.kill_server()
    wait_log(hq_env, "worker1", "Waiting for finishing running tasks")
    assert worker.poll() is None, "the worker left before its running task ended"
    (hq_env.work / "go").touch()
    assert wait_exit(worker) == 1
    assert len(started_files(hq_env)) == 1, "a second task was started without a server"
    assert finished_files(hq_env) == [started_files(hq_env)[0].replace("started", "finished")]


def test_worker_stop_of_finish_running_worker_stops_at_once(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker(on_server_lost="finish-running")
    hq_env.command(["submit", "--", "bash", "-c", SLEEPER])
    task = read_pid(hq_env, hq_env.work / "task.pid")
    hq_env.command(["worker", "stop", "1"])
    assert wait_exit(worker) == 0
    wait_gone(hq_env, [task], "the task to be killed")
    assert hq_env.worker_states() == {1: "STOPPED"}


# --- listing and inspecting workers -------------------------------------------------------


def test_worker_list_default_all_and_filters(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for args in (["worker", "list"], ["worker", "list", "--all"]):
        empty = hq_env.command(args, as_table=True)
        assert empty.header is not None and empty.header[:2] == ["ID", "State"]
        assert len(empty) == 0
    first = hq_env.start_worker()
    hq_env.start_worker()
    hq_env.command(["worker", "stop", "1"])
    assert wait_exit(first) == 0

    def listed(*extra: str) -> dict[str, str]:
        table = hq_env.command(["worker", "list", *extra], as_table=True)
        return dict(zip(table.column("ID"), table.column("State"), strict=True))

    assert listed() == {"2": "RUNNING"}
    assert listed("--all") == {"1": "STOPPED", "2": "RUNNING"}
    assert listed("--filter", "offline") == {"1": "STOPPED"}
    assert listed("--filter", "running") == {"2": "RUNNING"}
    quiet = hq_env.command(["--output-mode=quiet", "worker", "list"], ignore_stderr=True)
    assert quiet == "2 RUNNING\n"
    quiet_all = hq_env.command(
        ["worker", "list", "--all", "--output-mode", "quiet"], ignore_stderr=True
    )
    assert quiet_all == "1 STOPPED\n2 RUNNING\n"


def test_worker_info_rows(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker(cpus=2)
    hq_env.start_worker(args=["--heartbeat", "10s"])
    table = worker_table(hq_env, 1)
    assert [row[0] for row in table.rows] == WORKER_INFO_KEYS
    assert table.get("Worker") == "1"
    assert table.get("State") == "RUNNING"
    assert table.get("Hostname") == "worker1"
    assert QUOTED_TIMESTAMP.match(table.get("Started")), table.get("Started")
    assert table.get("Heartbeat") == "8s"
    assert table.get("Idle timeout") == "None"
    assert table.get("Resources") == "cpus: 2"
    assert table.get("Time Limit") == "None"
    assert table.get("Process pid") == str(worker.pid)
    assert table.get("Group") == "default"
    assert table.get("Manager") == "None"
    assert table.get("Manager Job ID") == "N/A"
    assert table.get("Last task started") == ""
    assert table.get("Runtime Info") == "assigned tasks: 0"
    assert worker_table(hq_env, 2).get("Heartbeat") == "10s"

    hq_env.command(["submit", "--cpus", "2", "--", "bash", "-c", GATED])
    hq_env.wait_until(
        lambda: (
            worker_table(hq_env, 1).get("Runtime Info") == "assigned tasks: 1; running tasks: 1"
        ),
        "the task to run on worker 1",
    )
    last = worker_table(hq_env, 1).get("Last task started")
    assert last.startswith("1@0; Time: "), last
    assert QUOTED_TIMESTAMP.match(last.split("Time: ", 1)[1]), last
    (hq_env.work / "go").touch()
    hq_env.wait_for_job_state(1, "FINISHED")
    hq_env.wait_until(
        lambda: worker_table(hq_env, 1).get("Runtime Info") == "assigned tasks: 0",
        "worker 1 to be free again",
    )


def test_worker_info_selectors_and_missing_worker(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for _ in range(3):
        hq_env.start_worker()
    tables = parse_tables(hq_env.command(["worker", "info", "1-3"]))
    assert [t.get("Worker") for t in tables] == ["1", "2", "3"]
    assert worker_table(hq_env, "last").get("Worker") == "3"
    output = hq_env.command(["worker", "info", "5"])
    assert "Worker 5 not found" in output
    assert parse_tables(output) == []


def test_worker_stop_selectors_and_messages(hq_env: HqEnv) -> None:
    hq_env.start_server()
    workers = [hq_env.start_worker() for _ in range(4)]
    executors = children_of(workers[0].pid)
    assert executors, "a running node has executors"

    assert "Worker 1 stopped" in hq_env.command(["worker", "stop", "1"])
    assert wait_exit(workers[0]) == 0
    assert hq_env.worker_states()[1] == "STOPPED"
    wait_gone(hq_env, executors, "the executors of worker 1 to end")
    assert shm_segments_of(workers[0].pid) == []

    again = hq_env.command(["worker", "stop", "1"])
    assert "Stopping worker 1 failed; worker is already stopped" in again
    missing = hq_env.command(["worker", "stop", "8-10"])
    for wid in (8, 9, 10):
        assert f"Stopping worker {wid} failed; worker not found" in missing
    assert "Worker 4 stopped" in hq_env.command(["worker", "stop", "last"])
    assert wait_exit(workers[3]) == 0
    mixed = hq_env.command(["worker", "stop", "3-5"])
    assert "Worker 3 stopped" in mixed
    assert "Stopping worker 5 failed; worker not found" in mixed
    assert wait_exit(workers[2]) == 0
    assert "Worker 2 stopped" in hq_env.command(["worker", "stop", "all"])
    assert wait_exit(workers[1]) == 0
    assert hq_env.worker_states() == {i: "STOPPED" for i in range(1, 5)}
    assert hq_env.command(["worker", "list"], as_table=True).rows == []


def test_killed_worker_is_connection_lost(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker()
    hq_env.start_worker()
    try:
        hq_env.kill_worker(1, signal.SIGKILL)
        # Lost by the dropped connection, long before three missed heartbeats (3 x 8 s) tell.
        hq_env.wait_for_worker_state(1, "CONNECTION LOST", timeout=15.0)
        assert hq_env.worker_states() == {1: "CONNECTION LOST", 2: "RUNNING"}
    finally:
        remove_shm_segments_of(worker.pid)


def test_worker_wait_returns_once_enough_workers_are_up(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    waiter = hq_env.spawn("waiter", ["worker", "wait", "2"])
    with pytest.raises(AssertionError, match="still runs"):
        wait_exit(waiter, timeout=1.5)  # one worker is not enough
    hq_env.start_worker()
    assert wait_exit(waiter) == 0
    assert hq_env.log("waiter") == ""
    assert hq_env.command(["worker", "wait", "1"]) == ""


def test_json_worker_list_and_info(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.start_worker()
    workers = hq_env.json(["worker", "list"])
    assert isinstance(workers, list) and [w["id"] for w in workers] == [1, 2]
    info = hq_env.json(["worker", "info", "1"])
    assert isinstance(info, list) and len(info) == 1
    [worker] = info
    assert set(worker) == JSON_WORKER_KEYS
    config = worker["configuration"]
    assert set(config) == JSON_CONFIGURATION_KEYS
    assert config["hostname"] == "worker1"
    assert config["heartbeat_interval"] == 8.0
    assert config["idle_timeout"] is None
    assert config["time_limit"] is None
    assert config["group"] == "default"
    assert config["on_server_lost"] == "stop"
    assert config["min_utilization"] == 0.0
    assert config["work_dir"] == str(hq_env.root / "worker1")
    assert worker["allocation"] is None
    assert worker["runtime_info"] == {
        "SingleNodeTasks": {"assigned_tasks": 0, "running_tasks": 0, "is_reserved": False}
    }
    assert worker["last_task_started"] is None
    assert worker["ended"] is None
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z$", worker["started"]), worker["started"]

    hq_env.command(["submit", "--cpus", "2", "--wait", "--", "true"])  # only worker 1 fits
    [worker] = hq_env.json(["worker", "info", "1"])
    last = worker["last_task_started"]
    assert set(last) == {"task_id", "time"}
    assert last["task_id"] == {"job_id": 1, "job_task_id": 0}

    hq_env.command(["worker", "stop", "2"])
    wait_exit(hq_env.workers[2])
    [stopped] = hq_env.json(["worker", "info", "2"])
    assert set(stopped) == JSON_WORKER_KEYS
    assert set(stopped["ended"]) == {"at"}
    assert stopped["runtime_info"] is None
    assert [w["id"] for w in hq_env.json(["worker", "list", "--all"])] == [1, 2]


# --- task processes die with their worker -------------------------------------------------


# The task's child: a foreground command keeps SIGINT's default action; a command a shell
# puts in the background ignores SIGINT (POSIX shells without job control), so only a SIGKILL
# of the task's process group ends it.
FOREGROUND_CHILD = (
    "echo $$ > task.pid; bash -c 'echo $$ > child.pid; exec sleep 100'; echo unreachable"
)
BACKGROUND_CHILD = "sleep 100 & echo $! > child.pid; echo $$ > task.pid; wait"


@pytest.mark.parametrize(
    ("sig", "task"),
    [
        pytest.param(signal.SIGINT, FOREGROUND_CHILD, id="SIGINT-foreground-child"),
        pytest.param(signal.SIGINT, BACKGROUND_CHILD, id="SIGINT-background-child"),
        pytest.param(signal.SIGTERM, FOREGROUND_CHILD, id="SIGTERM-foreground-child"),
        pytest.param(signal.SIGTERM, BACKGROUND_CHILD, id="SIGTERM-background-child"),
    ],
)
def test_signal_to_worker_kills_task_and_its_children(hq_env: HqEnv, sig: int, task: str) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker()
    executors = children_of(worker.pid)
    hq_env.command(["submit", "--", "bash", "-c", task])
    task_pid = read_pid(hq_env, hq_env.work / "task.pid")
    child_pid = read_pid(hq_env, hq_env.work / "child.pid")
    assert task_pid != child_pid
    os.killpg(worker.pid, sig)
    code = wait_exit(worker)
    wait_gone(hq_env, [task_pid], "the task to be killed")
    try:
        wait_gone(hq_env, [child_pid], "the task's child to be killed", timeout=8.0)
    finally:
        kill_pids([child_pid])
    wait_gone(hq_env, executors, "the executors to end")
    assert shm_segments_of(worker.pid) == [], f"exit code {code}:\n{hq_env.log('worker1')}"
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")


def test_sigkill_of_worker_still_kills_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker()
    executors = children_of(worker.pid)
    hq_env.command(["submit", "--", "bash", "-c", SLEEPER])
    task = read_pid(hq_env, hq_env.work / "task.pid")
    try:
        os.kill(worker.pid, signal.SIGKILL)  # the node process alone, not its group
        assert wait_exit(worker) == -signal.SIGKILL
        wait_gone(hq_env, [task], "the task to die with its worker")
        wait_gone(hq_env, executors, "the executors to die with their node")
        # The node unlinks its rings' names once the executors hold them.
        assert shm_segments_of(worker.pid) == []
    finally:
        remove_shm_segments_of(worker.pid)


def test_stopped_worker_leaves_no_process_or_segment(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker(cpus=2)
    executors = children_of(worker.pid)
    assert len(executors) >= 2, executors
    hq_env.command(["submit", "--", "bash", "-c", SLEEPER])
    task = read_pid(hq_env, hq_env.work / "task.pid")
    hq_env.command(["worker", "stop", "1"])
    assert wait_exit(worker) == 0
    wait_gone(hq_env, [task, *executors], "the task and the executors to end")
    assert shm_segments_of(worker.pid) == []
