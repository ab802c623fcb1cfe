"""`hq submit` and `hq job list|info|cancel|wait|progress` as a user sees them.

Spec: cli.md §5-§6, jobs.md §1-§8, output.md §3.5-§3.7, §4.3-§4.6, conformance.md "Submitting
and job states".
"""

from __future__ import annotations

import json
import re
import time

import pytest
from harness import HqEnv, pid_alive
from job_helpers import (
    job_info,
    job_info_tables,
    submit,
    task_json,
    task_list,
    wait_for_file,
)
from manage_helpers import background, finish, gated, open_gate

from hqshm.model.durations import parse_human

# --- submit ---------------------------------------------------------------------------------


def test_submit_prints_message_bare_id_or_json(hq_env: HqEnv) -> None:
    hq_env.start_server()
    cli = hq_env.run(["submit", "--", "true"])
    assert cli.returncode == 0
    assert cli.stdout.decode() == "Job submitted successfully, job ID: 1\n"
    quiet = hq_env.run(["--output-mode=quiet", "submit", "--", "true"])
    assert quiet.returncode == 0
    assert quiet.stdout.decode() == "2\n"
    as_json = hq_env.run(["--output-mode=json", "submit", "--", "true"])
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == {"id": 3}


def test_default_job_name_is_the_program_file_name(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["bash", "-c", "true"])
    submit(hq_env, ["sleep", "0"])
    submit(hq_env, ["/non-existent-program"])
    submit(hq_env, ["--name", "my job", "--", "true"])
    table = hq_env.command(["job", "list", "--all"], as_table=True)
    assert table.header == ["ID", "Name", "State", "Tasks"]
    assert table.column("Name") == ["bash", "sleep", "non-existent-program", "my job"]
    assert table.column("ID") == ["1", "2", "3", "4"]


@pytest.mark.parametrize("name", ["a\nb", "a\tb"])
def test_job_name_with_newline_or_tab_is_rejected(hq_env: HqEnv, name: str) -> None:
    hq_env.start_server()
    hq_env.command(
        ["submit", "--name", name, "--", "true"], expect_fail="name cannot have a newline or a tab"
    )
    assert hq_env.job_states() == {}


def test_long_job_name_is_shortened_in_job_list_only(hq_env: HqEnv) -> None:
    hq_env.start_server()
    name = "a" * 30 + "b" * 30
    submit(hq_env, ["--name", name, "--", "true"])
    table = hq_env.command(["job", "list"], as_table=True)
    assert table.column("Name") == ["a" * 24 + "..." + "b" * 23]
    assert job_info(hq_env, 1).get("Name") == name


