from __future__ import annotations

import pytest

from hqshm.errors import UserError
from hqshm.model.placeholders import (
    CwdPlaceholderInCwd,
    SubmitPaths,
    TaskPaths,
    check_cwd,
    fill,
    has_placeholder,
    missing_task_id_warning,
    resolve_at_start,
    resolve_at_submit,
    unknown_placeholder_warning,
    unknown_placeholders,
)

DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"
SUBMIT = "/home/user/work"
UID = "aB3xQ9"


def submit(
    cwd: str = "%{SUBMIT_DIR}",
    stdout: str | None = DEFAULT_STDOUT,
    stderr: str | None = DEFAULT_STDERR,
    stream: str | None = None,
) -> SubmitPaths:
    return resolve_at_submit(
        cwd, stdout, stderr, stream, job_id=1, submit_dir=SUBMIT, server_uid=UID
    )


def start(paths: SubmitPaths, task_id: int = 0, instance_id: int = 0) -> TaskPaths:
    return resolve_at_start(
        paths,
        task_id=task_id,
        instance_id=instance_id,
        job_id=1,
        submit_dir=SUBMIT,
        server_uid=UID,
    )


def test_fill_substitutes_given_names_and_keeps_the_rest() -> None:
    text = "%{JOB_ID}-%{TASK_ID}-%{FOO}-%{JOB_ID}%{}%{a"
    assert fill(text, {"JOB_ID": "7"}) == "7-%{TASK_ID}-%{FOO}-7%{}%{a"
    assert fill("%%{JOB_ID}", {"JOB_ID": "7"}) == "%7"
    assert fill("no placeholders", {"JOB_ID": "7"}) == "no placeholders"


def test_values_are_not_expanded_again() -> None:
    assert fill("%{SUBMIT_DIR}", {"SUBMIT_DIR": "/a/%{JOB_ID}", "JOB_ID": "1"}) == "/a/%{JOB_ID}"


def test_unknown_placeholders_in_order_and_unique() -> None:
    assert unknown_placeholders("%{BAR}/%{JOB_ID}/%{BAZ}/%{BAR}") == ["BAR", "BAZ"]
    assert unknown_placeholders(DEFAULT_STDOUT) == []
    assert unknown_placeholders("%{job_id}") == ["job_id"]


def test_has_placeholder() -> None:
    assert has_placeholder(DEFAULT_STDOUT, "TASK_ID")
    assert not has_placeholder(DEFAULT_STDOUT, "INSTANCE_ID")


def test_cwd_must_not_contain_cwd() -> None:
    check_cwd("/tmp/%{TASK_ID}")
    with pytest.raises(CwdPlaceholderInCwd) as raised:
        check_cwd("%{CWD}/foo")
    assert str(raised.value) == (
        "Working directory path cannot contain the working directory placeholder `%{CWD}`."
    )
    assert isinstance(raised.value, UserError)


# -- two-stage resolution (jobs.md §5, output.md §3.7 test facts) ---------------------------


def test_default_paths_before_and_after_start() -> None:
    paths = submit()
    assert paths == SubmitPaths(
        cwd=SUBMIT,
        stdout=f"{SUBMIT}/job-1/%{{TASK_ID}}.stdout",
        stderr=f"{SUBMIT}/job-1/%{{TASK_ID}}.stderr",
    )
    assert start(paths, task_id=3) == TaskPaths(
        cwd=SUBMIT, stdout=f"{SUBMIT}/job-1/3.stdout", stderr=f"{SUBMIT}/job-1/3.stderr"
    )


def test_absolute_cwd() -> None:
    paths = submit(cwd="/tmp/foo")
    assert paths.stdout == "/tmp/foo/job-1/%{TASK_ID}.stdout"


def test_cwd_with_task_id_fills_cwd_before_start() -> None:
    paths = submit(cwd="/tmp/%{TASK_ID}")
    assert paths.cwd == "/tmp/%{TASK_ID}"
    assert paths.stdout == "/tmp/%{TASK_ID}/job-1/%{TASK_ID}.stdout"
    assert start(paths) == TaskPaths(
        cwd="/tmp/0", stdout="/tmp/0/job-1/0.stdout", stderr="/tmp/0/job-1/0.stderr"
    )


