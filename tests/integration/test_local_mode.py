"""Laptop mode: `hq local start` / `hq local stop` (README quick start; no HQ equivalent).

`hq local start` detaches its server and node from the test, so the `hq_env` fixture does not
know them: every test stops them in a `finally` (and kills by pid what is left), using the
server directory, which appears in their command lines, to find them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HqEnv, parse_tables, pid_alive, processes_mentioning
from worker_helpers import (
    children_of,
    kill_pids,
    remove_shm_segments_of,
    shm_segments_of,
    worker_table,
)


class Laptop:
    """Remembers what `hq local start` started, for the assertions and the clean-up."""

    def __init__(self, hq_env: HqEnv) -> None:
        self.env = hq_env
        self.pids: set[int] = set()
        self.work_dirs: set[Path] = set()

    def start(self, *args: str) -> str:
        output = self.env.command(["local", "start", *args])
        self.remember()
        return output

    def remember(self) -> None:
        self.pids.update(processes_mentioning(str(self.env.server_dir)))
        listing = self.env.run(["worker", "list"])
        if listing.returncode == 0 and b"RUNNING" in listing.stdout:
            table = worker_table(self.env, 1)
            self.work_dirs.add(Path(table.get("Working directory")))
            node = int(table.get("Process pid"))
            self.pids.add(node)
            self.pids.update(children_of(node))

    def clean_up(self) -> None:
        if processes_mentioning(str(self.env.server_dir)):
            self.env.run(["local", "stop"], timeout=30)
        self.pids.update(processes_mentioning(str(self.env.server_dir)))
        kill_pids(sorted(self.pids))
        for pid in self.pids:
            remove_shm_segments_of(pid)
        for work_dir in self.work_dirs:
            # The node's default work dir is /tmp/hq-worker<random>/work.
            if work_dir.name == "work" and work_dir.parent.name.startswith("hq-worker"):
                shutil.rmtree(work_dir.parent, ignore_errors=True)


@pytest.fixture
def laptop(hq_env: HqEnv) -> Iterator[Laptop]:
    machine = Laptop(hq_env)
    try:
        yield machine
    finally:
        machine.clean_up()


def test_local_start_runs_an_array_and_local_stop_leaves_nothing(
    hq_env: HqEnv, laptop: Laptop
) -> None:
    laptop.start()
    # Both are up when `local start` returns: no waiting here.
    workers = hq_env.command(["worker", "list"], as_table=True)
    assert workers.column("State") == ["RUNNING"]
    [server] = parse_tables(hq_env.command(["server", "info"]))
    server_pid = int(server.get("Pid"))
    node_pid = int(worker_table(hq_env, 1).get("Process pid"))
    executors = children_of(node_pid)
    assert executors, "the node has executors"

    out = hq_env.command(
        ["submit", "--array", "1-100", "--wait", "--", "bash", "-c", "echo $HQ_TASK_ID"]
    )
    assert "Job submitted successfully, job ID: 1" in out
    for task_id in range(1, 101):
        assert (hq_env.work / "job-1" / f"{task_id}.stdout").read_text() == f"{task_id}\n"
    assert hq_env.job_states() == {1: "FINISHED"}

    stop = hq_env.run(["local", "stop"])
    assert stop.returncode == 0, stop.stderr.decode()
    # `local stop` returns once nothing of them is left.
    assert not pid_alive(server_pid)
    assert not pid_alive(node_pid)
    assert not [pid for pid in executors if pid_alive(pid)]
    assert processes_mentioning(str(hq_env.server_dir)) == {}
    assert shm_segments_of(node_pid) == []
    hq_env.command(["server", "info"], expect_fail="No running instance of HQ found")


def test_local_start_twice_is_refused(hq_env: HqEnv, laptop: Laptop) -> None:
    laptop.start()
    second = hq_env.run(["local", "start"])
    laptop.remember()
    assert second.returncode == 1
    message = second.stderr.decode()
    assert "already running" in message and str(hq_env.server_dir) in message, message
    assert "hq local stop" in message
    workers = hq_env.command(["worker", "list"], as_table=True)
    assert workers.column("ID") == ["1"], "the refused start must not add a node"


def test_local_stop_without_server_fails_clearly(hq_env: HqEnv, laptop: Laptop) -> None:
    result = hq_env.run(["local", "stop"])
    assert result.returncode == 1
    assert "No running instance of HQ found" in result.stderr.decode()


def test_local_start_with_cpus(hq_env: HqEnv, laptop: Laptop) -> None:
    laptop.start("--cpus", "1")
    assert worker_table(hq_env, 1).get("Resources").splitlines()[0] == "cpus: 1"
    assert hq_env.run(["local", "stop"]).returncode == 0
    assert processes_mentioning(str(hq_env.server_dir)) == {}


def test_children_run_the_installed_package_whatever_the_current_directory(
    hq_env: HqEnv, laptop: Laptop
) -> None:
    """Started from inside a source checkout, `python -m` would import the checkout (which has
    no compiled launcher); the children must import what is installed."""
    checkout = hq_env.work / "checkout"
    (checkout / "hqshm").mkdir(parents=True)
    (checkout / "hqshm" / "__init__.py").write_text(
        "raise ImportError('the source tree in the current directory was imported')\n")
    output = hq_env.command(["local", "start"], cwd=checkout)
    laptop.remember()
    assert "Task launcher" not in hq_env.command(["worker", "info", "1"])
    assert "no compiled task launcher" not in output
    hq_env.command(["submit", "--wait", "--", "true"], cwd=checkout)
    assert hq_env.job_states() == {1: "FINISHED"}


def test_a_node_without_the_compiled_launcher_says_so(hq_env: HqEnv, laptop: Laptop) -> None:
    output = hq_env.command(["local", "start"], env={"HQSHM_NO_CMODULE": "1"})
    laptop.remember()
    assert "The worker has no compiled task launcher (" in output
    assert "disabled by HQSHM_NO_CMODULE=1" in output
    assert "tasks start about 3x slower" in output
    launcher = worker_table(hq_env, 1).get("Task launcher")
    assert launcher.startswith("Python fallback, tasks start about 3x slower: ")
    assert "HQSHM_NO_CMODULE=1" in launcher
