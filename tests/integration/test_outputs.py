"""Where task output goes: default files, `none`, custom paths, placeholders, cleanup, warnings.

Spec: cli.md §5.2-§5.3, jobs.md §4.2-§4.3 and §5, output.md §3.7 and §3.9, conformance.md
"Output files" and "Placeholders".
"""

from __future__ import annotations

import pytest
from harness import HqEnv
from job_helpers import job_info, server_uid, submit, task_info, task_json

# --- files ----------------------------------------------------------------------------------


def test_default_files_hold_stdout_and_stderr(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "bash", "-c", "echo out; echo err >&2"])
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == "out\n"
    assert (hq_env.work / "job-1" / "0.stderr").read_text() == "err\n"


def test_none_writes_no_files(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    flags = ["--stdout", "none", "--stderr", "none", "--wait"]
    submit(hq_env, [*flags, "--", "bash", "-c", "echo out; echo err >&2"])
    assert hq_env.job_states() == {1: "FINISHED"}
    assert not (hq_env.work / "job-1").exists()
    [info] = task_info(hq_env, 1, "0")
    assert info.get("Stdout") == "<None>"
    assert info.get("Stderr") == "<None>"
    assert job_info(hq_env, 1).get("Stdout") == "<None>"
    task = task_json(hq_env, 1)[0]
    assert task["stdout"] is None
    assert task["stderr"] is None


def test_unrunnable_program_leaves_empty_output_files(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--wait", "--", "/non-existent-program"])
    assert hq_env.job_states() == {1: "FAILED"}
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == ""
    assert (hq_env.work / "job-1" / "0.stderr").read_text() == ""


def test_placeholders_in_output_paths(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    uid = server_uid(hq_env)
    stdout = "%{SUBMIT_DIR}/out/%{JOB_ID}-%{TASK_ID}-%{INSTANCE_ID}.out"
    stderr = "%{CWD}/err/%{SERVER_UID}-%{TASK_ID}.err"
    submit(
        hq_env,
        [
            "--array",
            "1-2",
            "--cwd",
            "run",
            "--stdout",
            stdout,
            "--stderr",
            stderr,
            "--",
            "bash",
            "-c",
            "echo o$HQ_TASK_ID; echo e$HQ_TASK_ID >&2",
        ],
    )
    info = job_info(hq_env, 1)
    # Submit-time resolution: JOB_ID, SUBMIT_DIR, SERVER_UID and (cwd has no placeholder) CWD.
    assert info.get("Stdout") == f"{hq_env.work}/out/1-%{{TASK_ID}}-%{{INSTANCE_ID}}.out"
    assert info.get("Stderr") == f"{hq_env.work}/run/err/{uid}-%{{TASK_ID}}.err"
    hq_env.command(["job", "wait", "1"])
    assert hq_env.job_states() == {1: "FINISHED"}
    for task_id in (1, 2):
        assert (hq_env.work / "out" / f"1-{task_id}-0.out").read_text() == f"o{task_id}\n"
        err = hq_env.work / "run" / "err" / f"{uid}-{task_id}.err"
        assert err.read_text() == f"e{task_id}\n"
    [task] = task_info(hq_env, 1, "2")
    assert task.get("Stdout") == f"{hq_env.work}/out/1-2-0.out"
    assert task.get("Stderr") == f"{hq_env.work}/run/err/{uid}-2.err"


def test_server_uid_and_job_id_in_stdout_before_start(hq_env: HqEnv) -> None:
    hq_env.start_server()
    uid = server_uid(hq_env)
    submit(hq_env, ["--stdout", "out-%{SERVER_UID}-%{JOB_ID}", "--", "true"])
    assert job_info(hq_env, 1).get("Stdout") == f"{hq_env.work}/out-{uid}-1"
    hq_env.start_worker()
    hq_env.command(["job", "wait", "1"])
    assert (hq_env.work / f"out-{uid}-1").exists()


def test_relative_paths_resolve_against_the_task_cwd(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(
        hq_env,
        [
            "--cwd",
            "%{INSTANCE_ID}-dir",
            "--stdout",
            "%{INSTANCE_ID}.out",
            "--stderr",
            "foo/%{JOB_ID}/job.err",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo o; echo e >&2",
        ],
    )
    assert hq_env.job_states() == {1: "FINISHED"}
    cwd = hq_env.work / "0-dir"
    assert (cwd / "0.out").read_text() == "o\n"
    # Parent directories of an output file are created.
    assert (cwd / "foo" / "1" / "job.err").read_text() == "e\n"
    task = task_json(hq_env, 1)[0]
    assert task["cwd"] == str(cwd)
    assert task["stdout"] == f"{cwd}/0.out"
    assert task["stderr"] == f"{cwd}/foo/1/job.err"


def test_absolute_output_path(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    target = hq_env.root / "elsewhere" / "deep" / "out.txt"
    submit(hq_env, ["--stdout", str(target), "--wait", "--", "echo", "abs"])
    assert target.read_text() == "abs\n"
    assert (hq_env.work / "job-1" / "0.stderr").exists()


def test_rm_if_finished_deletes_only_after_success(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    submit(
        hq_env,
        [
            "--array",
            "1-2",
            "--stdout",
            ":rm-if-finished",
            "--stderr",
            "err-%{TASK_ID}.txt:rm-if-finished",
            "--",
            "bash",
            "-c",
            "echo out; echo err >&2; exit $((HQ_TASK_ID - 1))",
        ],
    )
    hq_env.command(["job", "wait", "1"])
    assert hq_env.task_states(1) == {1: "finished", 2: "failed"}
    finished_out = hq_env.work / "job-1" / "1.stdout"
    finished_err = hq_env.work / "err-1.txt"
    hq_env.wait_until(
        lambda: not finished_out.exists() and not finished_err.exists(),
        "the finished task's output files to be removed",
    )
    assert (hq_env.work / "job-1" / "2.stdout").read_text() == "out\n"
    assert (hq_env.work / "err-2.txt").read_text() == "err\n"


def test_invalid_stdout_path_fails_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    submit(hq_env, ["--stdout", "/dev/null/foo.txt", "--wait", "--", "echo", "hi"])
    assert hq_env.job_states() == {1: "FAILED"}
    assert task_json(hq_env, 1)[0]["error"].startswith("Cannot create stdout directory at ")


# --- client-side checks and warnings (cli.md §5.3) -----------------------------------------

MISSING_ID = (
    "You have submitted an array job, but the `{0}` path does not contain the task "
    "ID placeholder.\nIndividual tasks might thus overwrite the file. Consider "
    "adding `%{{TASK_ID}}` to the `--{0}` value."
)


def test_cwd_placeholder_in_cwd_is_rejected(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.command(
        ["submit", "--cwd", "%{CWD}/x", "--", "true"],
        expect_fail=(
            "Working directory path cannot contain the working directory placeholder `%{CWD}`."
        ),
    )
    assert hq_env.job_states() == {}


def test_missing_task_id_warnings(hq_env: HqEnv) -> None:
    hq_env.start_server()
    both = hq_env.command(
        ["submit", "--array", "1-2", "--stdout", "out.txt", "--stderr", "err.txt", "--", "true"]
    )
    assert MISSING_ID.format("stdout") in both
    assert MISSING_ID.format("stderr") in both
    only_stderr = hq_env.command(
        [
            "submit",
            "--array",
            "1-2",
            "--stdout",
            "out-%{TASK_ID}.txt",
            "--stderr",
            "err.txt",
            "--",
            "true",
        ]
    )
    assert MISSING_ID.format("stderr") in only_stderr
    assert "`stdout` path" not in only_stderr
    quiet_cases = [
        ["--stdout", "out.txt", "--", "true"],  # not an array
        ["--array", "1-2", "--", "true"],  # default paths carry the task id
        [
            "--array",
            "1-2",
            "--cwd",
            "dir-%{TASK_ID}",
            "--stdout",
            "%{CWD}/out.txt",
            "--stderr",
            "%{CWD}/err.txt",
            "--",
            "true",
        ],
        ["--array", "1-2", "--stdout", "none", "--stderr", "none", "--", "true"],
    ]
    for args in quiet_cases:
        out = hq_env.command(["submit", *args])
        assert "task ID placeholder" not in out, args


def test_unknown_placeholder_warnings(hq_env: HqEnv) -> None:
    hq_env.start_server()
    out = hq_env.command(
        [
            "submit",
            "--stdout",
            "x-%{FOO}",
            "--stderr",
            "%{BAR}-%{BAZ}",
            "--cwd",
            "%{QUX}",
            "--",
            "true",
        ]
    )
    assert "Found unknown placeholder `FOO` in stdout path" in out
    assert "Found unknown placeholders `BAR, BAZ` in stderr path" in out
    assert "Found unknown placeholder `QUX` in working directory path" in out
    known = hq_env.command(
        [
            "submit",
            "--stdout",
            "%{JOB_ID}-%{TASK_ID}-%{INSTANCE_ID}-%{SERVER_UID}-%{SUBMIT_DIR}",
            "--",
            "true",
        ]
    )
    assert "unknown placeholder" not in known


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--array", "1-1000"], "The job will create 2000 files for stdout and stderr."),
        (["--array", "1-1000", "--stderr", "none"], "The job will create 1000 files for stdout."),
        (["--array", "1-1000", "--stdout", "none"], "The job will create 1000 files for stderr."),
        (["--array", "1-10"], None),
        (["--array", "1-1000", "--stdout", "none", "--stderr", "none"], None),
    ],
)
def test_many_output_files_warning(hq_env: HqEnv, args: list[str], message: str | None) -> None:
    hq_env.start_server()
    out = hq_env.command(["submit", *args, "--", "true"])
    if message is None:
        assert "files for" not in out
    else:
        assert (
            f"{message} Consider using the `--stream` option to stream all outputs into "
            "a single file"
        ) in out
