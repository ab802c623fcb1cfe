"""`hq job list|info|cancel|wait|progress` (spec/cli.md §6)."""

from __future__ import annotations

import logging
import time

from hqshm.cli.commands.context import Context, selector
from hqshm.errors import UserError
from hqshm.requests import (
    CancelJobsRequest,
    CancelJobsResponse,
    JobInfoRequest,
    JobInfoResponse,
    JobListRequest,
    JobListResponse,
    JobProgressRequest,
    JobProgressResponse,
    WaitJobsRequest,
)
from hqshm.states import STATE_NAMES

logger = logging.getLogger("hqshm.cli")

JOB_FILTER_STATES = (*STATE_NAMES, "opened")
MAX_CANCEL_REASON = 200


def run(ctx: Context, command: str) -> int:
    return {
        "list": list_jobs,
        "info": info,
        "cancel": cancel,
        "wait": wait,
        "progress": progress,
    }[command](ctx)


def parse_state_filter(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    states = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    for state in states:
        if state not in allowed:
            raise UserError(f"invalid state '{state}' in filter: use a comma list of "
                            f"{', '.join(allowed)}")
    return states


def list_jobs(ctx: Context) -> int:
    args = ctx.args
    states = parse_state_filter(args.filter, JOB_FILTER_STATES) if args.filter else ()
    response = ctx.request(JobListRequest(states=states, all=args.all))
    assert isinstance(response, JobListResponse)
    ctx.out.job_list(response.jobs, response.total, args.verbose)
    return 0


def info(ctx: Context) -> int:
    request = JobInfoRequest(selector(ctx.args.selector), include_tasks=ctx.out.mode == "json")
    response = ctx.request(request)
    assert isinstance(response, JobInfoResponse)
    for job_id in response.missing:
        logger.error("Job %d not found", job_id)
    ctx.out.job_info(response.jobs, time.time())
    return 0


def cancel(ctx: Context) -> int:
    reason = ctx.args.reason
    if reason is not None and len(reason) > MAX_CANCEL_REASON:
        raise UserError(f"Cancel reason must be shorter than {MAX_CANCEL_REASON} you entered "
                        f"{len(reason)}.")
    response = ctx.request(CancelJobsRequest(selector(ctx.args.selector), reason))
    assert isinstance(response, CancelJobsResponse)
    if not (response.canceled or response.already_finished or response.missing):
        logger.info("There is nothing to cancel")
    for job_id, n_canceled, n_done in response.canceled:
        logger.info("Job %d canceled (%d tasks canceled, %d tasks already finished)",
                    job_id, n_canceled, n_done)
    for job_id in response.already_finished:
        logger.error("Canceling job %d failed; all tasks are already finished", job_id)
    for job_id in response.missing:
        logger.error("Canceling job %d failed; job not found", job_id)
    ctx.out.empty()
    return 0


def wait(ctx: Context) -> int:
    request = WaitJobsRequest(selector(ctx.args.selector), ctx.args.without_close)
    with ctx.connect() as conn:
        conn.request(request, timeout=None)
    ctx.out.empty()
    return 0


def progress(ctx: Context) -> int:
    from hqshm.cli.commands.submit import show_progress

    sel = selector(ctx.args.selector)
    with ctx.connect() as conn:
        response = conn.request(JobProgressRequest(sel))
        assert isinstance(response, JobProgressResponse)
        pending = [j for j in response.jobs if j.counts[0] + j.counts[1] > 0 or j.is_open]
        if not pending:
            logger.warning("There are no jobs to wait for")
            return 0
        logger.info("Waiting for %d job(s) with %d task(s)", len(pending),
                    sum(j.task_count for j in pending))
        show_progress(conn, sel, ctx.out)
    return 0
