"""Features beyond HQ: `hq submit --after`, `hq job resubmit` and `hq submit --retries`.

`--after JOB[@TASKS]` holds a whole new job until the named tasks of earlier jobs finished; a
prerequisite that fails, is canceled or aborted aborts it (as HQ's dependencies do, jobs.md
§8.2). `hq job resubmit` submits a job's failed/canceled tasks again as a new job. `--retries N`
runs a task whose program exits non-zero again, up to N times, under new instance ids.
"""

from __future__ import annotations

from harness import HqEnv
from job_helpers import job_info, submit, task_info, task_json
from manage_helpers import gated, job_list_rows, open_gate, open_job, stamp, stamps

# --- --after ----------------------------------------------------------------------------------

FIRST_ENDS_AT_ONCE = "[ $HQ_TASK_ID = 0 ] || while [ ! -e go ]; do sleep 0.05; done"


def test_after_job_starts_only_when_every_prerequisite_finished(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4)
    submit(hq_env, ["--array", "0-2", "--", *gated("go", stamp("ends"))])
    submit(hq_env, ["--after", "1", "--array", "0-1", "--", "bash", "-c", stamp("starts")])
    hq_env.wait_for_tasks(1, "running", count=3)
    # The fourth CPU is idle: without the barrier job 2 would run on it, as job 3 does.
    submit(hq_env, ["--", "true"])
    hq_env.wait_for_job_state(3, "FINISHED")
    assert hq_env.task_states(2) == {0: "waiting", 1: "waiting"}
    assert not (hq_env.work / "starts").exists()

    open_gate(hq_env, "go")
    hq_env.wait_for_job_state([1, 2], "FINISHED")
    ends, starts = stamps(hq_env.work / "ends"), stamps(hq_env.work / "starts")
    assert len(ends) == 3
    assert len(starts) == 2
    assert min(starts) >= max(ends)


def test_after_selected_tasks_ignores_the_others(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(
        hq_env,
        [
            "--array",
            "0-1",
            "--",
            "bash",
            "-c",
            FIRST_ENDS_AT_ONCE,
        ],
    )
    submit(hq_env, ["--after", "1@0", "--", "true"])
    hq_env.wait_for_job_state(2, "FINISHED")
    assert hq_env.task_states(1) == {0: "finished", 1: "running"}
    open_gate(hq_env, "go")
    hq_env.wait_for_job_state(1, "FINISHED")


def test_after_several_jobs_waits_for_all_of_them(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=3)
    submit(hq_env, ["--", *gated("go1", stamp("ends"))])
    submit(hq_env, ["--", *gated("go2", stamp("ends"))])
    submit(hq_env, ["--after", "1", "--after", "2@0", "--", "bash", "-c", stamp("starts")])
    hq_env.wait_for_tasks(2, "running")
    open_gate(hq_env, "go1")
    hq_env.wait_for_job_state(1, "FINISHED")
    submit(hq_env, ["--", "true"])  # a free CPU is used: job 3 is held, not starved
    hq_env.wait_for_job_state(4, "FINISHED")
    assert hq_env.task_states(3) == {0: "waiting"}
    open_gate(hq_env, "go2")
    hq_env.wait_for_job_state([2, 3], "FINISHED")
    assert min(stamps(hq_env.work / "starts")) >= max(stamps(hq_env.work / "ends"))


def test_after_finished_job_runs_at_once(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "true"])
    submit(hq_env, ["--after", "1", "--wait", "--", "true"])
    assert hq_env.job_states() == {1: "FINISHED", 2: "FINISHED"}


def test_failed_prerequisite_aborts_the_waiting_job_and_its_followers(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "0-1", "--", *gated("go", "exit $HQ_TASK_ID")])
    submit(hq_env, ["--after", "1", "--array", "0-3", "--", "touch", "ran2"])
    submit(hq_env, ["--after", "2", "--", "touch", "ran3"])
    submit(hq_env, ["--after", "1@0", "--", "touch", "ran4"])  # only the finishing task
    open_gate(hq_env, "go")
    hq_env.wait_for_job_state([1, 2, 3, 4], ["FAILED", "ABORTED", "FINISHED"])
    assert hq_env.job_states() == {1: "FAILED", 2: "ABORTED", 3: "ABORTED", 4: "FINISHED"}
    assert set(hq_env.task_states(2).values()) == {"aborted"}
    assert job_info(hq_env, 2).get("State").splitlines()[1:] == ["ABORTED (4)"]
    assert not (hq_env.work / "ran2").exists()
    assert not (hq_env.work / "ran3").exists()
    assert (hq_env.work / "ran4").exists()


