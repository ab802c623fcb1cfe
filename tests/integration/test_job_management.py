"""Managing jobs after submit: `hq job forget|summary|task-ids|cat` and `hq task info|explain`.

Spec: cli.md §6-§7, jobs.md §8.4, §14, output.md §2, §3.6, §3.9, §3.10, §4.5, §4.7, §4.8, §5;
conformance.md ("Tasks", `job task-ids` facts, `job summary`).
"""

from __future__ import annotations

import json
import re

import pytest
from harness import HqEnv, Table
from job_helpers import job_info, submit, task_info
from manage_helpers import gated, job_list_rows, messages, open_gate, open_job, submit_file

SUMMARY_ORDER = ["RUNNING", "WAITING", "FINISHED", "FAILED", "ABORTED", "CANCELED"]


def jobs_in_every_state(env: HqEnv) -> None:
    """Jobs 1-2 FINISHED, 3 FAILED, 4 CANCELED, 5 ABORTED, 6 RUNNING, 7 WAITING (1 CPU)."""
    env.start_worker(cpus=1)
    submit(env, ["--wait", "--", "true"])
    submit(env, ["--wait", "--", "true"])
    submit(env, ["--wait", "--", "bash", "-c", "exit 1"])
    submit(env, ["--cpus", "2", "--", "true"])
    env.command(["job", "cancel", "4"])
    submit(env, ["--after", "3", "--", "true"])  # its prerequisite failed: aborted
    submit(env, ["--", *gated("go")])
    env.wait_for_tasks(6, "running")
    submit(env, ["--", "true"])
    assert env.job_states() == {
        1: "FINISHED",
        2: "FINISHED",
        3: "FAILED",
        4: "CANCELED",
        5: "ABORTED",
        6: "RUNNING",
        7: "WAITING",
    }


# --- forget -----------------------------------------------------------------------------------


def test_forget_removes_completed_jobs_and_ignores_the_rest(hq_env: HqEnv) -> None:
    hq_env.start_server()
    jobs_in_every_state(hq_env)
    open_job(hq_env)  # 8: open, never completed
    out = hq_env.command(["job", "forget", "all"])
    assert messages(out) == [
        "5 jobs were forgotten, 3 were ignored due to wrong state or invalid ID"
    ]
    assert hq_env.job_states() == {6: "RUNNING", 7: "WAITING", 8: "OPENED"}
    assert "Job 1 not found" in hq_env.command(["job", "info", "1"])
    assert hq_env.json(["job", "info", "1-5"]) == []

    open_gate(hq_env, "go")
    hq_env.wait_for_job_state([6, 7], "FINISHED")
    # Only the "forgotten" part when nothing was ignored.
    assert messages(hq_env.command(["job", "forget", "6"])) == ["1 job were forgotten"]
    assert hq_env.job_states() == {7: "FINISHED", 8: "OPENED"}
    # Ids are never reused.
    assert submit(hq_env, ["--", "true"]) == 9


def test_forget_with_filter_missing_ids_and_json(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "true"])
    submit(hq_env, ["--wait", "--", "bash", "-c", "exit 1"])
    submit(hq_env, ["--wait", "--", "bash", "-c", "exit 1"])
    out = hq_env.command(["job", "forget", "1-3", "--filter", "failed"])
    assert messages(out) == [
        "2 jobs were forgotten, 1 were ignored due to wrong state or invalid ID"
    ]
    assert hq_env.job_states() == {1: "FINISHED"}
    # Unknown ids count as ignored.
    out = hq_env.command(["job", "forget", "2-4"])
    assert messages(out) == [
        "0 jobs were forgotten, 3 were ignored due to wrong state or invalid ID"
    ]
    assert hq_env.command(["--output-mode=json", "job", "forget", "last"], ignore_stderr=True) == (
        "{}\n"
    )
    assert hq_env.job_states() == {}


