"""`hq task list|info` and the error texts of failed tasks.

Spec: cli.md §7, jobs.md §7 and §16, output.md §3.8-§3.9 and §4.6-§4.7, conformance.md "Tasks"
and "Placeholders".
"""

from __future__ import annotations

import re
from pathlib import Path

from harness import HqEnv
from job_helpers import split_tables, submit, task_info, task_json, task_list, vertical

LOCAL_DATE = r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d"
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


# --- task list ------------------------------------------------------------------------------


def test_task_list_columns_workers_and_makespan(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, hostname="node-a")
    submit(hq_env, ["--array", "1-2", "--wait", "--", "true"])
    submit(hq_env, ["--array", "0-1", "--", "sleep", "100"])
    hq_env.wait_for_tasks(2, "running", count=1)

    single = task_list(hq_env, 2)
    assert single.header == ["Task ID", "State", "Worker", "Makespan", "Error"]
    running, waiting = single.rows
    assert running[:3] == ["0", "RUNNING", "node-a"]
    assert running[3] != ""
    assert waiting == ["1", "WAITING", "", "", ""]

    both = task_list(hq_env, "1-2")
    assert both.header == ["Job ID", "Task ID", "State", "Worker", "Makespan", "Error"]
    assert [row[:4] for row in both.rows] == [
        ["1", "1", "FINISHED", "node-a"],
        ["1", "2", "FINISHED", "node-a"],
        ["2", "0", "RUNNING", "node-a"],
        ["2", "1", "WAITING", ""],
    ]
    assert all(re.fullmatch(r"\d+ms|\d+s( \d+ms)?", row[4]) for row in both.rows[:3])


