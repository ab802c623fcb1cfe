"""Output streaming: `hq submit --stream DIR` and `hq output-log DIR ...`.

Spec: jobs.md §9, cli.md §10, output.md §3.13 and §4.10, conformance.md "Streaming".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import HqEnv, Table
from job_helpers import job_info, server_uid, submit, task_json, vertical

HELLO = ["bash", "-c", "echo Hello from $HQ_TASK_ID"]


def output_log(env: HqEnv, directory: str, *args: str, **kwargs: object) -> str:
    return env.command(["output-log", directory, *args], **kwargs)  # type: ignore[arg-type]


def summary(env: HqEnv, directory: str = "log") -> Table:
    return vertical(env.command(["output-log", directory, "summary"], as_table=True))


def stream_files(env: HqEnv, directory: str = "log") -> list[Path]:
    return sorted((env.work / directory).glob("*.hqs"))


def wait_for_show(env: HqEnv, expected: str, directory: str = "log") -> str:
    """`output-log show` once it contains ``expected`` (a running task's output)."""

    def shown() -> str | None:
        result = env.run(["output-log", directory, "show"])
        text = result.stdout.decode()
        return text if result.returncode == 0 and expected in text else None

    return env.wait_until(shown, f"{expected!r} in `output-log show`")


# --- a finished array job ------------------------------------------------------------------


def test_twenty_tasks_summary_jobs_show_cat_export(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(hq_env, ["--array", "1-20", "--stream", "log", "--wait", "--", *HELLO])
    assert hq_env.job_states() == {1: "FINISHED"}
    assert not (hq_env.work / "job-1").exists()  # no per-task files
    info = job_info(hq_env, 1)
    assert (info.get("Stdout"), info.get("Stderr")) == ("<Stream>", "<Stream>")

    table = summary(hq_env)
    assert [row[0] for row in table.rows] == [
        "Path",
        "Files",
        "Jobs",
        "Tasks",
        "Opened streams",
        "Stdout/stderr size",
        "Superseded streams",
        "Superseded stdout/stderr size",
    ]
    assert table.get("Path") == "log"
    assert table.get("Files") == "1"
    assert table.get("Jobs") == "1"
    assert table.get("Tasks") == "20"
    assert table.get("Opened streams") == "0"
    assert table.get("Stdout/stderr size") == "271 B / 0 B"
    assert table.get("Superseded streams") == "0"
    assert table.get("Superseded stdout/stderr size") == "0 B / 0 B"
    assert len(stream_files(hq_env)) == 1

    assert output_log(hq_env, "log", "jobs") == "1\n"

    shown = output_log(hq_env, "log", "show").splitlines()
    assert sorted(shown) == sorted(f"1.{i:02}:0> Hello from {i}" for i in range(1, 21))
    assert "1.01:0> Hello from 1" in shown

    cat = output_log(hq_env, "log", "cat", "1", "stdout")
    assert cat == "".join(f"Hello from {i}\n" for i in range(1, 21))
    assert output_log(hq_env, "log", "cat", "1", "stderr") == ""
    ordered = output_log(hq_env, "log", "cat", "1", "stdout", "--task=3-4,2")
    assert ordered == "Hello from 3\nHello from 4\nHello from 2\n"

    exported = json.loads(output_log(hq_env, "log", "export", "1", "--task", "5,1"))
    assert exported == [
        {"finished": True, "id": 5, "stdout": "Hello from 5\n"},
        {"finished": True, "id": 1, "stdout": "Hello from 1\n"},
    ]
    everything = json.loads(output_log(hq_env, "log", "export", "1"))
    assert [item["id"] for item in everything] == list(range(1, 21))


def test_summary_json_and_export_ignores_the_output_mode(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--array", "1-20", "--stream", "log", "--wait", "--", *HELLO])
    data = hq_env.json(["output-log", "log", "summary"])
    assert data == {
        "filename": "log",
        "summary": {
            "n_files": 1,
            "n_jobs": 1,
            "n_tasks": 20,
            "n_streams": 20,
            "n_opened": 0,
            "stdout_size": 271,
            "stderr_size": 0,
            "n_superseded": 0,
            "superseded_stdout_size": 0,
            "superseded_stderr_size": 0,
        },
    }
    quiet = hq_env.command(["--output-mode=quiet", "output-log", "log", "export", "1", "--task=2"])
    assert json.loads(quiet) == [{"finished": True, "id": 2, "stdout": "Hello from 2\n"}]


def test_show_channels(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    script = "echo Ok; sleep 0.2; echo Error >&2"
    submit(hq_env, ["--stream", "log", "--wait", "--", "bash", "-c", script])
    assert output_log(hq_env, "log", "show") == "1.0:0> Ok\n1.0:1> Error\n"
    assert output_log(hq_env, "log", "show", "--channel", "stderr") == "1.0:1> Error\n"
    assert output_log(hq_env, "log", "show", "--channel", "stdout") == "1.0:0> Ok\n"
    assert output_log(hq_env, "log", "show", "--job", "2") == ""
    assert summary(hq_env).get("Stdout/stderr size") == "3 B / 6 B"


def test_show_appends_a_newline_only_where_missing(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--stream", "log", "--wait", "--", "printf", "no newline"])
    assert output_log(hq_env, "log", "show") == "1.0:0> no newline\n"
    assert output_log(hq_env, "log", "cat", "1", "stdout") == "no newline"


def test_partial_streaming_with_a_stdout_file(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    script = "echo to-file; echo to-stream >&2"
    args = ["--stream", "log", "--stdout", "out.txt", "--wait", "--", "bash", "-c", script]
    submit(hq_env, args)
    assert hq_env.job_states() == {1: "FINISHED"}
    assert (hq_env.work / "out.txt").read_text() == "to-file\n"
    info = job_info(hq_env, 1)
    assert info.get("Stdout") == f"{hq_env.work}/out.txt"
    assert info.get("Stderr") == "<Stream>"
    assert output_log(hq_env, "log", "show") == "1.0:1> to-stream\n"
    assert summary(hq_env).get("Stdout/stderr size") == "0 B / 10 B"


def test_job_id_placeholder_in_the_stream_path(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--stream", "log-%{JOB_ID}", "--wait", "--", "echo", "one"])
    submit(hq_env, ["--stream", "log-%{JOB_ID}", "--wait", "--", "echo", "two"])
    assert output_log(hq_env, "log-1", "show") == "1.0:0> one\n"
    assert output_log(hq_env, "log-2", "show") == "2.0:0> two\n"
    assert not (hq_env.work / "log-%{JOB_ID}").exists()


# --- running, killed and failed tasks --------------------------------------------------------


def test_output_before_a_cancel_is_kept(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--stream", "log", "--", "bash", "-c", "echo Start; sleep 100"])
    assert wait_for_show(hq_env, "1.0:0> Start") == "1.0:0> Start\n"
    assert hq_env.task_states(1) == {0: "running"}
    output_log(hq_env, "log", "cat", "1", "stdout", expect_fail="Stream for task 0 is not finished")
    unfinished = output_log(hq_env, "log", "cat", "1", "stdout", "--allow-unfinished")
    assert unfinished == "Start\n"
    assert summary(hq_env).get("Opened streams") == "1"
    assert json.loads(output_log(hq_env, "log", "export", "1")) == [
        {"finished": False, "id": 0, "stdout": "Start\n"}
    ]
    hq_env.command(["job", "cancel", "1"])
    hq_env.wait_for_job_state(1, "CANCELED")
    hq_env.wait_until(
        lambda: summary(hq_env).get("Opened streams") == "0", "the stream to be closed"
    )
    assert output_log(hq_env, "log", "cat", "1", "stdout") == "Start\n"


def test_output_before_a_time_limit_kill_is_kept(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    script = "echo Start; echo Warn >&2; sleep 100"
    submit(hq_env, ["--stream", "log", "--time-limit", "1s", "--wait", "--", "bash", "-c", script])
    assert hq_env.job_states() == {1: "FAILED"}
    assert task_json(hq_env, 1)[0]["error"] == "Time limit reached"
    assert output_log(hq_env, "log", "cat", "1", "stdout") == "Start\n"
    assert output_log(hq_env, "log", "cat", "1", "stderr") == "Warn\n"
    assert summary(hq_env).get("Opened streams") == "0"


def test_failed_task_output_is_complete(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    script = "head -c 100000 /dev/zero | tr '\\0' x; echo; exit 1"
    submit(hq_env, ["--stream", "log", "--wait", "--", "bash", "-c", script])
    assert hq_env.job_states() == {1: "FAILED"}
    assert output_log(hq_env, "log", "cat", "1", "stdout") == "x" * 100000 + "\n"
    assert summary(hq_env).get("Stdout/stderr size") == "97.66 KiB / 0 B"


def test_unwritable_stream_fails_the_task_with_a_streaming_error(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    (hq_env.work / "log").write_text("a file where the directory should be")
    submit(hq_env, ["--stream", "log", "--wait", "--", "echo", "lost"])
    assert hq_env.job_states() == {1: "FAILED"}
    error = task_json(hq_env, 1)[0]["error"]
    assert error.startswith("Streaming: "), error
    assert str(hq_env.work / "log") in error


def test_restarted_task_supersedes_its_first_stream(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    script = (
        'echo Start; if [ "$HQ_INSTANCE_ID" = 0 ]; then sleep 100; fi; '
        "sleep 0.3; echo End $HQ_INSTANCE_ID"
    )
    submit(hq_env, ["--stream", "log", "--", "bash", "-c", script])
    wait_for_show(hq_env, "1.0:0> Start")
    hq_env.kill_worker(1)
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")
    hq_env.start_worker()
    hq_env.command(["job", "wait", "1"])
    assert hq_env.job_states() == {1: "FINISHED"}
    table = summary(hq_env)
    assert table.get("Files") == "2"
    assert table.get("Tasks") == "1"
    assert table.get("Opened streams") == "0"
    assert table.get("Superseded streams") == "1"
    assert table.get("Superseded stdout/stderr size") == "6 B / 0 B"
    assert table.get("Stdout/stderr size") == "12 B / 0 B"
    assert output_log(hq_env, "log", "show") == "1.0:0> Start\n1.0:0> End 1\n"
    assert output_log(hq_env, "log", "cat", "1", "stdout") == "Start\nEnd 1\n"


def test_two_workers_write_their_own_files_into_one_directory(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    hq_env.start_worker(cpus=1)
    release = hq_env.root / "release"
    # Each task holds its worker's only CPU until both run, so both workers write.
    script = f"echo task $HQ_TASK_ID; while [ ! -e {release} ]; do sleep 0.05; done"
    submit(hq_env, ["--array", "1-2", "--stream", "log", "--", "bash", "-c", script])
    hq_env.wait_for_tasks(1, "running", count=2)
    release.touch()
    hq_env.command(["job", "wait", "1"])
    assert {t.get("worker") for t in task_json(hq_env, 1).values()} == {1, 2}
    files = stream_files(hq_env)
    assert len(files) == 2 and all(len(f.stem) == 12 and f.stem.isalnum() for f in files)
    assert summary(hq_env).get("Files") == "2"
    assert output_log(hq_env, "log", "cat", "1", "stdout") == "task 1\ntask 2\n"


# --- errors --------------------------------------------------------------------------------


def test_no_log_files(hq_env: HqEnv) -> None:
    (hq_env.work / "empty").mkdir()
    output_log(hq_env, "empty", "summary", expect_fail="No log files found")
    output_log(hq_env, "missing", "jobs", expect_fail="No log files found")


def test_unknown_job_and_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--array", "1-2", "--stream", "log", "--wait", "--", *HELLO])
    output_log(hq_env, "log", "cat", "5", "stdout", expect_fail="Job 5 not found")
    output_log(hq_env, "log", "export", "5", expect_fail="Job 5 not found")
    output_log(hq_env, "log", "cat", "1", "stdout", "--task=1,7", expect_fail="Task 7 not found")
    output_log(hq_env, "log", "export", "1", "--task=9", expect_fail="Task 9 not found")
    result = hq_env.run(["output-log", "log", "cat", "1", "stdout", "--task=1,7"])
    assert result.returncode == 1 and result.stdout == b""  # nothing printed before the error


def test_streams_of_several_server_instances(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    first = server_uid(hq_env)
    submit(hq_env, ["--stream", "log", "--wait", "--", "echo", "first"])
    hq_env.command(["server", "stop"])
    hq_env.wait_until(lambda: hq_env.server.poll() is not None, "the first server to stop")
    hq_env.start_server()
    hq_env.start_worker()
    second = server_uid(hq_env)
    assert first != second
    submit(hq_env, ["--stream", "log", "--wait", "--", "echo", "second"])
    expected = (
        "Found streams from multiple server instances:\n"
        + "".join(f"{uid}\n" for uid in sorted([first, second]))
        + "Use --server-uid=... to specify server uid"
    )
    output_log(hq_env, "log", "summary", expect_fail=expected)
    show = ["output-log", "log", "--server-uid", first, "show"]
    assert hq_env.command(show) == "1.0:0> first\n"
    show_second = ["output-log", "log", f"--server-uid={second}", "show"]
    assert hq_env.command(show_second) == "1.0:0> second\n"
    output_log(hq_env, "log", "--server-uid", "nosuch", "jobs", expect_fail="No log files found")


def test_damaged_files_are_reported_and_the_rest_is_read(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--array", "1-2", "--stream", "log", "--wait", "--", *HELLO])
    [path] = stream_files(hq_env)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\xc5\xa5\x00\x00" + b"\xff" * 10)  # a record torn after 14 bytes
    (hq_env.work / "log" / "garbage.hqs").write_bytes(b"\xff" * 100)
    result = hq_env.run(["output-log", "log", "cat", "1", "stdout"])
    assert result.returncode == 0
    assert result.stdout.decode() == "Hello from 1\nHello from 2\n"
    warnings = result.stderr.decode()
    assert "garbage.hqs: corrupt data at byte 0: not a stream file (bad magic)" in warnings
    assert f"Stream file log/{path.name}: truncated record at byte {size} (14 bytes ignored)" in (
        warnings
    )
    assert summary(hq_env).get("Files") == "1"


def test_stream_file_header_names_the_worker(hq_env: HqEnv) -> None:
    from hqshm.cli.streamlog import read_header

    hq_env.start_server()
    hq_env.start_worker()
    hq_env.start_worker()
    uid = server_uid(hq_env)
    submit(hq_env, ["--stream", "log", "--wait", "--", "true"])
    [path] = stream_files(hq_env)
    [worker] = {t["worker"] for t in task_json(hq_env, 1).values()}
    header = read_header(str(path))
    assert (header.server_uid, header.worker_id) == (uid, worker)


# --- many tasks ----------------------------------------------------------------------------

# Enough tasks for several flushes of every executor's buffers and the writer's rotation;
# bench/test_stream_bench.py reads a stream file of 100,000 tasks (a full CI run has a budget).
MANY = 30_000


@pytest.mark.slow
def test_thirty_thousand_streamed_tasks_lose_no_line(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    # printenv: a known line per task (its id) without starting a shell.
    args = ["--array", f"1-{MANY}", "--stream", "log", "--", "printenv", "HQ_TASK_ID"]
    submit(hq_env, args)
    # A guard against a hang, not a speed (bench/ measures that): on a busy 2-CPU machine
    # these tasks take minutes.
    hq_env.wait_for_job_state(1, "FINISHED", timeout=900)
    assert len(stream_files(hq_env)) <= 4
    table = summary(hq_env)
    assert table.get("Tasks") == str(MANY)
    assert table.get("Opened streams") == "0"
    cat = hq_env.command(["output-log", "log", "cat", "1", "stdout"], ignore_stderr=True)
    assert cat == "".join(f"{i}\n" for i in range(1, MANY + 1))