def test_canceled_prerequisite_aborts_the_waiting_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--", *gated("go")])
    submit(hq_env, ["--after", "1", "--", "touch", "ran"])
    hq_env.wait_for_tasks(1, "running")
    hq_env.command(["job", "cancel", "1"])
    hq_env.wait_for_job_state(2, "ABORTED")
    assert hq_env.job_states() == {1: "CANCELED", 2: "ABORTED"}
    assert not (hq_env.work / "ran").exists()


def test_canceling_a_held_job_keeps_it_from_ever_running(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--", *gated("go")])
    submit(hq_env, ["--after", "1", "--", "touch", "ran"])
    out = hq_env.command(["job", "cancel", "2"])
    assert "Job 2 canceled (1 tasks canceled, 0 tasks already finished)" in out
    open_gate(hq_env, "go")
    hq_env.wait_for_job_state(1, "FINISHED")
    submit(hq_env, ["--wait", "--", "true"])  # the node is free and has run what it got
    assert hq_env.job_states() == {1: "FINISHED", 2: "CANCELED", 3: "FINISHED"}
    assert not (hq_env.work / "ran").exists()


def test_prerequisite_that_already_failed_aborts_at_submit(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "bash", "-c", "exit 1"])
    submit(hq_env, ["--after", "1", "--array", "0-2", "--", "touch", "ran"])
    hq_env.wait_for_job_state(2, "ABORTED")
    assert hq_env.task_states(2) == {0: "aborted", 1: "aborted", 2: "aborted"}
    # A finished job waits for nothing, so `wait` returns and nothing ever ran.
    assert hq_env.run(["job", "wait", "2"], timeout=20).returncode == 0
    assert not (hq_env.work / "ran").exists()


def test_after_unknown_job_or_task_is_refused(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--array", "0-2", "--", "true"])
    hq_env.command(["submit", "--after", "55", "--", "true"], expect_fail="Job 55 not found.")
    out = hq_env.command(["submit", "--after", "1@7", "--", "true"], expect_fail="task 7")
    assert "job 1" in out
    out = hq_env.command(
        ["submit", "--after", "x", "--", "true"], expect_fail="invalid --after value 'x'"
    )
    assert "Traceback" not in out
    assert hq_env.job_states() == {1: "WAITING"}


def test_task_explain_counts_after_prerequisites(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "0-2", "--", "bash", "-c", FIRST_ENDS_AT_ONCE])
    # 3 CPUs on a 2-CPU worker: the task stays waiting (and explainable) after the barrier.
    submit(hq_env, ["--after", "1", "--cpus", "3", "--", "true"])
    hq_env.wait_for_tasks(1, "finished", count=1)
    out = hq_env.command(["task", "explain", "2", "0"])
    assert out.splitlines()[0] == (
        "Task 2@0 is not ready to run, because 2/3 dependencies are not finished."
    )
    explanation = hq_env.json(["task", "explain", "2", "0"])["explanation"]
    assert (explanation["n_task_deps"], explanation["n_waiting_deps"]) == (3, 2)
    open_gate(hq_env, "go")
    hq_env.wait_for_job_state(1, "FINISHED")
    out = hq_env.command(["task", "explain", "2", "0"])
    assert out.splitlines()[:2] == [
        "Task 2@0 is ready to run because its all 3 dependencies are finished.",
        "There is no worker where the task can run.",
    ]
    # The barrier counts the named tasks only.
    submit(hq_env, ["--after", "1@1-2", "--", "true"])
    hq_env.wait_for_job_state(3, "FINISHED")
    submit(hq_env, ["--after", "1@0,2", "--after", "3", "--cpus", "3", "--", "true"])
    explanation = hq_env.json(["task", "explain", "4", "0"])["explanation"]
    assert (explanation["n_task_deps"], explanation["n_waiting_deps"]) == (3, 0)


