"""Function tasks inside the worker's executors (the warm path, hqshm/node/warm.py) against a
real server and worker: what a task observes is what it would in an interpreter of its own,
and the executor is clean for the next task, whatever the last one did.

A worker with one CPU has one executor, so a job's tasks run one after another in the same
interpreter unless a task ends it. Tasks write what they saw to JSON files in the work dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pyapi_functions
import pytest
from harness import HqEnv
from worker_helpers import children_of, wait_exit, wait_gone

from hqshm.api.build import build_submission
from hqshm.api.client import Client
from hqshm.api.function import PythonEnv
from hqshm.api.job import Job

FUNCTIONS_PATH = pyapi_functions.FUNCTIONS_PATH
FAILED_TRACEBACK = r"Traceback \(most recent call last\)"  # a task's error, as the server shows it


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def alive(pid: int) -> bool:
    """Running (a zombie is dead: nothing reaps a killed task's orphans at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def submit_with_time_limit(client: Client, job: Job, seconds: float) -> int:
    """The Python API has no time limits (HQ's has none): the job's templates get one."""
    submission = build_submission(job, client.python_env, os.getcwd())
    tasks = tuple(dataclasses.replace(t, template=dataclasses.replace(t.template,
                                                                       time_limit=seconds))
                  for t in submission.tasks)
    return client.connection.submit(dataclasses.replace(submission, tasks=tasks))


# -- which path ------------------------------------------------------------------------------


def test_tasks_share_the_executors_interpreter(hq_env: HqEnv, client: Client) -> None:
    worker = hq_env.start_worker(cpus=1)
    job = Job(default_env=FUNCTIONS_PATH)
    for i in range(3):
        job.function(pyapi_functions.count_call, args=(str(hq_env.work / f"call{i}"),))
    assert client.wait_for_jobs([client.submit(job)])
    calls = [read(hq_env.work / f"call{i}") for i in range(3)]
    assert {call["pid"] for call in calls} == {calls[0]["pid"]}
    assert calls[0]["ppid"] == worker.pid  # an executor of the worker, not a program of it
    assert sorted(call["calls"] for call in calls) == [1, 2, 3]  # the module stayed imported


def test_a_bare_interpreter_name_found_on_the_tasks_path_runs_warm(hq_env: HqEnv,
                                                                   client: Client) -> None:
    """`python3` next to the worker's interpreter: the same interpreter and environment."""
    hq_env.start_worker(cpus=1)
    warm = Client(hq_env.server_dir, python_env=PythonEnv(python_bin="python3"))
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    job = Job(default_env={**FUNCTIONS_PATH, "PATH": path})
    for i in range(2):
        job.function(pyapi_functions.count_call, args=(str(hq_env.work / f"call{i}"),))
    try:
        assert warm.wait_for_jobs([warm.submit(job)])
    finally:
        warm.connection.close()
    assert sorted(read(hq_env.work / f"call{i}")["calls"] for i in range(2)) == [1, 2]


def test_a_prologue_starts_an_interpreter_per_task(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    (hq_env.work / "init.sh").write_text(f"export PATH={Path(sys.executable).parent}:$PATH\n")
    cold = Client(hq_env.server_dir, python_env=PythonEnv(prologue="source init.sh"))
    job = Job(default_env=FUNCTIONS_PATH)
    for i in range(2):
        job.function(pyapi_functions.count_call, args=(str(hq_env.work / f"call{i}"),))
    try:
        assert cold.wait_for_jobs([cold.submit(job)])
    finally:
        cold.connection.close()
    calls = [read(hq_env.work / f"call{i}") for i in range(2)]
    assert [call["calls"] for call in calls] == [1, 1]
    assert calls[0]["pid"] != calls[1]["pid"]


# -- what a task observes, and the executor after it -----------------------------------------


def test_a_task_sees_its_own_process_state_whatever_the_task_before_did(
        hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    work = hq_env.work
    (work / "sub").mkdir()
    job = Job(default_env=FUNCTIONS_PATH, max_fails=None)
    first = job.function(pyapi_functions.observe, args=(str(work / "seen0"),),
                         env={"OWN_VAR": "a"}, cwd=work / "sub", stdout="out0", stderr="err0")
    mess = job.function(pyapi_functions.litter, deps=[first])
    job.function(pyapi_functions.observe, args=(str(work / "seen2"),), deps=[mess],
                 env={"OWN_VAR": "b", "HQ_PYLOG": "INFO"}, stdout=None, stderr="err2")
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted])

    seen = read(work / "seen0")
    env = seen["env"]
    assert (seen["cwd"], seen["argv"], seen["path0"], seen["stdin"]) == (
        str(work / "sub"), ["-c"], "", "")
    assert (env["OWN_VAR"], env["HQ_JOB_ID"], env["HQ_TASK_ID"]) == ("a", str(submitted.id), "0")
    assert env["HQ_ERROR_FILENAME"] == f"{env['HQ_TASK_DIR']}/hq-error"
    assert seen["own_group"]  # the node's signals reach the task's processes
    assert seen["cpus"] == [int(cpu) for cpu in env["HQ_CPUS"].split(",")]
    assert (work / "sub" / "out0").read_text() == "to stdout\n"
    assert (work / "sub" / "err0").read_text() == "to stderr\nWARNING:root:a warning\n"

    again = read(work / "seen2")
    assert again["pid"] == seen["pid"]  # the same executor, which the litter did not end
    assert (again["cwd"], again["argv"], again["path0"]) == (str(work), ["-c"], "")
    assert again["env"]["OWN_VAR"] == "b"
    assert again["env"]["HQ_TASK_ID"] == "2"
    assert "LEAK" not in again["env"]
    assert not (work / "2.stdout").exists()
    assert (work / "err2").read_text() == (
        "to stderr\nWARNING:root:a warning\nINFO:root:some info\n")  # HQ_PYLOG's basicConfig


def test_programs_run_normally_after_a_function_changed_the_executor(hq_env: HqEnv,
                                                                     client: Client) -> None:
    """The function ignores SIGCHLD; the executor must still wait for its next program."""
    hq_env.start_worker(cpus=1)
    job = Job(default_env=FUNCTIONS_PATH, max_fails=None)
    mess = job.function(pyapi_functions.litter)
    job.program(["bash", "-c", "exit 3"], deps=[mess])
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted], raise_on_error=False) is False
    assert client.get_failed_tasks(submitted)[1].error == "Program terminated with exit code 3."


