"""Authenticated but hostile clients: a malformed request gets an error answer, and the server
serves on with every job it had.

A well-behaved client cannot build these requests (their dataclasses check themselves), so the
tests forge them past those checks and send them with the real client connection, as a hostile
peer holding the access file would.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from harness import HqEnv

from hqshm.link.client import ClientConnection, ServerError
from hqshm.link.requests import (
    CancelJobsRequest,
    JobInfoRequest,
    Selector,
    TaskInfoRequest,
    TaskListRequest,
    WaitJobsRequest,
)
from hqshm.link.responses import JobInfoResponse

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
