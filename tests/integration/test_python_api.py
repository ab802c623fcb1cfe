"""The Python API against a real server and workers (spec/python-api.md §2-§3, §6).

Each test starts a server (and workers) through ``hq_env`` and drives it with ``Client`` from
the test's process, its current directory the env's work dir; what the server then shows is
read with `hq` commands, as a user would.
"""

from __future__ import annotations

import datetime
import logging
import random
import sys
from pathlib import Path

import pyapi_functions
import pytest
from harness import HqEnv
from job_helpers import task_info, task_json

from hqshm.api.client import Client
from hqshm.api.connection import ClientConnection
from hqshm.api.errors import CannotForget, EmptyJob, FailedJobsException, FailedTaskContext
from hqshm.api.function import PythonEnv
from hqshm.api.job import Job
from hqshm.api.output import StdioDef
from hqshm.api.resources import ResourceRequest
from hqshm.link.serverdir import NoRunningInstance
from hqshm.link.submitting import PART_VALUES

FUNCTIONS_PATH = pyapi_functions.FUNCTIONS_PATH


def state_of_tasks(env: HqEnv, job_id: int) -> dict[int, str]:
    return {task_id: task["state"] for task_id, task in task_json(env, job_id).items()}


def resources_cell(env: HqEnv, job_id: int, task_id: int) -> str:
    """The `Resources` cell of `hq task info`, its blank lines left out (as HQ's tests read
    it: ``Table.parse`` would end the cell at the first blank line between variants)."""
    lines: list[str] = []
    for line in env.command(["task", "info", str(job_id), str(task_id)]).splitlines():
        if not line.startswith("|"):
            continue
        key, value = (cell.strip() for cell in line.strip("|").split("|", 1))
        if key == "Resources" or (lines and not key):
            lines.append(value)
        elif lines:
            break
    return "\n".join(line for line in lines if line)


# -- program tasks ---------------------------------------------------------------------------


def test_program_task_finishes_in_its_working_directory(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job()
    job.program(args=["uname"])
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted]) is True
    assert hq_env.job_states() == {submitted.id: "FINISHED"}
    (table,) = task_info(hq_env, submitted.id, "0")
    assert table.get("Workdir") == str(hq_env.work)
    assert (hq_env.work / "0.stdout").read_text().strip() == "Linux"