def task_dirs(work_dir: Path) -> list[str]:
    """The task directories in a worker's work dir (``t`` and a random name)."""
    return sorted(p.name for p in work_dir.iterdir() if p.name.startswith("t"))


def run_jobs(client: Client, *calls: tuple[Any, tuple[Any, ...]]) -> list[int]:
    """One job per function call, each after the one before (on one CPU: one executor);
    the ids of those that failed."""
    failed = []
    for fn, args in calls:
        job = Job(default_env=FUNCTIONS_PATH)
        job.function(fn, args=args)
        submitted = client.submit(job)
        if not client.wait_for_jobs([submitted], raise_on_error=False):
            failed.append(submitted.id)
    return failed


def test_each_task_finds_an_empty_task_directory_whatever_the_task_before_left(
        hq_env: HqEnv, client: Client) -> None:
    """Warm tasks keep their executor's directory while they leave it empty: a task that
    leaves files there (its error file too) or changes it passes none of it on."""
    hq_env.start_worker(cpus=1)
    work, worker_dir = hq_env.work, hq_env.root / "worker1"
    failed = run_jobs(client, (pyapi_functions.use_task_dir, (str(work / "seen0"),)),
                      (pyapi_functions.use_task_dir, (str(work / "seen1"), True)),
                      (pyapi_functions.exit_with, (3,)),
                      (pyapi_functions.use_task_dir, (str(work / "seen3"),)))
    # The exit is the task's error: the error file of the task before is not its own.
    assert len(failed) == 1
    assert client.connection.get_failed_tasks(failed[0])[0].error == (
        "Program terminated with exit code 3.")
    seen = [read(work / f"seen{i}") for i in (0, 1, 3)]
    assert len({s["pid"] for s in seen}) == 1  # one executor ran them all
    for s in seen:
        assert (s["is_dir"], s["content"], s["mode"]) == (True, [], 0o700)
        assert s["error_file"] == f"{s['dir']}/hq-error"
        assert Path(s["dir"]).parent == worker_dir
    assert not Path(seen[1]["dir"], "left").exists()
    hq_env.command(["worker", "stop", "1"])
    assert wait_exit(hq_env.workers[1]) == 0
    assert task_dirs(worker_dir) == []