def test_relative_paths_resolve_against_the_tasks_cwd() -> None:
    # `--cwd %{INSTANCE_ID}-dir --stdout %{INSTANCE_ID}.out` gives `<submit>/0-dir/0.out`
    paths = submit(cwd="%{INSTANCE_ID}-dir", stdout="%{INSTANCE_ID}.out", stderr=None)
    resolved = start(paths, instance_id=0)
    assert resolved == TaskPaths(cwd=f"{SUBMIT}/0-dir", stdout=f"{SUBMIT}/0-dir/0.out", stderr=None)
    assert start(paths, instance_id=2).stdout == f"{SUBMIT}/2-dir/2.out"


def test_relative_cwd_and_stdout_without_placeholders() -> None:
    paths = submit(cwd="sub/../work2", stdout="out/./x.txt", stderr="/abs/../kept")
    assert paths == SubmitPaths(
        cwd="/home/user/work/work2",
        stdout="/home/user/work/work2/out/x.txt",
        stderr="/abs/../kept",
    )


def test_server_uid_and_job_id_in_stdout_and_stream() -> None:
    paths = submit(stdout="out-%{SERVER_UID}-%{JOB_ID}", stream="log-%{JOB_ID}")
    assert paths.stdout == f"{SUBMIT}/out-{UID}-1"
    assert paths.stream == f"{SUBMIT}/log-1"


def test_stream_path_keeps_task_placeholders_and_uses_the_submit_dir() -> None:
    paths = submit(cwd="/elsewhere", stream="%{SUBMIT_DIR}/logs/%{TASK_ID}")
    assert paths.stream == f"{SUBMIT}/logs/%{{TASK_ID}}"


def test_no_file_stays_none() -> None:
    paths = submit(stdout=None, stderr=None)
    assert (paths.stdout, paths.stderr, paths.stream) == (None, None, None)
    assert start(paths) == TaskPaths(cwd=SUBMIT, stdout=None, stderr=None)


def test_unknown_placeholders_survive_both_stages() -> None:
    paths = submit(stdout="%{FOO}/%{TASK_ID}")
    assert start(paths, task_id=4).stdout == f"{SUBMIT}/%{{FOO}}/4"


def test_stage_two_alone_resolves_raw_paths() -> None:
    raw = SubmitPaths(cwd="%{SUBMIT_DIR}/t%{TASK_ID}", stdout="%{CWD}/o", stderr="e-%{JOB_ID}")
    assert start(raw, task_id=5) == TaskPaths(
        cwd=f"{SUBMIT}/t5", stdout=f"{SUBMIT}/t5/o", stderr=f"{SUBMIT}/t5/e-1"
    )


# -- client warnings (cli.md §5.3) ---------------------------------------------------------


def test_unknown_placeholder_warnings() -> None:
    assert (
        unknown_placeholder_warning("log-%{FOO}", "log path")
        == "Found unknown placeholder `FOO` in log path"
    )
    assert (
        unknown_placeholder_warning("%{BAR}/%{BAZ}/%{TASK_ID}", "stdout path")
        == "Found unknown placeholders `BAR, BAZ` in stdout path"
    )
    assert unknown_placeholder_warning(DEFAULT_STDOUT, "stdout path") is None


def test_missing_task_id_warning() -> None:
    assert missing_task_id_warning("out.txt", "stdout", "%{SUBMIT_DIR}") == (
        "You have submitted an array job, but the `stdout` path does not contain the task ID"
        " placeholder.\n"
        "Individual tasks might thus overwrite the file. Consider adding `%{TASK_ID}` to the"
        " `--stdout` value."
    )
    warning = missing_task_id_warning("%{CWD}/err", "stderr", "/tmp")
    assert warning is not None and "`stderr` path" in warning and "`--stderr` value" in warning


def test_no_task_id_warning_when_the_path_or_its_cwd_varies_by_task() -> None:
    assert missing_task_id_warning(DEFAULT_STDOUT, "stdout", "%{SUBMIT_DIR}") is None
    assert missing_task_id_warning("%{CWD}/out", "stdout", "/tmp/%{TASK_ID}") is None
    assert missing_task_id_warning("out", "stdout", "/tmp/%{TASK_ID}") is not None
    assert missing_task_id_warning(None, "stdout", "/tmp") is None