def test_environment_stdin_and_output_files(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job(default_env={"A": "from-job", "B": "from-job"})
    job.program(["bash", "-c", 'echo Test1; cat -; >&2 echo Test2; echo "$A $B" > env'],
                env={"B": "from-task"}, stdin=b"Hello\n", stdout="out", stderr="err")
    job.program(["cat"], stdin="Grüße", stdout=StdioDef.from_path(hq_env.work / "text"))
    client.wait_for_jobs([client.submit(job)])
    work = hq_env.work
    assert (work / "out").read_text() == "Test1\nHello\n"
    assert (work / "err").read_text() == "Test2\n"
    assert (work / "env").read_text() == "from-job from-task\n"
    assert (work / "text").read_text() == "Grüße"


def test_output_removed_when_the_task_finishes(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job()
    job.program(["echo", "x"], stdout=StdioDef.remove_if_finished(path="out"))
    job.program(["echo", "y"], stdout=StdioDef.remove_if_finished())
    client.wait_for_jobs([client.submit(job)])
    assert not (hq_env.work / "out").exists()
    assert not (hq_env.work / "1.stdout").exists()
    assert (hq_env.work / "1.stderr").exists()


def test_failing_task(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job()
    job.program(["hostname"])
    job.program(["bash", "-c", "exit 1"])
    submitted = client.submit(job)
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs([submitted])
    work = hq_env.work
    assert str(info.value) == (
        f"The following tasks of job `{submitted.id}` have failed:\n"
        "Task 1 (id=1):\nProgram terminated with exit code 1.\n"
        "You can find more information here:\n"
        f"Working directory: {work}\nStdout: {work}/1.stdout\nStderr: {work}/1.stderr"
    )
    assert client.wait_for_jobs([submitted], raise_on_error=False) is False
    assert client.get_failed_tasks(submitted) == {
        1: FailedTaskContext(error="Program terminated with exit code 1.", cwd=str(work),
                             stdout=f"{work}/1.stdout", stderr=f"{work}/1.stderr")
    }


def test_discarded_output_has_no_path(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job()
    job.program(["false"], stdout=None, stderr=None)
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted], raise_on_error=False) is False
    assert client.get_failed_tasks(submitted)[0].stdout is None
    assert client.get_failed_tasks(submitted)[0].stderr is None
    assert not (hq_env.work / "0.stdout").exists()


def test_consumers_of_a_failed_task_are_aborted(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job(max_fails=None)
    failing = job.program(["false"])
    consumer = job.program(["true"], deps=[failing])
    job.program(["true"], deps=[consumer])
    job.program(["true"])
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted], raise_on_error=False) is False
    assert state_of_tasks(hq_env, submitted.id) == {
        0: "failed", 1: "aborted", 2: "aborted", 3: "finished"}


def test_tasks_start_in_order_of_priority(hq_env: HqEnv, client: Client) -> None:
    priorities = random.Random(7).sample(range(-50, 50), 8)
    job = Job()
    for priority in priorities:
        job.program(["true"], priority=priority)
    submitted = client.submit(job)  # all queued before the one CPU comes
    hq_env.start_worker(cpus=1)
    client.wait_for_jobs([submitted])
    tasks = task_json(hq_env, submitted.id)
    by_start = sorted(tasks, key=lambda task_id: tasks[task_id]["started_at"])
    assert [priorities[task_id] for task_id in by_start] == sorted(priorities, reverse=True)


def test_resource_requests_as_task_info_shows_them(hq_env: HqEnv, client: Client) -> None:
    job = Job()
    job.program(["true"], resources=[ResourceRequest(cpus=2),
                                     ResourceRequest(cpus=1, resources={"gpus": 2})])
    job.program(["true"], resources=ResourceRequest(cpus="2", resources={"res0": 1, "res1": 105.1},
                                                    min_time=datetime.timedelta(seconds=42)))
    job.program(["true"])
    submitted = client.submit(job)
    assert resources_cell(hq_env, submitted.id, 0) == (
        "# Variant 1\ncpus: 2 compact\n# Variant 2\ncpus: 1 compact\ngpus: 2 compact")
    assert resources_cell(hq_env, submitted.id, 1) == (
        "cpus: 2 compact\nres0: 1 compact\nres1: 105.1 compact")
    assert resources_cell(hq_env, submitted.id, 2) == "cpus: 1 compact"
    (info,) = hq_env.json(["job", "info", str(submitted.id)])
    assert info["submits"][0]["graph"][1]["resources"][0]["min_time"] == 42.0


def test_cpu_requests_on_a_one_cpu_worker(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    job = Job()
    for cpus in ("1", "all", "2"):
        job.program(["true"], resources=ResourceRequest(cpus=cpus))
    submitted = client.submit(job)
    hq_env.wait_for_tasks(submitted.id, "finished", count=2)
    assert state_of_tasks(hq_env, submitted.id) == {0: "finished", 1: "finished", 2: "waiting"}


def test_generic_resources(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=2, args=["--resource", "gpus=range(1-2)",
                                      "--resource", "fairy=sum(1000)"])
    job = Job()
    job.program(["true"], resources=ResourceRequest(resources={"gpus": 4}))
    job.program(["true"], resources=ResourceRequest(resources={"gpus": 2, "fairy": 2000}))
    first = job.program(["true"], resources=ResourceRequest(resources={"gpus": 2}))
    job.program(["true"], resources=ResourceRequest(resources={"gpus": 2}), deps=[first])
    submitted = client.submit(job)
    hq_env.wait_for_tasks(submitted.id, "finished", count=2)
    assert state_of_tasks(hq_env, submitted.id) == {
        0: "waiting", 1: "waiting", 2: "finished", 3: "finished"}


def test_job_names(hq_env: HqEnv, client: Client) -> None:
    for job in (Job(name="Foo"), Job()):
        job.program(["true"])
        client.submit(job)
    names = [info["info"]["name"] for info in hq_env.json(["job", "info", "1-2"])]
    assert names == ["Foo", "PyAPI job"]


def test_an_empty_job_is_refused(client: Client) -> None:
    with pytest.raises(EmptyJob, match="^Submitted job must have at least a single task$"):
        client.submit(Job())


def test_forget(hq_env: HqEnv, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    hq_env.start_worker()
    job = Job()
    job.program(["true"])
    finished = client.submit(job)
    client.wait_for_jobs([finished])
    with caplog.at_level(logging.INFO, logger="hqshm.api"):
        client.forget(finished)
    assert f"Forgotten job {finished.id}" in caplog.messages
    assert hq_env.job_states() == {}
    running = Job()
    running.program(["sleep", "30"])
    submitted = client.submit(running)
    hq_env.wait_for_tasks(submitted.id, "running")
    with pytest.raises(CannotForget) as info:
        client.forget(submitted.id)
    assert str(info.value) == (f"Cannot forget job {submitted.id}. It either hasn't been "
                               "completed yet, or it does not exist")
    with pytest.raises(CannotForget, match="Cannot forget job 99"):
        client.forget(99)
    hq_env.command(["job", "cancel", str(submitted.id)])


def test_waiting_logs_and_progress(hq_env: HqEnv, client: Client, caplog: pytest.LogCaptureFixture,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    hq_env.start_worker(cpus=2)
    jobs = []
    with caplog.at_level(logging.INFO, logger="hqshm.api"):
        for n_tasks in (1, 3):
            job = Job()
            for _ in range(n_tasks):
                job.program(["sleep", "0.6"])
            jobs.append(client.submit(job))
        assert client.wait_for_jobs(jobs) is True
    assert caplog.messages == ["Submitted job 1 with 1 task(s)", "Submitted job 2 with 3 task(s)",
                               "Waiting for job(s) {1,2} to finish"]
    bar = capsys.readouterr().err
    assert "4/4" in bar and "task" in bar and "2/2 job(s) completed" in bar


def test_lost_worker_returns_the_job_to_waiting(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job()
    first = job.program(["sleep", "30"])
    job.program(["true"], deps=[first])
    submitted = client.submit(job)
    hq_env.wait_for_tasks(submitted.id, "running", count=1)
    hq_env.kill_worker(1)
    hq_env.wait_for_job_state(submitted.id, "WAITING")


def test_long_chains_and_many_pairs_complete(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=2)
    chain = Job()
    previous = chain.program(["true"])
    for _ in range(49):
        previous = chain.program(["true"], deps=[previous])
    pairs = Job()
    for _ in range(150):
        pairs.program(["true"], deps=[pairs.program(["true"])], stdout=None, stderr=None)
    assert client.wait_for_jobs([client.submit(chain), client.submit(pairs)]) is True


def test_a_large_job_goes_in_parts_into_one_job(hq_env: HqEnv, client: Client) -> None:
    job = Job()
    n_tasks = PART_VALUES // 40  # about two parts
    for i in range(n_tasks):
        job.program(["true"], deps=[job.tasks[i - 1]] if i else ())
    submitted = client.submit(job)
    (info,) = hq_env.json(["job", "info", str(submitted.id)])
    assert (info["info"]["task_count"], info["info"]["is_open"]) == (n_tasks, False)
    assert list(hq_env.job_states()) == [submitted.id]


def test_a_client_of_the_instance_directory(hq_env: HqEnv, client: Client) -> None:
    job = Job()
    job.program(["true"])
    instance_client = Client(hq_env.server_dir / "hq-current")
    try:
        assert instance_client.submit(job).id == 1
        assert instance_client.wait_for_jobs([]) is True
    finally:
        instance_client.connection.close()


def test_the_connection_stops_the_server(hq_env: HqEnv, client: Client) -> None:
    connection = ClientConnection(hq_env.server_dir)
    connection.stop_server()
    connection.close()
    assert hq_env.server is not None
    assert hq_env.server.wait(timeout=10) == 0


def test_connecting_without_a_server(tmp_path: Path) -> None:
    with pytest.raises(NoRunningInstance, match=f'No running instance of HQ found at "{tmp_path}'):
        Client(tmp_path)


# -- function tasks --------------------------------------------------------------------------


def test_function_tasks(hq_env: HqEnv, client: Client) -> None:
    hq_env.expect_log(r"Traceback \(most recent call last\)")  # the task's error, shown
    hq_env.start_worker(cpus=2)
    job = Job(default_env=FUNCTIONS_PATH)
    job.function(pyapi_functions.greet, args=("world",), kwargs={"punctuation": "?"})
    job.function(pyapi_functions.greet, args=("nobody",), stdout=None)
    failing = job.function(pyapi_functions.fail)
    submitted = client.submit(job)
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs([submitted])
    work = hq_env.work
    assert (work / "0.stdout").read_text() == "Hello world?\n"
    assert not (work / "1.stdout").exists()
    assert failing.label == "fail/2"
    assert "Task fail/2 (id=2):\nTraceback (most recent call last):\n" in str(info.value)
    error = client.get_failed_tasks(submitted)[2].error
    assert error.endswith('    raise Exception("MyException")\nException: MyException\n')
    assert (work / "2.stderr").read_text() == error
    (table,) = task_info(hq_env, submitted.id, "2")
    assert table.get("Task dir") == "yes"


def test_function_name_in_the_failure_message(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker()
    job = Job(default_env=FUNCTIONS_PATH)
    job.function(pyapi_functions.foo_bar_baz)
    with pytest.raises(FailedJobsException, match="foo_bar_baz"):
        client.wait_for_jobs([client.submit(job)])


def test_python_env_prologue(hq_env: HqEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prologue activates the environment: `python3` is then this test's interpreter."""
    monkeypatch.chdir(hq_env.work)
    hq_env.start_server()
    hq_env.start_worker()
    (hq_env.work / "init.sh").write_text(
        f"export ABC=xyz\nexport PATH={Path(sys.executable).parent}:$PATH\n")
    client = Client(hq_env.server_dir, python_env=PythonEnv(prologue="source init.sh"))
    job = Job(default_env=FUNCTIONS_PATH)
    job.function(pyapi_functions.write_env, args=("ABC", "abc"))
    try:
        client.wait_for_jobs([client.submit(job)])
    finally:
        client.connection.close()
    assert (hq_env.work / "abc").read_text() == "xyz"


def test_function_tasks_show_their_callable(hq_env: HqEnv, client: Client) -> None:
    """`hq task info` and job JSON name the function (issue 10, item 6), not `python -c ...`;
    programs keep their arguments."""
    hq_env.start_worker()
    job = Job(default_env=FUNCTIONS_PATH)
    job.function(pyapi_functions.greet, args=("world",))
    job.program(["echo", "plain"])
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    (function_task,) = task_info(hq_env, submitted.id, "0")
    assert function_task.get("Command") == "pyapi_functions.greet (Python function)"
    (program_task,) = task_info(hq_env, submitted.id, "1")
    assert program_task.get("Command") == "echo\nplain"
    (detail,) = hq_env.json(["job", "info", str(submitted.id)])
    programs = [task["program"] for submit in detail["submits"] for task in submit["graph"]]
    assert [p.get("function") for p in programs] == ["pyapi_functions.greet", None]