def test_forget_filter_accepts_only_completed_states(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--", "true"])
    result = hq_env.run(["job", "forget", "all", "--filter", "waiting"])
    assert result.returncode != 0
    assert "waiting" in (result.stdout + result.stderr).decode()
    assert hq_env.job_states() == {1: "WAITING"}


# --- info -------------------------------------------------------------------------------------


def test_info_workers_row_joins_hostnames_with_a_bare_comma(hq_env: HqEnv) -> None:
    """output.md §3.6: `worker3,worker4`, at most two names, then `, … (<n> total)`."""
    hq_env.start_server()
    for _ in range(3):
        hq_env.start_worker(cpus=1)
    # One-CPU tasks submitted to idle one-CPU workers: one starts on each, in worker order.
    submit(hq_env, ["--array", "1-2", "--", *gated("go")])
    hq_env.wait_for_tasks(1, "running", count=2)
    assert job_info(hq_env, 1).get("Workers") == "worker1,worker2"
    open_gate(hq_env, "go")
    hq_env.wait_for_job_state(1, "FINISHED")
    submit(hq_env, ["--array", "1-3", "--wait", "--", "true"])
    assert job_info(hq_env, 2).get("Workers") == "worker1,worker2, … (3 total)"


# --- summary ----------------------------------------------------------------------------------


def test_summary_counts_jobs_per_state_in_all_modes(hq_env: HqEnv) -> None:
    hq_env.start_server()
    jobs_in_every_state(hq_env)
    table = hq_env.command(["job", "summary"], as_table=True)
    assert table.header == ["Status", "Count"]
    expected = [
        ["RUNNING", "1"],
        ["WAITING", "1"],
        ["FINISHED", "2"],
        ["FAILED", "1"],
        ["ABORTED", "1"],
        ["CANCELED", "1"],
    ]
    assert table.rows == expected
    # `Count` is right-justified (output.md §1.2).
    assert "|     2 |" in hq_env.command(["job", "summary"])
    assert hq_env.json(["job", "summary"]) == {
        "Running": 1,
        "Waiting": 1,
        "Finished": 2,
        "Failed": 1,
        "Aborted": 1,
        "Canceled": 1,
    }
    quiet = hq_env.command(["--output-mode=quiet", "job", "summary"])
    assert quiet == "".join(f"{state} {count}\n" for state, count in expected)

    # An open job: still six CLI rows; JSON adds `Opened`.
    open_job(hq_env)
    assert hq_env.command(["job", "summary"], as_table=True).rows == expected
    assert hq_env.json(["job", "summary"])["Opened"] == 1
    assert hq_env.command(["--output-mode=quiet", "job", "summary"]) == quiet
    assert len(hq_env.json(["job", "summary"])) == 7


def test_summary_without_jobs(hq_env: HqEnv) -> None:
    hq_env.start_server()
    table = hq_env.command(["job", "summary"], as_table=True)
    assert table.rows == [[state, "0"] for state in SUMMARY_ORDER]
    assert hq_env.json(["job", "summary"]) == dict.fromkeys(
        ("Running", "Waiting", "Finished", "Failed", "Aborted", "Canceled"), 0
    )


# --- task-ids ---------------------------------------------------------------------------------

FAIL_25_TO_28 = "case $HQ_TASK_ID in 25|26|27|28) exit 1;; esac"


def test_task_ids_with_state_filters(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "2,7,9,20-30", "--wait", "--", "bash", "-c", FAIL_25_TO_28])
    assert hq_env.command(["job", "task-ids", "1"]) == "2,7,9,20-30\n"
    assert hq_env.command(["job", "task-ids", "1", "--filter", "finished"]) == (
        "2,7,9,20-24,29-30\n"
    )
    assert hq_env.command(["job", "task-ids", "1", "--filter", "failed"]) == "25-28\n"
    assert hq_env.command(["job", "task-ids", "1", "--filter", "canceled"]) == "\n"
    assert hq_env.command(["job", "task-ids", "1", "--filter", "failed,finished"]) == (
        "2,7,9,20-30\n"
    )
    assert hq_env.command(["job", "task-ids", "last"]) == "2,7,9,20-30\n"


def test_task_ids_of_several_jobs_and_json(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "2,7,9,20-30", "--wait", "--", "bash", "-c", FAIL_25_TO_28])
    submit(hq_env, ["--array", "0-3:3", "--wait", "--", "true"])
    assert hq_env.command(["job", "task-ids", "1-2"]) == "1: 2,7,9,20-30\n2: 0,3\n"
    assert hq_env.command(["job", "task-ids", "all", "--filter", "failed"]) == "1: 25-28\n2: \n"
    assert hq_env.json(["job", "task-ids", "1"]) == {"1": [2, 7, 9, *range(20, 31)]}
    assert hq_env.json(["job", "task-ids", "all", "--filter", "failed"]) == {
        "1": [25, 26, 27, 28],
        "2": [],
    }


