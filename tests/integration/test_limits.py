"""Per-task limits and what happens when tasks end badly: task directories and error files,
time limits and requests, priorities, `--max-fails`, crash limits, instance ids and `--retries`
(spec/jobs.md §1, §4.4-4.5, §7, §8, §16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import HqEnv, wait_for_pid_exit
from job_helpers import (
    job_info,
    submit,
    task_json,
    task_list,
    task_workers,
    wait_for_file,
    worker_runtime_info,
)

from hqshm.model.durations import parse_human

TRUNCATED = "\n[The message was truncated]"
NEVER_RESTART = "Task was running on a lost worker while never restart flag was set."


def crash_error(count: int) -> str:
    return (
        "Task was running on a worker that was lost; the task has occurred "
        f"{count} times in this situation and limit was reached."
    )


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def error_of(env: HqEnv, job: int, task: int = 0) -> str:
    return task_json(env, job)[task].get("error", "")


def wait_for_state(env: HqEnv, job: int, task: int, state: str) -> None:
    env.wait_until(
        lambda: env.task_states(job).get(task) == state, f"task {job}@{task} to be {state}"
    )


def wait_for_lines(env: HqEnv, path: Path, count: int) -> list[str]:
    return env.wait_until(
        lambda: len(lines(path)) >= count and lines(path), f"{count} lines in {path.name}"
    )


# --- --task-dir -------------------------------------------------------------------------------

HOLD = (
    'echo "$HQ_TASK_DIR $HQ_ERROR_FILENAME" > paths; '
    "while [ ! -e go ]; do sleep 0.05; done; exit $EXIT"
)


@pytest.mark.parametrize(
    ("end", "state"), [("0", "FINISHED"), ("1", "FAILED"), ("cancel", "CANCELED")]
)
def test_task_dir_exists_while_running_and_is_removed_after(
    hq_env: HqEnv, end: str, state: str
) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        ["--task-dir", "--env", f"EXIT={end if end != 'cancel' else 0}", "--", "bash", "-c", HOLD],
    )
    task_dir, error_file = wait_for_file(hq_env, hq_env.work / "paths").split()
    assert Path(task_dir).is_dir()
    assert Path(task_dir).parent == hq_env.root / "worker1"
    assert Path(task_dir).name.startswith("t")
    assert error_file == f"{task_dir}/hq-error"
    if end == "cancel":
        hq_env.command(["job", "cancel", "1"])
    else:
        (hq_env.work / "go").touch()
    hq_env.wait_for_job_state(1, state)
    hq_env.wait_until(lambda: not Path(task_dir).exists(), f"{task_dir} to be removed")


@pytest.mark.parametrize(
    ("write", "error"),
    [
        ('printf "Testing message" > "$HQ_ERROR_FILENAME"', "Testing message"),
        (': > "$HQ_ERROR_FILENAME"', "Task created an error file, but it is empty"),
        ('head -c 3000 /dev/zero | tr "\\0" a > "$HQ_ERROR_FILENAME"', "a" * 2048 + TRUNCATED),
        ('head -c 2048 /dev/zero | tr "\\0" b > "$HQ_ERROR_FILENAME"', "b" * 2048 + TRUNCATED),
        ('head -c 2047 /dev/zero | tr "\\0" c > "$HQ_ERROR_FILENAME"', "c" * 2047),
        ('printf "\\xffbad" > "$HQ_ERROR_FILENAME"', "\ufffdbad"),
    ],
)
def test_error_file_becomes_the_error(hq_env: HqEnv, write: str, error: str) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--task-dir", "--wait", "--", "bash", "-c", f"{write}; exit 1"])
    assert hq_env.job_states() == {1: "FAILED"}
    assert error_of(hq_env, 1) == error


def test_error_file_is_ignored_when_the_task_succeeds(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        [
            "--task-dir",
            "--wait",
            "--",
            "bash",
            "-c",
            'printf "Testing message" > "$HQ_ERROR_FILENAME"',
        ],
    )
    assert hq_env.job_states() == {1: "FINISHED"}
    assert error_of(hq_env, 1) == ""


def test_without_task_dir_there_are_no_task_dir_variables(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        ["--wait", "--", "bash", "-c", 'echo "[${HQ_TASK_DIR-unset}][${HQ_ERROR_FILENAME-unset}]"'],
    )
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == "[unset][unset]\n"


# --- --time-limit / --time-request ------------------------------------------------------------


def test_time_limit_fails_the_task_just_after_the_limit(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--time-limit", "500ms", "--wait", "--", "sleep", "10"])
    assert hq_env.job_states() == {1: "FAILED"}
    assert error_of(hq_env, 1) == "Time limit reached"
    # Killed at its limit, not before: the upper bound only says "long before the 10 s sleep
    # ends", since a busy machine may stop the task late.
    makespan = task_list(hq_env, 1).column("Makespan")[0]
    assert 0.5 <= parse_human(makespan) < 5.0, makespan


def test_time_limit_kills_a_task_that_ignores_sigint(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        [
            "--time-limit",
            "300ms",
            "--wait",
            "--",
            "bash",
            "-c",
            "trap '' INT; echo $$ > pid; sleep 30",
        ],
    )
    assert error_of(hq_env, 1) == "Time limit reached"
    # SIGKILL follows SIGINT after a second: the makespan is over a second (1.3 s on the node's
    # clock), and far below the 30 s of the sleep.
    makespan = task_list(hq_env, 1).column("Makespan")[0]
    assert 1.0 <= parse_human(makespan) < 15.0, makespan
    assert wait_for_pid_exit(int((hq_env.work / "pid").read_text()))


def test_time_request_picks_workers_that_live_long_enough(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, args=["--time-limit", "1h"])
    submit(hq_env, ["--time-request", "2h", "--", "true"])
    submit(hq_env, ["--time-request", "30m", "--wait", "--", "true"])
    # The older job 1 would go first on an equal footing; it waits for a worker that lives long
    # enough while job 2 runs on this one.
    assert hq_env.job_states() == {1: "WAITING", 2: "FINISHED"}
    hq_env.start_worker(cpus=1)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert task_workers(hq_env, 1) == {0: "worker2"}
    assert task_workers(hq_env, 2) == {0: "worker1"}


@pytest.mark.slow
def test_tasks_queued_on_a_worker_that_can_no_longer_start_them_move(hq_env: HqEnv) -> None:
    """A worker whose remaining lifetime drops below the tasks' time request gives back the
    tasks it holds queued, so a worker that joins later starts them at once."""
    hq_env.start_server()
    hq_env.start_worker(cpus=2, args=["--time-limit", "24s"])
    submit(hq_env, ["--array", "1-50", "--time-request", "18s", "--", "sleep", "100"])
    hq_env.wait_for_tasks(1, "running", count=2)
    # From 6 s on, worker1 outlives no further task: it keeps only the two it runs.
    hq_env.wait_until(
        lambda: worker_runtime_info(hq_env, 1) == "assigned tasks: 2; running tasks: 2",
        "worker1 to give back its queued tasks",
    )
    hq_env.start_worker(cpus=2)
    # "At once": long before worker1 ends at 24 s and its tasks would move anyway.
    hq_env.wait_for_tasks(1, "running", count=4, timeout=8.0)
    workers = task_workers(hq_env, 1)
    assert {t: w for t, w in workers.items() if w} == {
        1: "worker1", 2: "worker1", 3: "worker2", 4: "worker2"
    }
    hq_env.command(["job", "cancel", "1"])


# --- --priority -------------------------------------------------------------------------------


def test_priority_orders_tasks_and_older_jobs_win_ties(hq_env: HqEnv) -> None:
    hq_env.start_server()
    order = hq_env.work / "order"
    for priority in ("1", "3", "3", "0", "-5", "7"):
        submit(hq_env, ["--priority", priority, "--", "bash", "-c", f"echo $HQ_JOB_ID >> {order}"])
    hq_env.start_worker(cpus=1)
    hq_env.wait_for_job_state(list(range(1, 7)), "FINISHED")
    assert lines(order) == ["6", "2", "3", "1", "4", "5"]


# --- --max-fails ------------------------------------------------------------------------------


def counts(env: HqEnv, job: int) -> dict[str, int]:
    states = list(env.task_states(job).values())
    return {s: states.count(s) for s in set(states)}


def test_max_fails_zero_aborts_the_running_rest(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(
        hq_env,
        [
            "--array",
            "1-2",
            "--max-fails",
            "0",
            "--",
            "bash",
            "-c",
            "if [ $HQ_TASK_ID = 1 ]; then while [ ! -e pid ]; do sleep 0.05; done; "
            "exit 1; fi; echo $$ > pid; sleep 100",
        ],
    )
    hq_env.wait_for_job_state(1, "FAILED")
    assert hq_env.task_states(1) == {1: "failed", 2: "aborted"}
    info = job_info(hq_env, 1)
    assert sorted(info.get("State").split("\n")[1:]) == ["ABORTED (1)", "FAILED (1)"]
    assert wait_for_pid_exit(int((hq_env.work / "pid").read_text()))


def test_max_fails_one_tolerates_a_single_failure(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(
        hq_env,
        [
            "--array",
            "1-200",
            "--max-fails",
            "1",
            "--wait",
            "--",
            "bash",
            "-c",
            "[ $HQ_TASK_ID != 100 ]",
        ],
    )
    assert counts(hq_env, 1) == {"failed": 1, "finished": 199}
    assert hq_env.job_states() == {1: "FAILED"}


def test_max_fails_three_aborts_after_the_fourth_failure(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    submit(hq_env, ["--array", "1-10", "--max-fails", "3", "--wait", "--", "false"])
    assert counts(hq_env, 1) == {"failed": 4, "aborted": 6}
    assert sorted(t for t, s in hq_env.task_states(1).items() if s == "failed") == [1, 2, 3, 4]


# --- --crash-limit and instance ids -----------------------------------------------------------

RECORD_AND_HOLD = "echo $HQ_INSTANCE_ID >> instances; while [ ! -e go ]; do sleep 0.05; done"


def crash_once(env: HqEnv, runs: int) -> None:
    """Start a worker, let the task start for the `runs`-th time, kill the worker."""
    worker = env.next_worker
    env.start_worker()
    wait_for_lines(env, env.work / "instances", runs)
    env.kill_worker(worker)


@pytest.mark.slow
def test_default_crash_limit_fails_on_the_fifth_loss(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--", "bash", "-c", RECORD_AND_HOLD])
    for run in range(1, 5):
        crash_once(hq_env, run)
        wait_for_state(hq_env, 1, 0, "waiting")
    crash_once(hq_env, 5)
    wait_for_state(hq_env, 1, 0, "failed")
    assert error_of(hq_env, 1) == crash_error(5)
    assert lines(hq_env.work / "instances") == ["0", "1", "2", "3", "4"]


def test_crash_limit_one_fails_on_the_first_loss(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--crash-limit=1", "--", "bash", "-c", RECORD_AND_HOLD])
    crash_once(hq_env, 1)
    wait_for_state(hq_env, 1, 0, "failed")
    assert error_of(hq_env, 1) == crash_error(1)


def test_crash_limit_two_reruns_once_with_a_new_instance(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--crash-limit=2", "--", "bash", "-c", RECORD_AND_HOLD])
    crash_once(hq_env, 1)
    wait_for_state(hq_env, 1, 0, "waiting")
    hq_env.start_worker()
    wait_for_lines(hq_env, hq_env.work / "instances", 2)
    (hq_env.work / "go").touch()
    wait_for_state(hq_env, 1, 0, "finished")
    assert lines(hq_env.work / "instances") == ["0", "1"]


@pytest.mark.slow
def test_unlimited_crash_limit_survives_more_losses_than_the_default(hq_env: HqEnv) -> None:
    hq_env.start_server()
    submit(hq_env, ["--crash-limit=unlimited", "--", "bash", "-c", RECORD_AND_HOLD])
    for run in range(1, 7):
        crash_once(hq_env, run)
        wait_for_state(hq_env, 1, 0, "waiting")
    hq_env.start_worker()
    wait_for_lines(hq_env, hq_env.work / "instances", 7)
    (hq_env.work / "go").touch()
    wait_for_state(hq_env, 1, 0, "finished")
    assert lines(hq_env.work / "instances") == [str(i) for i in range(7)]


def test_worker_stop_fails_never_restart_but_requeues_crash_limit_one(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--crash-limit=never-restart", "--", "sleep", "100"])
    submit(hq_env, ["--crash-limit=1", "--", "sleep", "100"])
    hq_env.wait_for_job_state([1, 2], "RUNNING")
    hq_env.command(["worker", "stop", "1"])
    hq_env.wait_for_job_state(1, "FAILED")
    hq_env.wait_for_job_state(2, "WAITING")
    assert error_of(hq_env, 1) == NEVER_RESTART
    # Back to WAITING, not a crash: it runs again on the next worker.
    hq_env.start_worker()
    wait_for_state(hq_env, 2, 0, "running")
    hq_env.command(["job", "cancel", "2"])


def test_kill_fails_both_never_restart_and_crash_limit_one(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--crash-limit=never-restart", "--", "sleep", "100"])
    submit(hq_env, ["--crash-limit=1", "--", "sleep", "100"])
    hq_env.wait_for_job_state([1, 2], "RUNNING")
    hq_env.kill_worker(1)
    hq_env.wait_for_job_state([1, 2], "FAILED")
    assert error_of(hq_env, 1) == NEVER_RESTART
    assert error_of(hq_env, 2) == crash_error(1)


def test_a_crashing_task_never_writes_its_file(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--crash-limit=1", "--", "bash", "-c", "echo $$ > pid; sleep 2; touch never"])
    pid = int(wait_for_file(hq_env, hq_env.work / "pid"))
    hq_env.kill_worker(1)
    assert wait_for_pid_exit(pid), "the task outlived its worker"
    hq_env.wait_for_job_state(1, "FAILED")
    assert not (hq_env.work / "never").exists()


def test_instance_id_grows_after_worker_stop(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--", "bash", "-c", RECORD_AND_HOLD])
    wait_for_lines(hq_env, hq_env.work / "instances", 1)
    hq_env.command(["worker", "stop", "1"])
    wait_for_state(hq_env, 1, 0, "waiting")
    hq_env.start_worker()
    wait_for_lines(hq_env, hq_env.work / "instances", 2)
    (hq_env.work / "go").touch()
    wait_for_state(hq_env, 1, 0, "finished")
    assert lines(hq_env.work / "instances") == ["0", "1"]
    assert task_workers(hq_env, 1) == {0: "worker2"}


# --- --retries (beyond HQ) --------------------------------------------------------------------

RECORD_AND_FAIL = "echo $HQ_INSTANCE_ID >> instances; exit 3"


def test_retries_rerun_a_failing_task_then_fail_it(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--retries", "2", "--wait", "--", "bash", "-c", RECORD_AND_FAIL])
    assert hq_env.job_states() == {1: "FAILED"}
    assert error_of(hq_env, 1) == "Program terminated with exit code 3."
    runs = lines(hq_env.work / "instances")
    assert len(runs) == 3
    assert [int(i) for i in runs] == sorted({int(i) for i in runs})  # each run a new instance


def test_retries_stop_once_the_task_succeeds(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        [
            "--retries",
            "5",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo $HQ_INSTANCE_ID >> instances; [ $(wc -l < instances) -ge 3 ]",
        ],
    )
    assert hq_env.job_states() == {1: "FINISHED"}
    runs = lines(hq_env.work / "instances")
    assert len(runs) == 3


def test_task_info_shows_the_instance_of_a_retried_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        [
            "--retries",
            "1",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo $HQ_INSTANCE_ID >> instances; [ $(wc -l < instances) -ge 2 ]",
        ],
    )
    runs = lines(hq_env.work / "instances")
    assert len(runs) == 2
    table = hq_env.command(["task", "info", "1", "0"], as_table=True)
    assert table.get("State") == "FINISHED"
    # The `Instance` row is ours; HQ's JSON task objects stay as they are.
    assert int(table.get("Instance")) == int(runs[-1]) > int(runs[0])
    assert "instance" not in hq_env.json(["task", "info", "1", "0"])[0]


def test_without_retries_a_failure_is_final(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "bash", "-c", RECORD_AND_FAIL])
    assert hq_env.job_states() == {1: "FAILED"}
    assert lines(hq_env.work / "instances") == ["0"]


def test_retries_do_not_rerun_a_canceled_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    submit(
        hq_env,
        [
            "--retries",
            "3",
            "--",
            "bash",
            "-c",
            "echo $HQ_INSTANCE_ID >> instances; echo $$ > pid; sleep 100",
        ],
    )
    pid = int(wait_for_file(hq_env, hq_env.work / "pid"))
    hq_env.command(["job", "cancel", "1"])
    assert wait_for_pid_exit(pid)
    # The single CPU is free again only after the node has handled the killed task; a re-run
    # would have been queued before this job.
    submit(hq_env, ["--wait", "--", "true"])
    assert hq_env.task_states(1) == {0: "canceled"}
    assert lines(hq_env.work / "instances") == ["0"]


def test_retries_do_not_rerun_a_time_limited_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        [
            "--retries",
            "2",
            "--time-limit",
            "300ms",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo $HQ_INSTANCE_ID >> instances; sleep 10",
        ],
    )
    assert hq_env.job_states() == {1: "FAILED"}
    assert error_of(hq_env, 1) == "Time limit reached"
    assert lines(hq_env.work / "instances") == ["0"]


def test_negative_retries_are_rejected(hq_env: HqEnv) -> None:
    hq_env.command(
        ["submit", "--retries", "-1", "--", "true"], expect_fail="--retries must be 0 or more"
    )
