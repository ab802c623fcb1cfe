"""What a task finds when it starts: HQ's variables, the user's and the worker's environment,
and the CPUs it may run on (spec jobs.md §6-§7, resources.md, README "Where hqshm differs").
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import HqEnv
from worker_helpers import allowed_cpus, parse_cpu_list, start_node

needs_two_cpus = pytest.mark.skipif(
    not {0, 1} <= os.sched_getaffinity(0), reason="needs CPUs 0 and 1 in this process's affinity"
)


@pytest.fixture(autouse=True)
def no_openmp_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers inherit the test's environment; OpenMP settings made outside must not leak in."""
    for name in ("OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND", "HQ_PIN"):
        monkeypatch.delenv(name, raising=False)


# Prints the task's environment and its CPU mask, NUL-free and one variable a line.
DUMP = "env; grep Cpus_allowed_list /proc/self/status"


def task_output(hq_env: HqEnv, job: int, task: int = 0, base: Path | None = None) -> str:
    return ((base or hq_env.work) / f"job-{job}" / f"{task}.stdout").read_text()


def task_env(hq_env: HqEnv, job: int, task: int = 0, base: Path | None = None) -> dict[str, str]:
    found = {}
    for line in task_output(hq_env, job, task, base).splitlines():
        key, sep, value = line.partition("=")
        if sep and key.replace("_", "").isalnum():
            found[key] = value
    return found


def task_cpus(hq_env: HqEnv, job: int, task: int = 0) -> set[int]:
    for line in task_output(hq_env, job, task).splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_cpu_list(line.split(":", 1)[1])
    raise AssertionError(f"no Cpus_allowed_list in the output of task {job}/{task}")


def submit_dump(hq_env: HqEnv, *options: str, cwd: Path | None = None) -> None:
    hq_env.command(["submit", *options, "--wait", "--", "bash", "-c", DUMP], cwd=cwd)


def test_hq_variables(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit_dir = hq_env.work / "sub"
    submit_dir.mkdir()
    hq_env.command(["submit", "--array", "3-4", "--wait", "--", "bash", "-c", DUMP], cwd=submit_dir)
    for task_id in (3, 4):
        env = task_env(hq_env, 1, task_id, base=submit_dir)
        assert env["HQ_JOB_ID"] == "1"
        assert env["HQ_TASK_ID"] == str(task_id)
        assert env["HQ_INSTANCE_ID"] == "0"
        assert env["HQ_SUBMIT_DIR"] == str(submit_dir)
        assert env["HQ_CPUS"] in ("0", "1")
        assert env["OMP_NUM_THREADS"] == "1"
        assert env["HQ_RESOURCE_REQUEST_cpus"] == "1 compact"
        assert env["HQ_RESOURCE_VALUES_cpus"] == env["HQ_CPUS"]
        assert "HQ_PIN" not in env
        assert "OMP_PLACES" not in env


def test_hq_points_at_an_executable_hq(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "bash", "-c", 'echo "$HQ"; "$HQ" --version'])
    path, version = task_output(hq_env, 1).splitlines()
    assert os.path.isabs(path) and os.path.basename(path) == "hq", path
    assert os.access(path, os.X_OK)
    mine = subprocess.run(
        [*hq_env.hq, "--version"], stdout=subprocess.PIPE, text=True, check=True
    ).stdout.strip()
    assert version == mine and version.startswith("hq "), version