# --- cat --------------------------------------------------------------------------------------

OUT_ERR = 'echo "out$HQ_TASK_ID"; echo "err$HQ_TASK_ID" >&2; [ $HQ_TASK_ID != 2 ]'


def test_cat_concatenates_outputs_in_task_order(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "1-3", "--wait", "--", "bash", "-c", OUT_ERR])
    cat = ["job", "cat", "1"]
    assert hq_env.command([*cat, "stdout"], ignore_stderr=True) == "out1\nout2\nout3\n"
    assert hq_env.command([*cat, "stderr"], ignore_stderr=True) == "err1\nerr2\nerr3\n"
    assert hq_env.command([*cat, "stdout", "--tasks", "1,3"], ignore_stderr=True) == (
        "out1\nout3\n"
    )
    assert hq_env.command([*cat, "stdout", "--task-status", "failed"], ignore_stderr=True) == (
        "out2\n"
    )
    assert hq_env.command(
        [*cat, "stderr", "--task-status", "finished", "--print-task-header"], ignore_stderr=True
    ) == ("# Job 1, task 1\nerr1\n# Job 1, task 3\nerr3\n")
    # Quiet mode prints the same raw output; `last` selects the job.
    assert (
        hq_env.command(["--output-mode=quiet", "job", "cat", "last", "stdout"], ignore_stderr=True)
        == "out1\nout2\nout3\n"
    )


def test_cat_warnings_for_missing_or_unselected_tasks(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "1-3", "--wait", "--", "bash", "-c", OUT_ERR])
    out = hq_env.command(["job", "cat", "1", "stdout", "--tasks", "1,7"])
    assert "out1\n" in out
    assert messages(out) == ["Task 7 of job 1 not found"]
    out = hq_env.command(["job", "cat", "1", "stdout", "--task-status", "canceled"])
    assert messages(out) == ["No tasks were selected for job 1, there is nothing to print"]
    assert "out" not in out


def test_cat_of_a_none_stream_warns_per_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(
        hq_env,
        [
            "--stdout",
            "none",
            "--array",
            "0-1",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo out; echo err >&2",
        ],
    )
    out = hq_env.command(["job", "cat", "1", "stdout"])
    assert messages(out) == [
        "Task 0 has no `stdout` stream associated with it",
        "Task 1 has no `stdout` stream associated with it",
    ]
    assert hq_env.command(["job", "cat", "1", "stdout"], ignore_stderr=True) == ""
    assert hq_env.command(["job", "cat", "1", "stderr"], ignore_stderr=True) == "err\nerr\n"


def test_cat_errors(hq_env: HqEnv) -> None:
    hq_env.start_server()
    out = hq_env.command(["job", "cat", "last", "stdout"])
    assert messages(out) == ["No jobs were found"]
    submit(hq_env, ["--", "true"])
    out = hq_env.command(["job", "cat", "9", "stdout"])
    assert messages(out) == ["Job 9 was not found"]
    result = hq_env.run(["--output-mode=json", "job", "cat", "1", "stdout"])
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"error": "JSON output mode doesn't support job output"}


# --- task info --------------------------------------------------------------------------------


