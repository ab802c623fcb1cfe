"""Authenticated but hostile clients: a malformed request gets an error answer, and the server
serves on with every job it had.

A well-behaved client cannot build these requests (their dataclasses check themselves), so the
tests forge them past those checks and send them with the real client connection, as a hostile
peer holding the access file would.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from harness import HqEnv
from hqshm.cluster.resources import RequestVariant, ResourceEntry, ResourceRequest, cpus_request

from hqshm.link.client import ClientConnection, ConnectionLost, ServerError
from hqshm.link.details import JobInfoResponse, TaskInfoResponse, TaskListResponse
from hqshm.link.requests import (
    CancelJobsRequest,
    JobInfoRequest,
    OpenJobRequest,
    Selector,
    TaskInfoRequest,
    TaskListRequest,
    WaitJobsRequest,
)
from hqshm.link.responses import CancelJobsResponse, SubmitResponse
from hqshm.link.submitrequests import SubmitRequest
from hqshm.model import limits
from hqshm.model.submission import ArraySubmission, StdioDesc, TaskTemplate

# Each crashed or stalled the server before ids were checked on arrival: a step of 0
# (ZeroDivisionError), a negative start (OverflowError), a start after the end, ids past 2^32-1.
BAD_RANGES = [((1, 5, 0),), ((-5, 3, 1),), ((9, 1, 1),), ((0, 2**33, 1),), ((1, 1, 1), (2, 3, -1))]


def forged(cls: type, **values: Any) -> Any:
    """An instance of a request dataclass with these field values, its own checks skipped."""
    instance = object.__new__(cls)
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else None
        object.__setattr__(instance, field.name, values.get(field.name, default))
    return instance


def hostile_requests(ranges: tuple[tuple[int, int, int], ...]) -> list[object]:
    selector = forged(Selector, kind="ids", ranges=ranges)
    return [
        forged(WaitJobsRequest, selector=selector, without_close=False, notifications=False),
        forged(CancelJobsRequest, selector=selector),
        forged(JobInfoRequest, selector=selector, include_tasks=True),
        forged(TaskListRequest, jobs=Selector("all"), tasks=ranges, states=()),
        forged(TaskInfoRequest, job=Selector("last"), tasks=ranges),
    ]


@pytest.mark.expect_log("Invalid client request")
def test_malformed_id_ranges_are_refused_and_the_server_serves_on(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    hq_env.command(["submit", "--array", "1-3", "--wait", "--", "true"])
    with ClientConnection(hq_env.server_dir, env=hq_env.env()) as client:
        for ranges in BAD_RANGES:
            for request in hostile_requests(ranges):
                with pytest.raises(ServerError, match=r"^invalid request: .*invalid id range"):
                    client.request(request, JobInfoResponse, timeout=10)
    assert hq_env.server is not None and hq_env.server.poll() is None
    hq_env.command(["submit", "--array", "1-2", "--wait", "--", "true"])
    assert hq_env.job_states() == {1: "FINISHED", 2: "FINISHED"}
    assert list(hq_env.worker_states().values()) == ["RUNNING"]


HUGE = ((2, 4_000_000_000, 1),)  # 18 bytes on the wire; expanded, 16 GB


def timed(client: ClientConnection, request: object, expect: type) -> Any:
    """The answer to ``request``, which must come within a second."""
    started = time.monotonic()
    response = client.request(request, expect, timeout=10)
    assert time.monotonic() - started < 1.0, f"{type(request).__name__} took too long"
    return response


def test_a_range_of_billions_is_answered_at_once_and_touches_only_existing_jobs(
        hq_env: HqEnv) -> None:
    hq_env.start_server()
    for _ in range(3):
        hq_env.command(["submit", "--array", "1-5", "--", "sleep", "100"])
    with ClientConnection(hq_env.server_dir, env=hq_env.env()) as client:
        info = timed(client, JobInfoRequest(Selector("ids", HUGE)), JobInfoResponse)
        assert [d.summary.id for d in info.jobs] == [2, 3]
        assert info.missing[:2] == (4, 5) and len(info.missing) == limits.MAX_MISSING_IDS
        tasks = timed(client, TaskListRequest(Selector("ids", HUGE), HUGE), TaskListResponse)
        assert [(job, [t.id for t in views]) for job, views in tasks.jobs] == \
            [(2, [2, 3, 4, 5]), (3, [2, 3, 4, 5])]
        one = timed(client, TaskInfoRequest(Selector("last"), HUGE), TaskInfoResponse)
        assert [t.id for t in one.tasks] == [2, 3, 4, 5] and one.missing_tasks[0] == 6
        canceled = timed(client, CancelJobsRequest(Selector("ids", HUGE)), CancelJobsResponse)
        assert [job for job, _, _ in canceled.canceled] == [2, 3]
    assert hq_env.job_states() == {1: "WAITING", 2: "CANCELED", 3: "CANCELED"}


@pytest.mark.expect_log(r"Canceling job \d+ failed; job not found")
def test_hq_job_cancel_of_a_range_of_billions_cancels_the_existing_jobs(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for _ in range(6):
        hq_env.command(["submit", "--", "sleep", "100"])
    started = time.monotonic()
    output = hq_env.command(["job", "cancel", "5-4000000000"])
    assert time.monotonic() - started < 10
    assert "Job 5 canceled" in output and "Job 6 canceled" in output
    assert "Canceling job 7 failed; job not found" in output
    assert hq_env.server is not None and hq_env.server.poll() is None
    assert hq_env.job_states() == {1: "WAITING", 2: "WAITING", 3: "WAITING", 4: "WAITING",
                                   5: "CANCELED", 6: "CANCELED"}


TEMPLATE = TaskTemplate(args=("true",), env={}, cwd="%{SUBMIT_DIR}",
                        stdout=StdioDesc("none"), stderr=StdioDesc("none"),
                        request=cpus_request())


def forged_submit(**template_fields: Any) -> SubmitRequest:
    """A one-task submission whose template has these fields, unchecked."""
    values = {f.name: getattr(TEMPLATE, f.name) for f in dataclasses.fields(TaskTemplate)}
    template = forged(TaskTemplate, **{**values, **template_fields})
    submission = forged(ArraySubmission, name="forged", max_fails=None, submit_dir="/tmp",
                        template=template, ids=(), after=(), entries_by_position=False)
    return forged(SubmitRequest, submission=submission)


FORGED = [
    (forged_submit(args=()), "the command cannot be empty"),
    (forged_submit(args=("echo", "a\0b")), "a command argument contains a NUL character"),
    (forged_submit(env={"X": "\0"}), "environment variable X contains a NUL character"),
    (forged_submit(request=ResourceRequest(())), "needs at least one variant"),
    (forged_submit(request=ResourceRequest((RequestVariant((ResourceEntry("cpus", -10_000),)),))),
     "the amount of cpus -10000 is out of range"),
    (forged(JobInfoRequest, selector=forged(Selector, kind="ids", ranges=tuple(
        (i * 2, i * 2, 1) for i in range(limits.MAX_RANGES + 1))), include_tasks=False),
     r"too many id ranges: 50001 \(the limit is 50000\)"),
    (forged(OpenJobRequest, name="n" * 5000, max_fails=None),
     r"the job name is too long: 5000 characters \(the limit is 4096\)"),
    (forged(CancelJobsRequest, selector=forged(Selector, kind="ids", ranges=((1, 5, 1), (3, 4, 1))),
            reason=None), "id ranges overlap"),
]


@pytest.mark.expect_log("Invalid client request")
def test_forged_requests_are_refused_naming_the_problem_and_the_server_serves_on(
        hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    with ClientConnection(hq_env.server_dir, env=hq_env.env()) as client:
        for request, problem in FORGED:
            with pytest.raises(ServerError, match=f"^invalid request: .*{problem}"):
                client.request(request, SubmitResponse, timeout=10)
        assert client.request(JobInfoRequest(Selector("all")), JobInfoResponse,
                              timeout=10).jobs == ()
    hq_env.command(["submit", "--wait", "--", "true"])
    assert hq_env.job_states() == {1: "FINISHED"}


def test_a_request_beyond_the_frame_limit_is_dropped_and_the_server_serves_on(
        hq_env: HqEnv) -> None:
    """ZeroMQ drops the connection of a frame over MAX_REQUEST_BYTES before the server reads
    any of it; the client sees the connection lost (within about a second), not a hang."""
    hq_env.start_server()
    oversized = forged(OpenJobRequest, name="n" * (limits.MAX_REQUEST_BYTES + 1), max_fails=None)
    with ClientConnection(hq_env.server_dir, env=hq_env.env()) as client, \
            pytest.raises(ConnectionLost):
        client.request(oversized, SubmitResponse, timeout=30)
    hq_env.command(["submit", "--", "true"])
    assert hq_env.job_states() == {1: "WAITING"}


@pytest.mark.expect_log("Invalid client request")
def test_a_frame_of_millions_of_small_values_is_refused_before_it_is_built(
        hq_env: HqEnv) -> None:
    """A 60 MB frame of empty arrays took the server 64 s and 4.5 GB to decode before any
    check; now the decode stops at MAX_REQUEST_VALUES and the request gets an error. bench/
    README.md has the time it takes (about 0.1 s for the worst shape)."""
    hq_env.start_server()
    empties: list[list[int]] = [[] for _ in range(2_000_000)]
    nested = [[[] for _ in range(60_000)] for _ in range(20)]
    with ClientConnection(hq_env.server_dir, env=hq_env.env()) as client:
        for value, problem in ((empties, "exceeds max_array_len"),
                               (nested, "more than 500,000 values")):
            forged_request = forged(OpenJobRequest, name=value, max_fails=None)
            with pytest.raises(ServerError, match=f"^invalid request: .*{problem}"):
                client.request(forged_request, SubmitResponse, timeout=30)
        assert client.request(JobInfoRequest(Selector("all")), JobInfoResponse,
                              timeout=10).jobs == ()
    hq_env.command(["submit", "--", "true"])
    assert hq_env.job_states() == {1: "WAITING"}


def test_entries_and_job_files_larger_than_one_request_are_submitted_whole(
        hq_env: HqEnv) -> None:
    """Millions of `--each-line` entries travel packed (one value); a job file of many tasks
    goes in parts into one job, each task after its dependencies."""
    hq_env.start_server()
    lines = hq_env.work / "lines"
    lines.write_text("".join(f"line {i}\n" for i in range(limits.MAX_REQUEST_VALUES + 10)))
    hq_env.command(["submit", "--each-line", str(lines), "--array", "3,500005", "--", "sh", "-c",
                    'test "$HQ_ENTRY" = "line $HQ_TASK_ID"'])  # each task got its own line
    tasks = 5000
    text = "".join(f'[[task]]\nid = {i}\ncommand = ["true"]\n'
                   + (f"deps = [{tasks - 1 - i}]\n" if i < tasks // 2 else "") + "\n"
                   for i in range(tasks))
    job_file = hq_env.work / "many.toml"
    job_file.write_text(text)
    hq_env.command(["job", "submit-file", str(job_file)])
    hq_env.start_worker(cpus=2)
    hq_env.command(["job", "wait", "all"], timeout=120)
    jobs = {job["id"]: job for job in hq_env.json(["job", "list", "--all"])}
    assert {i: job["task_stats"]["finished"] for i, job in jobs.items()} == {1: 2, 2: tasks}