def test_after_earlier_tasks_of_the_same_open_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    open_job(hq_env)
    submit(hq_env, ["--job", "1", "--", *gated("go", stamp("ends"))])
    submit(hq_env, ["--job", "1", "--after", "1@0", "--", "bash", "-c", stamp("starts")])
    hq_env.wait_for_tasks(1, "running", count=1)
    submit(hq_env, ["--", "true"])  # the second CPU is free
    hq_env.wait_for_job_state(2, "FINISHED")
    assert hq_env.task_states(1) == {0: "running", 1: "waiting"}
    open_gate(hq_env, "go")
    hq_env.wait_for_tasks(1, "finished", count=2)
    assert min(stamps(hq_env.work / "starts")) >= max(stamps(hq_env.work / "ends"))


# --- resubmit ---------------------------------------------------------------------------------

FAIL_ODD = 'echo "run $HQ_JOB_ID"; [ $((HQ_TASK_ID % 2)) = 0 ] || [ -e fixed ]'


def test_resubmit_failed_and_canceled_tasks_as_a_new_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "0-5", "--wait", "--", "bash", "-c", FAIL_ODD])
    submit(hq_env, ["--cpus", "3", "--array", "10-12", "--", "bash", "-c", FAIL_ODD])
    hq_env.command(["job", "cancel", "2"])
    assert hq_env.command(["job", "task-ids", "1", "--filter", "failed"]) == "1,3,5\n"

    (hq_env.work / "fixed").touch()
    out = hq_env.command(["job", "resubmit", "1"])
    assert out == "Job submitted successfully, job ID: 3\n"
    hq_env.wait_for_job_state(3, "FINISHED")
    assert hq_env.command(["job", "task-ids", "3"]) == "1,3,5\n"
    original, again = job_info(hq_env, 1), job_info(hq_env, 3)
    for row in ("Name", "Command", "Resources", "Working directory"):
        assert again.get(row) == original.get(row), row
    for task_id in (1, 3, 5):
        assert (hq_env.work / "job-3" / f"{task_id}.stdout").read_text() == "run 3\n"

    # Canceled tasks are resubmitted too (default filter), with their own request.
    assert submit(hq_env, ["--", "true"]) == 4
    out = hq_env.command(["job", "resubmit", "2"])
    assert out == "Job submitted successfully, job ID: 5\n"
    assert hq_env.command(["job", "task-ids", "5"]) == "10-12\n"
    assert job_info(hq_env, 5).get("Resources") == "cpus: 3 compact"


def test_resubmit_filter_and_json(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "0-5", "--wait", "--", "bash", "-c", FAIL_ODD])
    assert hq_env.json(["job", "resubmit", "1", "--filter", "finished"]) == {"id": 2}
    assert hq_env.command(["job", "task-ids", "2"]) == "0,2,4\n"
    assert hq_env.command(["--output-mode=quiet", "job", "resubmit", "1"]) == "3\n"
    assert hq_env.command(["job", "task-ids", "3"]) == "1,3,5\n"


def test_resubmit_keeps_each_tasks_entry(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    (hq_env.work / "lines.txt").write_text("a\nb\nc\nd\n")
    check = 'echo "$HQ_ENTRY"; [ "$HQ_ENTRY" = a ] || [ "$HQ_ENTRY" = c ] || [ -e fixed ]'
    submit(hq_env, ["--each-line", "lines.txt", "--wait", "--", "bash", "-c", check])
    assert hq_env.command(["job", "task-ids", "1", "--filter", "failed"]) == "1,3\n"
    (hq_env.work / "fixed").touch()
    (hq_env.work / "lines.txt").write_text("changed\n")  # the entries were sent at submit
    hq_env.command(["job", "resubmit", "1"])
    hq_env.wait_for_job_state(2, "FINISHED")
    assert hq_env.command(["job", "task-ids", "2"]) == "1,3\n"
    outputs = [(hq_env.work / "job-2" / f"{i}.stdout").read_text() for i in (1, 3)]
    assert outputs == ["b\n", "d\n"]


def test_resubmit_errors(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "true"])
    hq_env.command(["job", "resubmit", "1"], expect_fail="Job 1 has no tasks in the given states")
    hq_env.command(["job", "resubmit", "9"], expect_fail="Job 9 not found")
    assert hq_env.job_states() == {1: "FINISHED"}