@needs_two_cpus
def test_cpus_request_sets_hq_cpus_and_omp_num_threads(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit_dump(hq_env, "--cpus", "2")
    env = task_env(hq_env, 1)
    assert sorted(env["HQ_CPUS"].split(",")) == ["0", "1"]
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["HQ_RESOURCE_REQUEST_cpus"] == "2 compact"
    assert sorted(env["HQ_RESOURCE_VALUES_cpus"].split(",")) == ["0", "1"]
    submit_dump(hq_env, "--cpus", "2", "--env", "OMP_NUM_THREADS=7")
    env = task_env(hq_env, 2)
    assert env["OMP_NUM_THREADS"] == "7"
    assert sorted(env["HQ_CPUS"].split(",")) == ["0", "1"]


def test_user_environment_reaches_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit_dump(hq_env, "--env", "FOO=bar", "--env", "EQ=a=b", "--env", "EMPTY")
    env = task_env(hq_env, 1)
    assert env["FOO"] == "bar"
    assert env["EQ"] == "a=b"
    assert env["EMPTY"] == ""


def test_worker_environment_is_inherited_and_hq_variables_win(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(
        env={
            "FROM_WORKER": "inherited",
            "HQ_JOB_ID": "999",
            "HQ_TASK_ID": "999",
            "HQ_INSTANCE_ID": "999",
            "HQ_CPUS": "77",
        }
    )
    submit_dump(hq_env, "--env", "FROM_USER=1")
    env = task_env(hq_env, 1)
    assert env["FROM_WORKER"] == "inherited"
    assert env["FROM_USER"] == "1"
    assert env["HQ_JOB_ID"] == "1"
    assert env["HQ_TASK_ID"] == "0"
    assert env["HQ_INSTANCE_ID"] == "0"
    assert env["HQ_CPUS"] == "0"


@needs_two_cpus
def test_tasks_are_pinned_to_their_cpus(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.command(["submit", "--array", "0-1", "--wait", "--", "bash", "-c", DUMP])
    for task_id in (0, 1):
        env = task_env(hq_env, 1, task_id)
        assert len(env["HQ_CPUS"].split(",")) == 1
        assert task_cpus(hq_env, 1, task_id) == parse_cpu_list(env["HQ_CPUS"])
    submit_dump(hq_env, "--cpus", "2")
    assert task_cpus(hq_env, 2) == {0, 1} == parse_cpu_list(task_env(hq_env, 2)["HQ_CPUS"])


@needs_two_cpus
def test_no_pin_node_lets_tasks_inherit_its_affinity(hq_env: HqEnv) -> None:
    hq_env.start_server()
    node = start_node(hq_env, ["--no-pin"], hostname="unpinned", cpus="2")
    submit_dump(hq_env)
    env = task_env(hq_env, 1)
    assert len(env["HQ_CPUS"].split(",")) == 1, "the task still gets one CPU allocated"
    assert task_cpus(hq_env, 1) == allowed_cpus(node.pid)
    assert len(allowed_cpus(node.pid)) >= 2


@needs_two_cpus
def test_pin_taskset_pins_even_on_a_no_pin_node(hq_env: HqEnv) -> None:
    hq_env.start_server()
    start_node(hq_env, ["--no-pin"], hostname="unpinned", cpus="2")
    submit_dump(hq_env, "--pin", "taskset")
    env = task_env(hq_env, 1)
    assert env["HQ_PIN"] == "taskset"
    assert task_cpus(hq_env, 1) == parse_cpu_list(env["HQ_CPUS"])
    assert len(task_cpus(hq_env, 1)) == 1
    assert "OMP_PLACES" not in env


def test_pin_omp_sets_openmp_variables(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit_dump(hq_env, "--pin", "omp", "--cpus", "2")
    env = task_env(hq_env, 1)
    assert env["HQ_PIN"] == "omp"
    cpus = env["HQ_CPUS"].split(",")
    assert env["OMP_PLACES"] == "{" + ",".join(cpus) + "}"
    assert sorted(cpus) == ["0", "1"]
    assert env["OMP_PROC_BIND"] == "close"
    assert env["OMP_NUM_THREADS"] == "2"
    submit_dump(
        hq_env, "--pin", "omp", "--env", "OMP_PLACES=cores", "--env", "OMP_PROC_BIND=spread"
    )
    env = task_env(hq_env, 2)
    assert env["OMP_PLACES"] == "cores"
    assert env["OMP_PROC_BIND"] == "spread"
    assert env["HQ_PIN"] == "omp"