@pytest.mark.parametrize("end", ["stop", "sigkill"])
def test_no_task_directory_outlives_its_executor(hq_env: HqEnv, client: Client,
                                                 end: str) -> None:
    """A function that ends its executor (os._exit) leaves its directory to the node; a
    worker killed with SIGKILL leaves theirs to its executors."""
    hq_env.start_worker(cpus=1)
    work, worker_dir = hq_env.work, hq_env.root / "worker1"
    assert len(run_jobs(client, (pyapi_functions.use_task_dir, (str(work / "seen0"),)),
                        (pyapi_functions.exit_now, (3,)),
                        (pyapi_functions.use_task_dir, (str(work / "seen2"),)))) == 1
    before, after = read(work / "seen0"), read(work / "seen2")
    assert before["pid"] != after["pid"]  # a new executor
    hq_env.wait_until(lambda: task_dirs(worker_dir) == [Path(after["dir"]).name],
                      "the dead executor's directory to go")
    worker = hq_env.workers[1]
    executors = children_of(worker.pid)
    if end == "stop":
        hq_env.command(["worker", "stop", "1"])
        assert wait_exit(worker) == 0
    else:
        os.kill(worker.pid, signal.SIGKILL)
        assert wait_exit(worker) == -signal.SIGKILL
        wait_gone(hq_env, executors, "the executors to die with their node")
    assert task_dirs(worker_dir) == []


# -- how a task ends -------------------------------------------------------------------------


def test_errors_read_as_those_of_an_interpreter_of_its_own(hq_env: HqEnv, client: Client) -> None:
    """An exception is its traceback; sys.exit and os._exit are exit codes, a crash the
    signal. os._exit and the crash end the executor: the next task runs on a new one."""
    hq_env.expect_log(FAILED_TRACEBACK)
    hq_env.start_worker(cpus=1)
    work = hq_env.work

    def call_count(name: str) -> dict[str, int]:
        job = Job(default_env=FUNCTIONS_PATH)
        job.function(pyapi_functions.count_call, args=(str(work / name),))
        assert client.wait_for_jobs([client.submit(job)])
        return read(work / name)  # type: ignore[no-any-return]

    before = call_count("before")
    job = Job(default_env=FUNCTIONS_PATH, max_fails=None)
    job.function(pyapi_functions.fail)
    job.function(pyapi_functions.exit_with, args=(3,))
    job.function(pyapi_functions.exit_with, args=("bye",))
    job.function(pyapi_functions.exit_with, args=(None,))
    job.function(pyapi_functions.exit_now, args=(3,))
    job.function(pyapi_functions.crash)
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted], raise_on_error=False) is False
    errors = {task_id: failed.error for task_id, failed in
              client.get_failed_tasks(submitted).items()}
    assert errors.pop(0).endswith('    raise Exception("MyException")\nException: MyException\n')
    assert errors == {
        1: "Program terminated with exit code 3.",
        2: "Program terminated with exit code 1.",
        4: "Program terminated with exit code 3.",
        5: "Program terminated with exit code -1. Received signal 11 (SIGSEGV).",
    }
    assert (work / "2.stderr").read_text() == "bye\n"
    after = call_count("after")
    assert after["pid"] != before["pid"]
    assert after["calls"] == 1  # a fresh executor