def test_resubmit_of_a_job_made_of_several_submits(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    open_job(hq_env)
    submit(hq_env, ["--job", "1", "--array", "0-1", "--", "bash", "-c", "echo a; exit 1"])
    submit(hq_env, ["--job", "1", "--array", "5", "--", "bash", "-c", "echo b; exit 1"])
    hq_env.command(["job", "close", "1"])
    hq_env.wait_for_job_state(1, "FAILED")
    assert submit(hq_env, ["--", "true"]) == 2
    hq_env.command(["job", "resubmit", "1"])
    hq_env.wait_for_job_state(3, "FAILED")
    assert hq_env.command(["job", "task-ids", "3"]) == "0-1,5\n"
    outputs = {i: (hq_env.work / "job-3" / f"{i}.stdout").read_text() for i in (0, 1, 5)}
    assert outputs == {0: "a\n", 1: "a\n", 5: "b\n"}
    assert job_list_rows(hq_env, "--all")[2] == ["3", "job", "FAILED", "3"]


# --- --retries --------------------------------------------------------------------------------

SUCCEED_ON_RUN_3 = "echo $HQ_INSTANCE_ID >> runs; [ $(wc -l < runs) -ge 3 ]"


def test_retries_run_again_under_new_instances_until_success(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--retries", "4", "--wait", "--", "bash", "-c", SUCCEED_ON_RUN_3])
    assert hq_env.job_states() == {1: "FINISHED"}
    assert (hq_env.work / "runs").read_text().split() == ["0", "1", "2"]
    [info] = task_info(hq_env, 1, "0")
    assert info.get("State") == "FINISHED"
    assert info.get("Instance") == "2"
    assert info.get("Error") == ""


def test_retries_exhausted_fail_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        ["--retries", "2", "--wait", "--", "bash", "-c", "echo $HQ_INSTANCE_ID >> runs; exit 4"],
    )
    assert hq_env.job_states() == {1: "FAILED"}
    assert (hq_env.work / "runs").read_text().split() == ["0", "1", "2"]
    [info] = task_info(hq_env, 1, "0")
    assert info.get("Instance") == "2"
    assert info.get("Error") == "Program terminated with exit code 4."


def test_retries_do_not_repeat_a_time_limited_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        [
            "--retries",
            "3",
            "--time-limit",
            "300ms",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo $HQ_INSTANCE_ID >> runs; sleep 10",
        ],
    )
    assert hq_env.job_states() == {1: "FAILED"}
    assert task_json(hq_env, 1)[0]["error"] == "Time limit reached"
    assert (hq_env.work / "runs").read_text().split() == ["0"]
    assert task_info(hq_env, 1, "0")[0].get("Instance") == "0"


def test_after_a_retried_prerequisite_waits_for_its_success(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--retries", "2", "--", "bash", "-c", SUCCEED_ON_RUN_3])
    submit(hq_env, ["--after", "1", "--", "touch", "ran"])
    hq_env.wait_for_job_state([1, 2], "FINISHED")
    assert (hq_env.work / "runs").read_text().split() == ["0", "1", "2"]
    assert (hq_env.work / "ran").exists()


def test_after_a_prerequisite_that_fails_all_retries_aborts(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--retries", "1", "--", "bash", "-c", "echo x >> runs; exit 1"])
    submit(hq_env, ["--after", "1", "--", "touch", "ran"])
    hq_env.wait_for_job_state(2, "ABORTED")
    assert hq_env.job_states() == {1: "FAILED", 2: "ABORTED"}
    assert (hq_env.work / "runs").read_text().split() == ["x", "x"]
    assert not (hq_env.work / "ran").exists()