def test_task_list_json_resolves_paths_once_started(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    submit(
        hq_env,
        [
            "--array",
            "0-2",
            "--",
            "bash",
            "-c",
            "if [ $HQ_TASK_ID = 0 ]; then exit 0; fi; sleep 100",
        ],
    )
    hq_env.wait_for_tasks(1, "running", count=1)
    data = hq_env.json(["task", "list", "1"])
    assert list(data) == ["1"]
    finished, running, waiting = data["1"]
    work = hq_env.work
    assert finished["state"] == "finished"
    assert finished["cwd"] == str(work)
    assert finished["stdout"] == f"{work}/job-1/0.stdout"
    assert finished["stderr"] == f"{work}/job-1/0.stderr"
    assert finished["worker"] == 1
    assert re.fullmatch(RFC3339, finished["started_at"])
    assert re.fullmatch(RFC3339, finished["finished_at"])
    assert running["state"] == "running"
    assert running["stdout"] == f"{work}/job-1/1.stdout"
    assert "finished_at" not in running
    assert waiting == {"id": 2, "state": "waiting"}


def test_task_list_truncates_errors_unless_verbose(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(
        hq_env,
        [
            "--array",
            "1-4",
            "--wait",
            "--",
            "bash",
            "-c",
            "if [ $HQ_TASK_ID -gt 2 ]; then exit 2; fi",
        ],
    )
    out = hq_env.command(["task", "list", "1"])
    table = task_list(hq_env, 1)
    assert table.column("Error") == ["", "", "Program terminat...", "Program terminat..."]
    assert "An error message was truncated. Use -v to display the full error." in out
    verbose = hq_env.command(["task", "list", "1", "-v"])
    assert "truncated" not in verbose
    assert (
        task_list(hq_env, 1, "-v").column("Error")[2:]
        == ["Program terminated with exit code 2."] * 2
    )

    assert task_list(hq_env, 1, "--task-status", "failed").column("Task ID") == ["3", "4"]
    assert task_list(hq_env, 1, "--task-status", "finished").column("Task ID") == ["1", "2"]
    assert task_list(hq_env, 1, "--task-status", "finished,failed").column("Task ID") == [
        "1",
        "2",
        "3",
        "4",
    ]
    assert task_list(hq_env, 1, "--tasks", "1,3-4").column("Task ID") == ["1", "3", "4"]
    assert task_list(hq_env, 1, "--tasks", "2-3", "--task-status", "failed").column("Task ID") == [
        "3"
    ]


def test_task_list_of_a_missing_job_warns(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["true"])
    out = hq_env.command(["task", "list", "1-2"])
    assert "Job 2 not found" in out


# --- task info ------------------------------------------------------------------------------


def test_task_info_selects_tasks_and_warns_for_missing_ones(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--array", "0-3,5-6", "--", "true"])
    one = task_info(hq_env, 1, "5")
    assert [t.get("Task ID") for t in one] == ["5"]
    two = task_info(hq_env, 1, "5-6")
    assert [t.get("Task ID") for t in two] == ["5", "6"]
    missing = hq_env.command(["task", "info", "1", "4"])
    assert "Task 4 not found" in missing
    mixed = hq_env.command(["task", "info", "1", "3-5"])
    assert "Task 4 not found" in mixed
    assert [vertical(t).get("Task ID") for t in split_tables(mixed)] == ["3", "5"]
    submit(hq_env, ["--name", "other", "--", "true"])
    assert [t.get("Task ID") for t in task_info(hq_env, "last", "0")] == ["0"]
    assert task_info(hq_env, "last", "0")[0].get("Command") == "true"
    hq_env.command(["task", "info", "9", "0"], expect_fail="Cannot find job 9")


def test_task_info_rows_before_and_after_start(hq_env: HqEnv) -> None:
    hq_env.start_server()
    per_task = hq_env.root / "%{TASK_ID}"
    submit(
        hq_env,
        ["--cwd", str(per_task), "--env", "FOO=BAR", "--", "bash", "-c", "echo out; echo err >&2"],
    )
    [before] = task_info(hq_env, 1, "0")
    assert [row[0] for row in before.rows] == [
        "Task ID",
        "State",
        "Command",
        "Environment",
        "Worker",
        "Start",
        "End",
        "Makespan",
        "Workdir",
        "Stdout",
        "Stderr",
        "Time limit",
        "Resources",
        "Priority",
        "Pin",
        "Task dir",
        "Crash limit",
        "Dependencies",
        "Error",
        "Instance",  # ours: HQ's table ends with Error
    ]
    assert before.get("State") == "WAITING"
    assert before.get("Command") == "bash\n-c\necho out; echo err >&2"
    assert before.get("Environment") == "FOO=BAR"
    for key in (
        "Worker",
        "Start",
        "End",
        "Makespan",
        "Workdir",
        "Stdout",
        "Stderr",
        "Dependencies",
        "Error",
    ):
        assert before.get(key) == "", key
    assert before.get("Time limit") == "None"
    assert before.get("Resources") == "cpus: 1 compact"
    assert before.get("Priority") == "0"
    assert before.get("Pin") == "none"
    assert before.get("Task dir") == "no"
    assert before.get("Crash limit") == "5"

    hq_env.start_worker()
    hq_env.command(["job", "wait", "1"])
    [after] = task_info(hq_env, 1, "0")
    cwd = hq_env.root / "0"
    assert after.get("State") == "FINISHED"
    assert after.get("Worker") == "worker1"
    assert after.get("Workdir") == str(cwd)
    assert after.get("Stdout") == f"{cwd}/job-1/0.stdout"
    assert after.get("Stderr") == f"{cwd}/job-1/0.stderr"
    assert re.fullmatch(LOCAL_DATE, after.get("Start"))
    assert re.fullmatch(LOCAL_DATE, after.get("End"))
    assert after.get("Makespan") != ""
    assert (cwd / "job-1" / "0.stdout").read_text() == "out\n"
    assert (cwd / "job-1" / "0.stderr").read_text() == "err\n"
    [as_json] = hq_env.json(["task", "info", "1", "0"])
    assert as_json["cwd"] == str(cwd)
    assert as_json["stdout"] == f"{cwd}/job-1/0.stdout"
    assert as_json["stderr"] == f"{cwd}/job-1/0.stderr"


# --- errors of failed tasks -----------------------------------------------------------------


def _error(env: HqEnv, job: int) -> str:
    env.wait_for_job_state(job, "FAILED")
    return task_json(env, job)[0]["error"]


def test_exit_code_error(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["bash", "-c", "exit 42"])
    assert _error(hq_env, 1) == "Program terminated with exit code 42."
    [info] = task_info(hq_env, 1, "0")
    assert info.get("Error") == "Program terminated with exit code 42."


def test_task_info_truncates_long_errors_unless_verbose(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    argument = "x" * 300
    submit(hq_env, ["no-such-program", argument])
    full = _error(hq_env, 1)
    assert full.startswith(f'Cannot execute "no-such-program {argument}": No such file')
    out = hq_env.command(["task", "info", "1", "0"])
    [short] = task_info(hq_env, 1, "0")
    assert short.get("Error").replace("\n", "") == full[:237] + "..."
    assert "An error message(s) was truncated. Use -v to display the full error(s)." in out
    verbose = hq_env.command(["task", "info", "1", "0", "-v"])
    assert "truncated" not in verbose
    assert full.split("\n")[-1] in verbose


def test_signal_error(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["bash", "-c", "kill -9 $$"])
    assert _error(hq_env, 1) == (
        "Program terminated with exit code -1. Received signal 9 (SIGKILL)."
    )


def test_program_not_found_error(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["foo", "--bar", "--baz=5"])
    assert _error(hq_env, 1) == (
        'Cannot execute "foo --bar --baz=5": No such file or directory (os error 2)\n'
        "The program that you have tried to execute (`foo`) was not found."
    )


def test_program_in_cwd_gets_the_dot_slash_hint(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    script = hq_env.work / "my-program"
    script.write_text("#!/bin/bash\necho hi\n")
    script.chmod(0o755)
    submit(hq_env, ["my-program"])
    assert _error(hq_env, 1) == (
        'Cannot execute "my-program": No such file or directory (os error 2)\n'
        "The program that you have tried to execute (`my-program`) was not found.\n"
        f"The file `{hq_env.work}/my-program` exists, maybe you have meant `./my-program` "
        "instead?"
    )


def test_non_executable_script_gets_a_hint(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    (hq_env.work / "test.sh").write_text("echo hi\n")
    submit(hq_env, ["./test.sh"])
    assert _error(hq_env, 1) == (
        'Cannot execute "./test.sh": Permission denied (os error 13)\n'
        "The script that you have tried to execute (`./test.sh`) is not executable.\n"
        "Try making it executable or add a shebang line to it."
    )


def _write_script(path: Path, executable: bool) -> None:
    path.write_text("#!/bin/bash\necho Hello $1\n")
    path.chmod(0o755 if executable else 0o644)


def test_executable_shebang_script_runs(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    _write_script(hq_env.work / "test.sh", executable=True)
    submit(hq_env, ["--wait", "--", "./test.sh", "world"])
    submit(hq_env, ["--wait", "--", str(hq_env.work / "test.sh"), "there"])
    assert hq_env.job_states() == {1: "FINISHED", 2: "FINISHED"}
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == "Hello world\n"
    assert (hq_env.work / "job-2" / "0.stdout").read_text() == "Hello there\n"


def test_non_executable_shebang_script_runs_through_its_interpreter(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    _write_script(hq_env.work / "test.sh", executable=False)
    submit(hq_env, ["--wait", "--", "./test.sh", "a"])
    submit(hq_env, ["--wait", "--", "test.sh", "b"])
    submit(hq_env, ["--wait", "--", str(hq_env.work / "test.sh"), "c"])
    assert hq_env.job_states() == {1: "FINISHED", 2: "FINISHED", 3: "FINISHED"}
    for job_id, word in ((1, "a"), (2, "b"), (3, "c")):
        assert (hq_env.work / f"job-{job_id}" / "0.stdout").read_text() == f"Hello {word}\n"
    # The interpreter is prepended, so it names the job (jobs.md §4.1 quirk).
    assert hq_env.command(["job", "list", "--all"], as_table=True).column("Name") == ["bash"] * 3