def test_canceling_interrupts_the_function_and_kills_its_processes(hq_env: HqEnv,
                                                                   client: Client) -> None:
    hq_env.start_worker(cpus=1)
    work = hq_env.work
    job = Job(default_env=FUNCTIONS_PATH)
    job.function(pyapi_functions.sleep_in_group, args=(str(work / "marker"), str(work / "child")))
    submitted = client.submit(job)
    hq_env.wait_until(lambda: (work / "marker").exists(), "the function to start")
    hq_env.command(["job", "cancel", str(submitted.id)])
    hq_env.wait_for_job_state(submitted.id, "CANCELED")
    hq_env.wait_until(lambda: (work / "marker.interrupted").exists(), "KeyboardInterrupt")
    hq_env.wait_until(lambda: not alive(int((work / "child").read_text())), "the child's end")
    after = Job(default_env=FUNCTIONS_PATH)
    after.function(pyapi_functions.count_call, args=(str(work / "after"),))
    assert client.wait_for_jobs([client.submit(after)])
    assert read(work / "after")["pid"] == int((work / "marker").read_text())  # it lived on


@pytest.mark.parametrize("ignore_interrupt", [False, True])
def test_the_time_limit_fails_the_function(hq_env: HqEnv, client: Client,
                                           ignore_interrupt: bool) -> None:
    """Interrupted, the function ends and the executor lives on; ignoring the interrupt, it
    is killed with its executor a second later. The error is the time limit's either way."""
    hq_env.start_worker(cpus=1)
    work = hq_env.work
    job = Job(default_env=FUNCTIONS_PATH)
    job.function(pyapi_functions.sleep_in_group,
                 args=(str(work / "marker"), str(work / "child"), ignore_interrupt))
    job_id = submit_with_time_limit(client, job, 1.0)
    hq_env.wait_for_job_state(job_id, "FAILED")
    assert client.connection.get_failed_tasks(job_id)[0].error == "Time limit reached"
    hq_env.wait_until(lambda: not alive(int((work / "child").read_text())), "the child's end")
    after = Job(default_env=FUNCTIONS_PATH)
    after.function(pyapi_functions.count_call, args=(str(work / "after"),))
    assert client.wait_for_jobs([client.submit(after)])
    same_executor = read(work / "after")["pid"] == int((work / "marker").read_text())
    assert same_executor is not ignore_interrupt


# -- the job's initializer -------------------------------------------------------------------


def test_the_initializer_runs_once_per_executor_and_job(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    work = hq_env.work
    states = []
    for n in range(2):
        job = Job(default_env=FUNCTIONS_PATH, initializer=pyapi_functions.init_job)
        for i in range(3):
            job.function(pyapi_functions.read_state, args=(str(work / f"state{n}-{i}"),))
        assert client.wait_for_jobs([client.submit(job)])
        states.append([read(work / f"state{n}-{i}") for i in range(3)])
    pid = states[0][0]["pid"]
    assert states[0] == [{"inits": 1, "pid": pid}] * 3
    assert states[1] == [{"inits": 2, "pid": pid}] * 3  # the next job runs its own


def test_on_the_cold_path_each_task_runs_the_initializer(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    (hq_env.work / "init.sh").write_text(f"export PATH={Path(sys.executable).parent}:$PATH\n")
    cold = Client(hq_env.server_dir, python_env=PythonEnv(prologue="source init.sh"))
    job = Job(default_env=FUNCTIONS_PATH, initializer=pyapi_functions.init_job)
    for i in range(2):
        job.function(pyapi_functions.read_state, args=(str(hq_env.work / f"state{i}"),))
    try:
        assert cold.wait_for_jobs([cold.submit(job)])
    finally:
        cold.connection.close()
    states = [read(hq_env.work / f"state{i}") for i in range(2)]
    assert [state["inits"] for state in states] == [1, 1]
    assert states[0]["pid"] != states[1]["pid"]