def test_task_info_instance_grows_when_the_worker_is_lost(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--", *gated("go", "echo $HQ_INSTANCE_ID")])
    hq_env.wait_for_tasks(1, "running")
    [before] = task_info(hq_env, 1, "0")
    assert [row[0] for row in before.rows][-3:] == ["Dependencies", "Error", "Instance"]
    assert before.get("Instance") == "0"
    assert before.get("Worker") == "worker1"

    hq_env.kill_worker(1)
    hq_env.wait_for_tasks(1, "waiting")
    hq_env.start_worker()
    hq_env.wait_for_tasks(1, "running")
    open_gate(hq_env, "go")
    hq_env.wait_for_tasks(1, "finished")
    [after] = task_info(hq_env, 1, "0")
    assert after.get("Instance") == "1"
    assert after.get("Worker") == "worker2"
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == "1\n"


def test_task_info_dependencies_row(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit_file(
        hq_env,
        """
        [[task]]
        id = 0
        command = ["true"]
        [[task]]
        id = 1
        command = ["true"]
        [[task]]
        id = 5
        deps = [1, 0]
        command = ["true"]
    """,
    )
    tables = task_info(hq_env, 1, "0,5")
    assert [t.get("Task ID") for t in tables] == ["0", "5"]
    assert tables[0].get("Dependencies") == ""
    assert sorted(tables[1].get("Dependencies").split(",")) == ["0", "1"]
    assert tables[1].get("Instance") == "0"


# --- explain ----------------------------------------------------------------------------------

EXPLAIN_HEADER = ["Worker Id", "Runnable", "Variant", "Type", "Provides", "Request"]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def explain(env: HqEnv, job: int, task: int) -> tuple[list[str], Table | None]:
    """The two sentence lines and the table (None when there is none)."""
    out = env.command(["task", "explain", str(job), str(task)])
    lines = out.splitlines()
    table = Table.parse(out) if any(line.startswith("+-") for line in lines) else None
    return lines[:2], table


def test_explain_without_workers_prints_only_the_sentences(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--", "true"])
    out = hq_env.command(["task", "explain", "1", "0"])
    assert out == (
        "Task 1@0 is ready to run because it has no dependencies.\n"
        "There is no worker where the task can run.\n"
    )
    assert hq_env.json(["task", "explain", "1", "0"]) == {
        "task_id": {"job_id": 1, "job_task_id": 0},
        "explanation": {"n_task_deps": 0, "n_waiting_deps": 0, "workers": []},
    }


def test_explain_a_request_no_worker_can_satisfy(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--cpus", "3", "--", "true"])
    sentences, table = explain(hq_env, 1, 0)
    assert sentences == [
        "Task 1@0 is ready to run because it has no dependencies.",
        "There is no worker where the task can run.",
    ]
    assert table is not None
    assert table.header == EXPLAIN_HEADER
    assert table.rows == [["1", "No", "0", "cpus", "2", "3"]]
    assert hq_env.json(["task", "explain", "1", "0"]) == {
        "task_id": {"job_id": 1, "job_task_id": 0},
        "explanation": {
            "n_task_deps": 0,
            "n_waiting_deps": 0,
            "workers": [
                {
                    "worker_id": 1,
                    "variants": [
                        [
                            {
                                "Resources": {
                                    "resource": "cpus",
                                    "request_amount": 30000,
                                    "worker_amount": 20000,
                                }
                            }
                        ]
                    ],
                }
            ],
        },
    }


def test_explain_lists_every_worker_that_can_run_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.start_worker(cpus=1)
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--cpus", "2", "--", *gated("go")])
    submit(hq_env, ["--", *gated("go")])
    hq_env.wait_for_tasks(1, "running")
    sentences, table = explain(hq_env, 1, 0)
    assert sentences[1] == "The task can run on 2 workers: 1,3"
    assert table is not None
    assert table.rows == [
        ["1", "Yes", "0", "cpus", "2", "2"],
        ["2", "No", "0", "cpus", "1", "2"],
        ["3", "Yes", "0", "cpus", "2", "2"],
    ]
    assert explain(hq_env, 2, 0)[0][1] == "The task can run on 3 workers: 1-3"
    open_gate(hq_env, "go")


def test_explain_time_request_rows(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.start_worker(cpus=2, args=["--time-limit", "30s"])
    submit(hq_env, ["--time-request", "1m", "--", *gated("go")])
    hq_env.wait_for_tasks(1, "running")
    sentences, table = explain(hq_env, 1, 0)
    assert sentences[1] == "The task can run on 1 worker: 1"
    assert table is not None
    unlimited, limited = table.rows
    assert unlimited == ["1", "Yes", "0", "time\ncpus", "unknown\n2", "1m\n1"]
    assert limited[:4] == ["2", "No", "0", "time\ncpus"]
    remaining, cpus = limited[4].split("\n")
    assert re.fullmatch(r"(\d+s \d+ms|\d+s|\d+ms)", remaining), remaining
    assert cpus == "2"
    assert limited[5] == "1m\n1"

    data = hq_env.json(["task", "explain", "1", "0"])
    first, second = data["explanation"]["workers"]
    assert first["variants"] == [
        [
            {"Time": {"min_time": {"secs": 60, "nanos": 0}, "remaining_time": None}},
            {"Resources": {"resource": "cpus", "request_amount": 10000, "worker_amount": 20000}},
        ]
    ]
    time_item = second["variants"][0][0]["Time"]
    assert time_item["min_time"] == {"secs": 60, "nanos": 0}
    assert set(time_item["remaining_time"]) == {"secs", "nanos"}
    assert 0 < time_item["remaining_time"]["secs"] <= 30
    open_gate(hq_env, "go")


def test_explain_resource_variants(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit_file(
        hq_env,
        """
        [[task]]
        id = 0
        command = ["bash", "-c", "while [ ! -e go ]; do sleep 0.05; done"]
        [[task.request]]
        resources = { cpus = 8 }
        [[task.request]]
        resources = { cpus = 1 }
        [[task]]
        id = 1
        command = ["true"]
        [[task.request]]
        resources = { cpus = 8 }
        [[task.request]]
        resources = { cpus = 4 }
    """,
    )
    hq_env.wait_for_tasks(1, "running", count=1)
    sentences, table = explain(hq_env, 1, 0)
    assert sentences[1] == "The task can run on 1 worker: 1"
    assert table is not None
    # A worker's later variant rows have empty first cells: parsers join them to its first row.
    assert table.rows == [["1", "Yes (1/2)", "0\n1", "cpus\ncpus", "2\n2", "8\n1"]]
    raw = hq_env.command(["task", "explain", "1", "0"]).splitlines()
    assert [cells(line) for line in raw[3:] if line.startswith("|")][1:] == [
        ["1", "Yes (1/2)", "0", "cpus", "2", "8"],
        ["", "", "1", "cpus", "2", "1"],
    ]
    sentences, table = explain(hq_env, 1, 1)
    assert sentences[1] == "There is no worker where the task can run."
    assert table is not None
    assert table.rows == [["1", "No", "0\n1", "cpus\ncpus", "2\n2", "8\n4"]]
    data = hq_env.json(["task", "explain", "1", "1"])
    [worker] = data["explanation"]["workers"]
    assert [[item["Resources"]["request_amount"] for item in v] for v in worker["variants"]] == [
        [80000],
        [40000],
    ]
    open_gate(hq_env, "go")


def test_explain_dependency_sentences(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    # Task 2 needs 3 CPUs, so it never starts and stays explainable after its deps finished.
    submit_file(
        hq_env,
        """
        [[task]]
        id = 0
        command = ["bash", "-c", "while [ ! -e go ]; do sleep 0.05; done"]
        [[task]]
        id = 1
        command = ["true"]
        [[task]]
        id = 2
        deps = [0, 1]
        command = ["true"]
        [[task.request]]
        resources = { cpus = 3 }
    """,
    )
    hq_env.wait_for_tasks(1, "finished", count=1)
    sentences, _ = explain(hq_env, 1, 2)
    assert (
        sentences[0] == "Task 1@2 is not ready to run, because 1/2 dependencies are not finished."
    )
    assert hq_env.json(["task", "explain", "1", "2"])["explanation"]["n_waiting_deps"] == 1
    open_gate(hq_env, "go")
    hq_env.wait_for_tasks(1, "finished", count=2)
    sentences, _ = explain(hq_env, 1, 2)
    # hqshm deliberately differs from HQ's inverted condition here (conformance.md).
    assert sentences == [
        "Task 1@2 is ready to run because its all 2 dependencies are finished.",
        "There is no worker where the task can run.",
    ]
    explanation = hq_env.json(["task", "explain", "1", "2"])["explanation"]
    assert (explanation["n_task_deps"], explanation["n_waiting_deps"]) == (2, 0)


@pytest.mark.parametrize(
    ("job", "task", "error"),
    [
        ("1", "7", "Task not found"),
        ("1", "0", "Explain command works only for tasks in WAITING or RUNNING state"),
        ("9", "0", "Job not found"),
    ],
)
def test_explain_errors(hq_env: HqEnv, job: str, task: str, error: str) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "true"])
    out = hq_env.command(["task", "explain", job, task], expect_fail=error)
    assert "Traceback" not in out
    assert job_info(hq_env, 1).get("State") == "FINISHED"
    assert job_list_rows(hq_env, "--all") == [["1", "true", "FINISHED", "1"]]
