"""Open jobs: `hq job open`, submits into them with `--job`, `hq job close`, and waiting.

Spec: jobs.md §2.2, §8.5, §10; cli.md §5.1, §6; output.md §2, §3.5, §3.7, §4.3, §5;
conformance.md "Directives, job files, open jobs" (open-job items).
"""

from __future__ import annotations

import json

from harness import HqEnv
from job_helpers import job_info, submit
from manage_helpers import (
    background,
    finish,
    gated,
    job_list_rows,
    messages,
    open_gate,
    open_job,
    still_running,
)


def test_job_open_prints_the_id_in_every_mode(hq_env: HqEnv) -> None:
    hq_env.start_server()
    cli = hq_env.run(["job", "open"])
    assert cli.returncode == 0
    assert cli.stdout.decode() == "Job 1 is open.\n"
    as_json = hq_env.run(["--output-mode=json", "job", "open"])
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == {"id": 2}
    quiet = hq_env.run(["--output-mode=quiet", "job", "open"])
    assert quiet.returncode == 0
    assert quiet.stdout.decode() == "3\n"


def test_open_job_is_listed_with_a_star_and_a_footer(hq_env: HqEnv) -> None:
    hq_env.start_server()
    assert open_job(hq_env) == 1
    out = hq_env.command(["job", "list"])
    assert out.rstrip("\n").endswith("* = Open jobs")
    assert job_list_rows(hq_env) == [["*1", "job", "OPENED", "0"]]
    info = job_info(hq_env, 1)
    assert info.get("Session") == "open"
    assert info.get("Name") == "job"
    assert info.get("Tasks") == "0"
    # Quiet mode shows no star; JSON flags it.
    assert hq_env.command(["--output-mode=quiet", "job", "list"]) == "1 OPENED\n"
    [listed] = hq_env.json(["job", "list"])
    assert listed["is_open"] is True
    assert listed["task_count"] == 0
    submit(hq_env, ["--", "true"])
    assert job_list_rows(hq_env, "--filter", "opened") == [["*1", "job", "OPENED", "0"]]
    assert job_list_rows(hq_env, "--filter", "waiting") == [["2", "true", "WAITING", "1"]]

    hq_env.command(["job", "close", "1"])
    assert job_info(hq_env, 1).get("Session") == "closed"
    # A closed job with no tasks is FINISHED, no longer listed by default, and has no star.
    out = hq_env.command(["job", "list", "--all"])
    assert "* = Open jobs" not in out
    assert job_list_rows(hq_env, "--all") == [
        ["1", "job", "FINISHED", "0"],
        ["2", "true", "WAITING", "1"],
    ]
    assert job_list_rows(hq_env) == [["2", "true", "WAITING", "1"]]


