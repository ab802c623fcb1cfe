"""Multi-node tasks, `hq submit --nodes N` (spec/jobs.md §15, deployment.md §5, conformance.md
"Workers" multi-node items)."""

from __future__ import annotations

from pathlib import Path

from harness import HqEnv, Table, parse_tables

GATE = "gate"


def gated(marker: str = "") -> list[str]:
    """A task that records its environment, then waits for the test's gate file."""
    return ["bash", "-c",
            f"echo $HQ_NUM_NODES > n{marker}; cat $HQ_NODE_FILE > nodes{marker}; "
            f"cat $HQ_HOST_FILE > hosts{marker}; env | grep ^HQ_RESOURCE > res{marker}; "
            f"while [ ! -e {GATE} ]; do sleep 0.05; done"]


def open_gate(env: HqEnv) -> None:
    (env.work / GATE).touch()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def worker_info(env: HqEnv, worker: int) -> Table:
    return env.command(["worker", "info", str(worker)], as_table=True)


def test_two_node_task_gets_both_nodes_in_its_files(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, hostname="cn1.cluster.example")
    hq_env.start_worker(cpus=1, hostname="cn2.cluster.example")
    hq_env.command(["submit", "--nodes", "2", "--", *gated()])
    hq_env.wait_for_job_state(1, "RUNNING")
    hq_env.wait_until(lambda: (hq_env.work / "res").exists(), "the task to start")
    assert lines(hq_env.work / "n") == ["2"]
    # Short names in the node file, full ones in the host file, the root node first.
    assert lines(hq_env.work / "nodes") == ["cn1", "cn2"]
    assert lines(hq_env.work / "hosts") == ["cn1.cluster.example", "cn2.cluster.example"]
    assert lines(hq_env.work / "res") == []  # no resource variables for multi-node tasks
    table = hq_env.command(["task", "list", "1"], as_table=True)
    assert table.column("Worker") == ["cn1.cluster.example\ncn2.cluster.example"]
    [task] = hq_env.json(["task", "list", "1"])["1"]
    assert task["workers"] == [1, 2] and "worker" not in task
    assert worker_info(hq_env, 1).get("Runtime Info") == "running multinode task; main node"
    assert worker_info(hq_env, 2).get("Runtime Info") == (
        "running multinode task; secondary node")
    for worker in (1, 2):
        assert "1@0" in worker_info(hq_env, worker).get("Last task started")
    info = hq_env.command(["job", "info", "1"], as_table=True)
    assert info.get("Resources") == "nodes: 2"
    open_gate(hq_env)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert worker_info(hq_env, 2).get("Runtime Info") == "assigned tasks: 0"


def test_task_waits_until_enough_nodes_join(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    hq_env.start_worker(cpus=1)
    hq_env.command(["submit", "--nodes", "3", "--", "true"])
    explain = hq_env.command(["task", "explain", "1", "0"])
    assert "There is no worker where the task can run." in explain
    assert hq_env.job_states() == {1: "WAITING"}
    hq_env.start_worker(cpus=1)
    hq_env.wait_for_job_state(1, "FINISHED")


def test_workers_of_different_groups_never_combine(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, args=["--group", "a"])
    hq_env.start_worker(cpus=1, args=["--group", "b"])
    hq_env.command(["submit", "--nodes", "2", "--", "true"])
    hq_env.start_worker(cpus=1, args=["--group", "a"])
    hq_env.wait_for_job_state(1, "FINISHED")
    [task] = hq_env.json(["task", "list", "1"])["1"]
    assert task["workers"] == [1, 3]
    assert worker_info(hq_env, 2).get("Group") == "b"


def test_reserved_nodes_get_no_single_node_tasks(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.start_worker(cpus=2)
    hq_env.start_worker(cpus=2)
    hq_env.command(["submit", "--nodes", "2", "--", *gated()])
    hq_env.wait_for_job_state(1, "RUNNING")
    hq_env.command(["submit", "--array", "1-6", "--", "bash", "-c", "sleep 0.2"])
    hq_env.wait_for_job_state(2, "FINISHED")
    [multi] = hq_env.json(["task", "list", "1"])["1"]
    singles = hq_env.json(["task", "list", "2"])["2"]
    used = {t["worker"] for t in singles}
    assert used.isdisjoint(multi["workers"]), (used, multi["workers"])
    open_gate(hq_env)
    hq_env.wait_for_job_state(1, "FINISHED")


def test_time_requests_apply_to_every_node(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, args=["--time-limit", "1h"])
    hq_env.start_worker(cpus=1, args=["--time-limit", "5s"])
    hq_env.command(["submit", "--nodes", "2", "--time-request", "10m", "--", "true"])
    hq_env.start_worker(cpus=1)
    hq_env.wait_for_job_state(1, "FINISHED")
    [task] = hq_env.json(["task", "list", "1"])["1"]
    assert task["workers"] == [1, 3]


def test_losing_a_secondary_node_does_not_stop_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    hq_env.start_worker(cpus=1)
    hq_env.command(["submit", "--nodes", "2", "--", *gated()])
    hq_env.wait_for_job_state(1, "RUNNING")
    hq_env.kill_worker(2)
    hq_env.wait_for_worker_state(2, "CONNECTION LOST")
    assert hq_env.job_states() == {1: "RUNNING"}
    open_gate(hq_env)
    hq_env.wait_for_job_state(1, "FINISHED")


def test_losing_the_root_node_runs_the_task_again(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    hq_env.start_worker(cpus=1)
    hq_env.command(["submit", "--nodes", "2", "--", "bash", "-c",
                    f"echo $HQ_INSTANCE_ID >> instances; while [ ! -e {GATE} ]; do sleep 0.05;"
                    " done"])
    hq_env.wait_until(lambda: (hq_env.work / "instances").exists(), "the first run")
    hq_env.kill_worker(1)
    hq_env.start_worker(cpus=1)
    hq_env.wait_until(lambda: len(lines(hq_env.work / "instances")) == 2, "the second run")
    open_gate(hq_env)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert lines(hq_env.work / "instances") == ["0", "1"]


def test_nodes_cannot_be_combined_with_cpus_or_pin(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for flag in (["--cpus", "2"], ["--pin", "taskset"]):
        hq_env.command(["submit", "--nodes", "2", *flag, "--", "true"], expect_fail="--nodes")


def test_worker_json_shows_the_multinode_role(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    hq_env.start_worker(cpus=1)
    hq_env.command(["submit", "--nodes", "2", "--", *gated()])
    hq_env.wait_for_job_state(1, "RUNNING")
    workers = hq_env.json(["worker", "list"])
    roles = [w["runtime_info"] for w in workers]
    assert roles == [{"MultiNodeTask": {"main_node": True}},
                     {"MultiNodeTask": {"main_node": False}}]
    open_gate(hq_env)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert parse_tables(hq_env.command(["worker", "info", "1-2"]))[1].get("Worker") == "2"