def test_array_forms_create_exactly_those_tasks(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    forms = {
        "1-3": [1, 2, 3],
        "0-10:2": [0, 2, 4, 6, 8, 10],
        "2,7,9,20-30": [2, 7, 9, *range(20, 31)],
        "5": [5],
    }
    for array in forms:
        submit(hq_env, ["--array", array, "--", "bash", "-c", "echo $HQ_TASK_ID"])
    hq_env.command(["job", "wait", "all"])
    for job_id, expected in enumerate(forms.values(), start=1):
        tasks = task_json(hq_env, job_id)
        assert sorted(tasks) == expected
        assert {t["state"] for t in tasks.values()} == {"finished"}
        files = sorted((hq_env.work / f"job-{job_id}").glob("*.stdout"))
        assert sorted(int(f.stem) for f in files) == expected
        for f in files:
            assert f.read_text() == f"{f.stem}\n"
    assert job_info(hq_env, 3).get("Tasks") == "14; Ids: 2,7,9,20-30"


def test_cpus_request_gives_the_task_that_many_cpus_exclusively(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    # `set -C` makes the redirection fail if the lock exists: two 2-CPU tasks that overlapped on
    # the 2-CPU worker would make one of them fail.
    script = "set -C; echo $HQ_CPUS > lock || exit 7; cat lock; sleep 0.3; rm lock"
    submit(hq_env, ["--cpus", "2", "--array", "1-3", "--", "bash", "-c", script])
    hq_env.command(["job", "wait", "1"])
    assert hq_env.job_states() == {1: "FINISHED"}
    for task_id in (1, 2, 3):
        cpus = (hq_env.work / "job-1" / f"{task_id}.stdout").read_text().strip()
        assert sorted(cpus.split(",")) == ["0", "1"]
    assert job_info(hq_env, 1).get("Resources") == "cpus: 2 compact"


def test_relative_cwd_is_created_under_the_submit_dir(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    target = hq_env.work / "sub" / "dir"
    assert not target.exists()
    submit(hq_env, ["--cwd", "sub/dir", "--wait", "--", "bash", "-c", "pwd -P"])
    assert hq_env.job_states() == {1: "FINISHED"}
    assert (target / "job-1" / "0.stdout").read_text() == f"{target.resolve()}\n"
    assert job_info(hq_env, 1).get("Working directory") == str(target)


def test_env_values_reach_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    script = 'printf "%s|%s|%s|%s" "$FOO" "$FOO2" "${EMPTY-unset}" "$EQ"'
    flags = [
        "--env",
        "FOO=BAR",
        "--env",
        "FOO2=BAR2",
        "--env",
        "EMPTY",
        "--env",
        "EQ=a=b",
        "--wait",
    ]
    submit(hq_env, [*flags, "--", "bash", "-c", script])
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == "BAR|BAR2||a=b"


def test_duplicate_env_keys_warn(hq_env: HqEnv) -> None:
    hq_env.start_server()
    out = hq_env.command(["submit", "--env", "A=1", "--env", "A=2", "--", "true"])
    assert (
        "Some environment variables were ignored. Check if you haven't used duplicate keys."
    ) in out


def test_submit_wait_exits_zero_for_a_failed_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    result = hq_env.run(["submit", "--wait", "--", "bash", "-c", "sleep 0.5; exit 1"])
    assert result.returncode == 0, result.stderr
    # --wait returned, so the job is already complete: no polling here.
    assert hq_env.job_states() == {1: "FAILED"}


def test_submit_progress_ends_when_the_job_completes(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    result = hq_env.run(
        ["submit", "--progress", "--array", "1-2", "--", "sleep", "0.5"], timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "1/1 jobs, 2/2 tasks 2 FINISHED" in result.stdout.decode()
    assert hq_env.job_states() == {1: "FINISHED"}


def test_priority_orders_jobs_on_a_single_cpu(hq_env: HqEnv) -> None:
    hq_env.start_server()
    order = hq_env.root / "order"
    for priority in (1, 3, 3, 0):
        submit(
            hq_env, ["--priority", str(priority), "--", "bash", "-c", f"echo $HQ_JOB_ID >> {order}"]
        )
    hq_env.start_worker(cpus=1)
    hq_env.command(["job", "wait", "all"])
    assert order.read_text().split() == ["2", "3", "1", "4"]
    assert job_info(hq_env, 2).get("Priority") == "3"


def test_time_limit_fails_the_task_just_after_the_limit(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--time-limit", "500ms", "--wait", "--", "sleep", "10"])
    assert hq_env.job_states() == {1: "FAILED"}
    assert task_json(hq_env, 1)[0]["error"] == "Time limit reached"
    # Killed at its limit, not before: the upper bound only says "long before the 10 s sleep
    # ends", since a busy machine may stop the task late.
    makespan = task_list(hq_env, 1).column("Makespan")[0]
    assert 0.5 <= parse_human(makespan) < 5.0, makespan
    assert job_info(hq_env, 1).get("Task time limit") == "500ms"


# --- job list -------------------------------------------------------------------------------


def test_job_list_default_all_filter_and_footer(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    submit(hq_env, ["--wait", "--", "true"])
    submit(hq_env, ["--wait", "--", "false"])
    submit(hq_env, ["sleep", "100"])
    submit(hq_env, ["true"])
    hq_env.wait_for_job_state(3, "RUNNING")

    def ids(*args: str) -> list[str]:
        return hq_env.command(["job", "list", *args], as_table=True).column("ID")

    default = hq_env.command(["job", "list"])
    assert hq_env.command(["job", "list"], as_table=True).column("State") == ["RUNNING", "WAITING"]
    assert ids() == ["3", "4"]
    assert "There are 4 jobs in total. Use `--all` to display all jobs." in default
    everything = hq_env.command(["job", "list", "--all"])
    assert "in total" not in everything
    assert ids("--all") == ["1", "2", "3", "4"]
    assert ids("--filter", "failed") == ["2"]
    assert ids("--filter", "finished,failed") == ["1", "2"]
    assert ids("--filter", "waiting,running") == ["3", "4"]
    quiet = hq_env.run(["--output-mode=quiet", "job", "list", "--all"])
    assert quiet.stdout.decode() == "1 FINISHED\n2 FAILED\n3 RUNNING\n4 WAITING\n"


def test_job_list_footer_for_one_hidden_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["true"])
    hq_env.command(["job", "cancel", "1"])
    out = hq_env.command(["job", "list"])
    assert "There is 1 job in total. Use `--all` to display all jobs." in out
    table = hq_env.command(["job", "list"], as_table=True)
    assert table.header == ["ID", "Name", "State", "Tasks"]
    assert table.rows == []


def test_cancel_reason_in_verbose_list_and_json(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for _ in range(3):
        submit(hq_env, ["true"])
    hq_env.command(["job", "cancel", "1", "--reason", "wrong input"])
    # Nothing is left to cancel: the reason is not replaced.
    hq_env.command(["job", "cancel", "1", "--reason", "second try"])
    hq_env.command(["job", "cancel", "2"])
    hq_env.command(
        ["job", "cancel", "3", "--reason", "x" * 201],
        expect_fail="Cancel reason must be shorter than 200 you entered 201.",
    )
    plain = hq_env.command(["job", "list", "--all"], as_table=True)
    assert plain.header == ["ID", "Name", "State", "Tasks"]
    verbose = hq_env.command(["job", "list", "--all", "--verbose"], as_table=True)
    assert verbose.header == ["ID", "Name", "State", "Tasks", "Cancel Reason"]
    assert verbose.column("Cancel Reason") == ["wrong input", "", ""]
    assert verbose.column("State") == ["CANCELED", "CANCELED", "WAITING"]
    jobs = hq_env.json(["job", "list", "--all"])
    assert [set(j) for j in jobs] == [
        {"id", "name", "task_count", "task_stats", "is_open", "cancel_reason"}
    ] * 3
    assert [j["cancel_reason"] for j in jobs] == ["wrong input", None, None]
    assert jobs[0]["task_stats"] == {
        "waiting": 0,
        "running": 0,
        "finished": 0,
        "failed": 0,
        "canceled": 1,
        "aborted": 0,
    }
    assert jobs[2] == {
        "id": 3,
        "name": "true",
        "task_count": 1,
        "is_open": False,
        "cancel_reason": None,
        "task_stats": {
            "waiting": 1,
            "running": 0,
            "finished": 0,
            "failed": 0,
            "canceled": 0,
            "aborted": 0,
        },
    }


# --- job info -------------------------------------------------------------------------------


def test_job_info_rows_before_start(hq_env: HqEnv) -> None:
    hq_env.start_server()
    per_task = hq_env.root / "%{TASK_ID}"
    flags = ["--env", "FOO=BAR", "--env", "FOO2=BAR2", "--time-limit", "500ms"]
    submit(hq_env, [*flags, "--cwd", str(per_task), "--", "bash", "-c", "echo 1"])
    submit(hq_env, ["--cwd", str(hq_env.root / "foo"), "--", "true"])
    submit(hq_env, ["--array", "10-19", "--", "true"])

    first = job_info(hq_env, 1)
    assert [row[0] for row in first.rows] == [
        "ID",
        "Name",
        "State",
        "Cancel Reason",
        "Session",
        "Tasks",
        "Workers",
        "Resources",
        "Pin",
        "Priority",
        "Command",
        "Stdout",
        "Stderr",
        "Environment",
        "Working directory",
        "Task time limit",
        "Crash limit",
        "Submission date",
        "Submission directory",
        "Makespan",
    ]
    assert first.get("ID") == "1"
    assert first.get("Name") == "bash"
    assert first.get("State") == "WAITING"
    assert first.get("Session") == "closed"
    assert first.get("Workers") == ""
    assert first.get("Resources") == "cpus: 1 compact"
    assert first.get("Pin") == "none"
    assert first.get("Priority") == "0"
    assert first.get("Command") == "bash\n-c\necho 1"
    assert first.get("Environment") == "FOO=BAR\nFOO2=BAR2"
    assert first.get("Task time limit") == "500ms"
    assert first.get("Crash limit") == "5"
    assert first.get("Working directory") == str(per_task)
    assert first.get("Stdout") == f"{per_task}/job-1/%{{TASK_ID}}.stdout"
    assert first.get("Stderr") == f"{per_task}/job-1/%{{TASK_ID}}.stderr"
    assert first.get("Submission directory") == str(hq_env.work)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", first.get("Submission date"))

    second = job_info(hq_env, 2)
    assert second.get("Stdout") == f"{hq_env.root}/foo/job-2/%{{TASK_ID}}.stdout"
    assert second.get("Environment") == ""
    assert second.get("Task time limit") == "None"

    third = job_info(hq_env, 3)
    assert third.get("Tasks") == "10; Ids: 10-19"
    assert third.get("State") == "[" + "." * 40 + "]\nWAITING (10)"
    assert third.get("Stdout") == f"{hq_env.work}/job-3/%{{TASK_ID}}.stdout"


def test_job_info_state_counts_workers_and_frozen_makespan(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    # In ID order: 10-13 finish, 14-15 fail, 16-19 sleep, so two of them occupy both CPUs.
    script = (
        "if [ $HQ_TASK_ID -lt 14 ]; then exit 0; fi; "
        "if [ $HQ_TASK_ID -lt 16 ]; then exit 1; fi; sleep 100"
    )
    submit(hq_env, ["--array", "10-19", "--", "bash", "-c", script])

    def counts() -> dict[str, int]:
        states = list(hq_env.task_states(1).values())
        return {s: states.count(s) for s in set(states)}

    wanted = {"finished": 4, "failed": 2, "running": 2, "waiting": 2}
    hq_env.wait_until(lambda: counts() == wanted, f"task states {wanted}")
    info = job_info(hq_env, 1)
    assert info.get("State") == (
        "[" + "#" * 32 + "." * 8 + "]\nRUNNING (2)\nFAILED (2)\nFINISHED (4)\nWAITING (2)"
    )
    assert info.get("Tasks") == "10; Ids: 10-19"
    assert info.get("Workers") == "worker1"
    assert info.get("Makespan") != "0s"

    hq_env.command(["job", "cancel", "1"])
    tables = job_info_tables(hq_env, 1)
    assert tables[0].get("State") == ("[" + "#" * 40 + "]\nFAILED (2)\nFINISHED (4)\nCANCELED (4)")
    assert tables[1].header == ["Task ID", "Worker", "Error"]
    assert tables[1].rows == [
        ["14", "worker1", "Program terminated with exit code 1."],
        ["15", "worker1", "Program terminated with exit code 1."],
    ]
    assert "2 tasks failed.\n" in hq_env.command(["job", "info", "1"])
    makespan = tables[0].get("Makespan")
    time.sleep(0.3)  # let the clock move: a makespan that still grows would change
    assert job_info(hq_env, 1).get("Makespan") == makespan
    assert hq_env.job_states() == {1: "FAILED"}


def test_job_info_shows_five_failures_of_seven(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "1-7", "--wait", "--", "bash", "-c", "exit 3"])
    submit(hq_env, ["--wait", "--", "false"])
    out = hq_env.command(["job", "info", "1"])
    tables = job_info_tables(hq_env, 1)
    assert len(tables) == 2
    assert tables[1].column("Task ID") == ["1", "2", "3", "4", "5"]
    assert set(tables[1].column("Error")) == {"Program terminated with exit code 3."}
    assert "7 tasks failed. (5 shown)" in out
    single = hq_env.command(["job", "info", "2"])
    assert "1 tasks failed.\n" in single
    assert "shown" not in single


def test_job_info_missing_job_and_last(hq_env: HqEnv) -> None:
    hq_env.start_server()
    empty = hq_env.run(["job", "info", "last"])
    assert empty.returncode == 0
    submit(hq_env, ["true"])
    submit(hq_env, ["--name", "second", "--", "true"])
    missing = hq_env.run(["job", "info", "5"])
    assert missing.returncode == 0
    assert "Job 5 not found" in (missing.stdout + missing.stderr).decode()
    last = job_info(hq_env, "last")
    assert last.get("ID") == "2"
    assert last.get("Name") == "second"


def test_job_info_json_describes_the_submit(hq_env: HqEnv) -> None:
    hq_env.start_server()
    resources = ["res1=2", "res2=8 compact!", "res3=all", "res4=4 scatter"]
    flags = [arg for r in resources for arg in ("--resource", r)]
    submit(hq_env, [*flags, "--env", "FOO=BAR", "--priority", "7", "--", "bash", "-c", "echo"])
    [job] = hq_env.json(["job", "info", "1"])
    assert set(job) == {"info", "max_fails", "started_at", "finished_at", "submits", "tasks"}
    assert job["info"]["id"] == 1
    assert job["info"]["task_count"] == 1
    assert job["max_fails"] is None
    assert job["finished_at"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", job["started_at"])
    assert job["tasks"] == [{"id": 0, "state": "waiting"}]
    [only] = job["submits"]
    description = only["array"]
    assert description["resources"] == [
        {
            "n_nodes": 0,
            "min_time": 0.0,
            "weight": 10000,
            "resources": [
                {"resource": "res1", "request": {"Compact": 20000}},
                {"resource": "res2", "request": {"ForceCompact": 80000}},
                {"resource": "res3", "request": "All"},
                {"resource": "res4", "request": {"Scatter": 40000}},
                # The implicit CPU request comes last, as in HQ's job detail.
                {"resource": "cpus", "request": {"Compact": 10000}},
            ],
        }
    ]
    assert description["program"] == {
        "args": ["bash", "-c", "echo"],
        "env": {"FOO": "BAR"},
        "cwd": str(hq_env.work),
        "stdout": f"{hq_env.work}/job-1/%{{TASK_ID}}.stdout",
        "stderr": f"{hq_env.work}/job-1/%{{TASK_ID}}.stderr",
    }
    assert description["priority"] == 7
    assert description["pin_mode"] is None
    assert description["time_limit"] is None
    assert description["task_dir"] is False
    assert description["crash_limit"] == 5


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_waiting_job_and_cancel_again(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--array", "1-3", "--", "true"])
    out = hq_env.command(["job", "cancel", "1"])
    assert "Job 1 canceled (3 tasks canceled, 0 tasks already finished)" in out
    assert hq_env.job_states() == {1: "CANCELED"}
    again = hq_env.run(["job", "cancel", "1"])
    assert again.returncode == 0
    assert (
        "Canceling job 1 failed; all tasks are already finished"
        in (again.stdout + again.stderr).decode()
    )
    assert set(hq_env.task_states(1).values()) == {"canceled"}


def test_cancel_running_job_kills_its_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    pid_file = hq_env.root / "pid"
    script = f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 100"
    submit(hq_env, ["--", "bash", "-c", script])
    pid = int(wait_for_file(hq_env, pid_file))
    hq_env.wait_for_job_state(1, "RUNNING")
    out = hq_env.command(["job", "cancel", "1"])
    assert "Job 1 canceled (1 tasks canceled, 0 tasks already finished)" in out
    hq_env.wait_until(lambda: not pid_alive(pid), "the canceled task's process to end")
    assert hq_env.job_states() == {1: "CANCELED"}
    assert hq_env.task_states(1) == {0: "canceled"}
    # The worker is still there and takes new work.
    submit(hq_env, ["--wait", "--", "true"])
    assert hq_env.job_states()[2] == "FINISHED"


def test_cancel_completed_jobs_fails_per_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "true"])
    submit(hq_env, ["--wait", "--", "false"])
    out = hq_env.command(["job", "cancel", "1-2"])
    assert "Canceling job 1 failed; all tasks are already finished" in out
    assert "Canceling job 2 failed; all tasks are already finished" in out
    assert hq_env.job_states() == {1: "FINISHED", 2: "FAILED"}


def test_cancel_range_with_missing_job_and_cancel_all(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for _ in range(3):
        submit(hq_env, ["true"])
    hq_env.command(["job", "cancel", "2"])
    everything = hq_env.command(["job", "cancel", "all"])
    canceled = [line for line in everything.splitlines() if "canceled (" in line]
    assert len(canceled) == 2
    assert "Job 1 canceled" in canceled[0]
    assert "Job 3 canceled" in canceled[1]
    assert "Job 2" not in everything
    ranged = hq_env.command(["job", "cancel", "1-4"])
    for job_id in (1, 2, 3):
        assert f"Canceling job {job_id} failed; all tasks are already finished" in ranged
    assert "Canceling job 4 failed; job not found" in ranged
    assert "There is nothing to cancel" in hq_env.command(["job", "cancel", "all"])


def test_cancel_of_a_running_20000_task_array(hq_env: HqEnv) -> None:
    """How long it takes is measured in bench/test_cancel_bench.py."""
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(
        hq_env, ["--array", "1-20000", "--stdout", "none", "--stderr", "none", "--", "sleep", "1"]
    )
    hq_env.wait_for_job_state(1, "RUNNING")
    out = hq_env.command(["job", "cancel", "1"])
    assert "Job 1 canceled (" in out
    assert hq_env.job_states() == {1: "CANCELED"}
    stats = hq_env.json(["job", "list", "--all"])[0]["task_stats"]
    assert stats["canceled"] + stats["finished"] == 20000
    assert stats["canceled"] > 19000


# --- wait and progress ----------------------------------------------------------------------


def test_job_wait_all_and_last_exit_zero_for_failed_and_canceled(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["bash", "-c", "sleep 0.5; exit 1"])
    submit(hq_env, ["sleep", "0.5"])
    result = hq_env.run(["job", "wait", "all"])
    assert result.returncode == 0
    assert result.stdout == b""
    assert hq_env.job_states() == {1: "FAILED", 2: "FINISHED"}

    submit(hq_env, ["sleep", "100"])
    hq_env.command(["job", "cancel", "3"])
    assert hq_env.run(["job", "wait", "last"]).returncode == 0
    assert hq_env.job_states()[3] == "CANCELED"
    assert hq_env.run(["job", "wait", "1-3"]).returncode == 0


def test_job_progress_waits_for_the_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "1-2", "--", *gated("gate")])
    with background(hq_env, ["job", "progress", "1"]) as progress:
        assert progress.stdout is not None
        first = progress.stdout.readline().decode()  # the tasks still wait for their gate
        open_gate(hq_env, "gate")
        code, rest = finish(progress, timeout=30)
    assert code == 0
    output = first + rest
    assert "Waiting for 1 job(s) with 2 task(s)" in output
    assert "1/1 jobs, 2/2 tasks 2 FINISHED" in output
    assert hq_env.job_states() == {1: "FINISHED"}
    again = hq_env.run(["job", "progress", "1"])
    assert again.returncode == 0
    assert "There are no jobs to wait for" in (again.stdout + again.stderr).decode()