def test_open_job_name_and_max_fails_are_kept(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    open_job(hq_env, "--name", "batch", "--max-fails", "0")
    assert job_list_rows(hq_env) == [["*1", "batch", "OPENED", "0"]]
    [detail] = hq_env.json(["job", "info", "1"])
    assert detail["max_fails"] == 0
    assert detail["info"]["name"] == "batch"
    # The job's --max-fails applies to tasks added later: one failure aborts the sleeper.
    submit(hq_env, ["--job", "1", "--", "sleep", "100"])
    hq_env.wait_for_tasks(1, "running")
    submit(hq_env, ["--job", "1", "--", "bash", "-c", "exit 1"])
    hq_env.wait_until(
        lambda: hq_env.task_states(1) == {0: "aborted", 1: "failed"}, "the sleeper to be aborted"
    )
    # A failed task makes the job FAILED even while it is open (jobs.md §2.2, rule 3 before 6).
    assert job_list_rows(hq_env) == [["*1", "batch", "FAILED", "2"]]


def test_array_submits_into_an_open_job_keep_their_ids(hq_env: HqEnv) -> None:
    hq_env.start_server()
    open_job(hq_env)
    assert submit(hq_env, ["--job", "1", "--array", "10-20", "--", "true"]) == 1
    assert submit(hq_env, ["--job", "1", "--array", "1,3,5", "--", "true"]) == 1
    assert submit(hq_env, ["--job", "1", "--array", "2,4,6", "--", "true"]) == 1
    assert job_info(hq_env, 1).get("Tasks") == "17; Ids: 1-6,10-20"
    assert hq_env.command(["job", "task-ids", "1"]) == "1-6,10-20\n"
    assert job_list_rows(hq_env) == [["*1", "job", "WAITING", "17"]]


def test_plain_submits_take_the_next_ids_and_the_job_stays_opened(hq_env: HqEnv) -> None:
    hq_env.start_server()
    open_job(hq_env)
    for _ in range(4):
        submit(hq_env, ["--job", "1", "--", "bash", "-c", "echo $HQ_TASK_ID"])
    info = job_info(hq_env, 1)
    assert info.get("Tasks") == "4; Ids: 0-3"
    assert info.get("State").splitlines()[1:] == ["WAITING (4)"]
    assert job_list_rows(hq_env) == [["*1", "job", "WAITING", "4"]]

    hq_env.start_worker(cpus=2)
    hq_env.wait_for_tasks(1, "finished", count=4)
    assert job_info(hq_env, 1).get("State").splitlines()[1:] == ["FINISHED (4)"]
    assert job_list_rows(hq_env) == [["*1", "job", "OPENED", "4"]]
    for task_id in range(4):
        assert (hq_env.work / "job-1" / f"{task_id}.stdout").read_text() == f"{task_id}\n"

    hq_env.command(["job", "close", "1"])
    assert job_list_rows(hq_env, "--all") == [["1", "job", "FINISHED", "4"]]


def test_close_messages(hq_env: HqEnv) -> None:
    hq_env.start_server()
    open_job(hq_env)
    submit(hq_env, ["--", "true"])
    open_job(hq_env)
    assert messages(hq_env.command(["job", "close", "1"])) == ["Job 1 closed"]
    assert messages(hq_env.command(["job", "close", "1"])) == [
        "Closing job 1 failed; job is already closed"
    ]
    assert messages(hq_env.command(["job", "close", "9"])) == [
        "Closing job 9 failed; job not found"
    ]
    # A job that never was open is "already closed" too.
    assert messages(hq_env.command(["job", "close", "2"])) == [
        "Closing job 2 failed; job is already closed"
    ]
    # `all` means every open job, and nothing else.
    assert messages(hq_env.command(["job", "close", "all"])) == ["Job 3 closed"]
    assert messages(hq_env.command(["job", "close", "all"])) == ["There is nothing to close"]
    assert hq_env.command(["--output-mode=json", "job", "close", "all"], ignore_stderr=True) == (
        "{}\n"
    )


def test_close_last_and_ranges(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for _ in range(3):
        open_job(hq_env)
    assert messages(hq_env.command(["job", "close", "last"])) == ["Job 3 closed"]
    assert messages(hq_env.command(["job", "close", "1-4"])) == [
        "Job 1 closed",
        "Job 2 closed",
        "Closing job 3 failed; job is already closed",
        "Closing job 4 failed; job not found",
    ]
    assert hq_env.job_states() == {1: "FINISHED", 2: "FINISHED", 3: "FINISHED"}


def test_job_wait_blocks_until_the_job_is_closed(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    open_job(hq_env)
    submit(hq_env, ["--job", "1", "--", "true"])
    with background(hq_env, ["job", "wait", "1"]) as waiter:
        hq_env.wait_for_tasks(1, "finished")
        # The task is done, but the job is still open: wait must not return. A further
        # round trip to the server gives a wrongly released waiter time to exit.
        submit(hq_env, ["--job", "1", "--", "true"])
        hq_env.wait_for_tasks(1, "finished", count=2)
        assert still_running(waiter), finish(waiter)
        hq_env.command(["job", "close", "1"])
        code, out = finish(waiter)
    assert code == 0
    assert out == ""
    assert hq_env.job_states() == {1: "FINISHED"}


def test_job_wait_without_close_returns_once_the_tasks_are_done(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    open_job(hq_env)
    submit(hq_env, ["--job", "1", "--", *gated("go")])
    hq_env.wait_for_tasks(1, "running")
    with background(hq_env, ["job", "wait", "1", "--without-close"]) as waiter:
        assert hq_env.task_states(1) == {0: "running"}
        assert still_running(waiter), finish(waiter)
        open_gate(hq_env, "go")
        code, out = finish(waiter)
    assert code == 0
    assert out == ""
    assert hq_env.task_states(1) == {0: "finished"}
    assert job_list_rows(hq_env) == [["*1", "job", "OPENED", "1"]]


def test_job_wait_without_close_on_an_empty_open_job_returns_at_once(hq_env: HqEnv) -> None:
    hq_env.start_server()
    open_job(hq_env)
    result = hq_env.run(["job", "wait", "1", "--without-close"], timeout=20)
    assert result.returncode == 0
    assert result.stdout == b""
    with background(hq_env, ["job", "wait", "1"]) as waiter:
        hq_env.command(["job", "list"])
        assert still_running(waiter), finish(waiter)
        hq_env.command(["job", "close", "1"])
        assert finish(waiter) == (0, "")


def test_submit_into_unknown_or_closed_job_is_refused(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.command(["submit", "--job", "123", "--", "true"], expect_fail="Job 123 not found.")
    open_job(hq_env)
    hq_env.command(["job", "close", "1"])
    hq_env.command(["submit", "--job", "1", "--", "true"], expect_fail="Job 1 is not opened.")
    submit(hq_env, ["--", "true"])
    hq_env.command(["submit", "--job", "2", "--", "true"], expect_fail="Job 2 is not opened.")
    # Nothing was added anywhere, and no job was created by the failed submits.
    assert hq_env.job_states() == {1: "FINISHED", 2: "WAITING"}
    assert hq_env.command(["job", "task-ids", "1-2"]) == "1: \n2: 0\n"


def test_explicit_id_collision_is_refused(hq_env: HqEnv) -> None:
    hq_env.start_server()
    open_job(hq_env)
    open_job(hq_env)
    submit(hq_env, ["--job", "2", "--", "true"])
    submit(hq_env, ["--job", "2", "--array", "5-7", "--", "true"])
    hq_env.command(
        ["submit", "--job", "2", "--array", "0", "--", "true"],
        expect_fail="Task 0 already exists in job 2.",
    )
    hq_env.command(
        ["submit", "--job", "2", "--array", "1-6", "--", "true"],
        expect_fail="already exists in job 2.",
    )
    # A refused submit adds none of its tasks, not even the free ones (1-4).
    assert job_info(hq_env, 2).get("Tasks") == "4; Ids: 0,5-7"
    # The next plain submit continues after the largest id.
    submit(hq_env, ["--job", "2", "--", "true"])
    assert hq_env.command(["job", "task-ids", "2"]) == "0,5-8\n"


def test_name_and_max_fails_are_not_allowed_with_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    open_job(hq_env)
    hq_env.command(
        ["submit", "--job", "1", "--name", "x", "--", "true"],
        expect_fail="Parameter --name is not allowed when submitting to an open job.",
    )
    hq_env.command(
        ["submit", "--job", "1", "--max-fails", "2", "--", "true"],
        expect_fail="Parameter --max-fails is not allowed when submitting to an open job.",
    )
    assert job_info(hq_env, 1).get("Tasks") == "0"


def test_each_line_and_from_json_take_consecutive_ids(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    open_job(hq_env)
    echo = ["bash", "-c", 'echo "$HQ_TASK_ID:$HQ_ENTRY"']
    submit(hq_env, ["--job", "1", "--array", "0-2", "--", *echo])
    (hq_env.work / "lines.txt").write_text("a\nb\nc\n")
    submit(hq_env, ["--job", "1", "--each-line", "lines.txt", "--", *echo])
    (hq_env.work / "items.json").write_text('[{"x": 1}, 2.5]')
    submit(hq_env, ["--job", "1", "--from-json", "items.json", "--", *echo])
    # One id per entry, right after the largest existing id (conformance.md: HQ's own
    # off-by-offset count is a known discrepancy that hqshm does not copy).
    assert job_info(hq_env, 1).get("Tasks") == "8; Ids: 0-7"
    hq_env.wait_for_tasks(1, "finished", count=8)
    outputs = [(hq_env.work / "job-1" / f"{i}.stdout").read_text() for i in range(3, 8)]
    assert outputs == ["3:a\n", "4:b\n", "5:c\n", '6:{"x":1}\n', "7:2.5\n"]


def test_each_line_into_an_empty_open_job_starts_at_zero(hq_env: HqEnv) -> None:
    hq_env.start_server()
    open_job(hq_env)
    (hq_env.work / "lines.txt").write_text("a\nb\n")
    submit(hq_env, ["--job", "1", "--each-line", "lines.txt", "--", "true"])
    assert job_info(hq_env, 1).get("Tasks") == "2; Ids: 0-1"
