"""`hq job list|info|cancel|wait|progress` (spec/cli.md §6)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from hqshm.cli.commands.context import Context, id_ranges, selector
from hqshm.errors import UserError
from hqshm.link.commandlog import CommandLogger
from hqshm.link.requests import (
    CancelJobsRequest,
    CloseJobsRequest,
    ForgetJobsRequest,
    JobInfoRequest,
    JobListRequest,
    JobProgressRequest,
    JobSummaryRequest,
    OpenJobRequest,
    ResubmitRequest,
    TaskIdsRequest,
    TaskListRequest,
    WaitJobsRequest,
)
from hqshm.link.responses import (
    CancelJobsResponse,
    CloseJobsResponse,
    ForgetJobsResponse,
    JobListResponse,
    JobProgressResponse,
    JobSummaryResponse,
    SubmitResponse,
    TaskIdsResponse,
    WaitJobsResponse,
)
from hqshm.model.arrays import parse_array
from hqshm.model.taskstates import STATE_NAMES

LIST_PAGE = 10_000  # jobs in one answer to `hq job list`

logger = CommandLogger("hqshm.cli")

JOB_FILTER_STATES = (*STATE_NAMES, "opened")
FORGET_STATES = ("finished", "failed", "aborted", "canceled")
MAX_CANCEL_REASON = 200


def run(ctx: Context, command: str) -> int:
    return {
        "list": list_jobs,
        "info": info,
        "cancel": cancel,
        "wait": wait,
        "progress": progress,
        "open": open_job,
        "close": close,
        "forget": forget,
        "summary": summary,
        "task-ids": task_ids,
        "resubmit": resubmit,
        "cat": cat,
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

    def pages() -> Iterator[JobListResponse]:
        """Pages of LIST_PAGE jobs: neither the server's answer nor our table holds 100,000
        jobs at once."""
        after = 0
        while True:
            page = ctx.request(JobListRequest(states, args.all, after, LIST_PAGE),
                               JobListResponse)
            yield page
            if len(page.jobs) < LIST_PAGE:
                return
            after = page.jobs[-1].id

    ctx.out.job_list(pages(), args.verbose)
    return 0


def info(ctx: Context) -> int:
    from hqshm.link.details import JobInfoResponse  # not every job command's: start-up time

    request = JobInfoRequest(selector(ctx.args.selector), include_tasks=ctx.out.mode == "json")
    response = ctx.request(request, JobInfoResponse)
    for job_id in response.missing:
        logger.error("Job %d not found", job_id)
    ctx.out.job_info(response.jobs, time.time())
    return 0


def cancel(ctx: Context) -> int:
    reason = ctx.args.reason
    if reason is not None and len(reason) > MAX_CANCEL_REASON:
        raise UserError(f"Cancel reason must be shorter than {MAX_CANCEL_REASON} you entered "
                        f"{len(reason)}.")
    request = CancelJobsRequest(selector(ctx.args.selector), reason)
    response = ctx.request(request, CancelJobsResponse)
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
        conn.request(request, WaitJobsResponse, timeout=None)
    ctx.out.empty()
    return 0


def progress(ctx: Context) -> int:
    from hqshm.cli.commands.submit import show_progress

    sel = selector(ctx.args.selector)
    with ctx.connect() as conn:
        response = conn.request(JobProgressRequest(sel), JobProgressResponse)
        pending = [j for j in response.jobs if j.counts[0] + j.counts[1] > 0 or j.is_open]
        if not pending:
            logger.warning("There are no jobs to wait for")
            return 0
        logger.info("Waiting for %d job(s) with %d task(s)", len(pending),
                    sum(j.task_count for j in pending))
        show_progress(conn, sel, ctx.out)
    return 0


def open_job(ctx: Context) -> int:
    response = ctx.request(OpenJobRequest(ctx.args.name, ctx.args.max_fails), SubmitResponse)
    ctx.out.opened(response.job_id)
    return 0


def close(ctx: Context) -> int:
    response = ctx.request(CloseJobsRequest(selector(ctx.args.selector)), CloseJobsResponse)
    if not response.results:
        logger.info("There is nothing to close")
    for job_id, outcome in response.results:
        if outcome == "closed":
            logger.info("Job %d closed", job_id)
        elif outcome == "already-closed":
            logger.error("Closing job %d failed; job is already closed", job_id)
        else:
            logger.error("Closing job %d failed; job not found", job_id)
    ctx.out.empty()
    return 0


def forget(ctx: Context) -> int:
    states = parse_state_filter(ctx.args.filter, FORGET_STATES)
    request = ForgetJobsRequest(selector(ctx.args.selector), states)
    response = ctx.request(request, ForgetJobsResponse)
    # HQ's exact words: "1 job were forgotten", "6 jobs were forgotten".
    noun = "job" if response.forgotten == 1 else "jobs"
    message = f"{response.forgotten} {noun} were forgotten"
    if response.ignored:
        message += f", {response.ignored} were ignored due to wrong state or invalid ID"
    logger.info("%s", message)
    ctx.out.empty()
    return 0


def summary(ctx: Context) -> int:
    response = ctx.request(JobSummaryRequest(), JobSummaryResponse)
    ctx.out.job_summary(dict(response.counts))
    return 0


def task_ids(ctx: Context) -> int:
    states = parse_state_filter(ctx.args.filter, STATE_NAMES) if ctx.args.filter else ()
    response = ctx.request(TaskIdsRequest(selector(ctx.args.selector), states), TaskIdsResponse)
    for job_id in response.missing:
        logger.error("Job %d not found", job_id)
    ctx.out.task_ids(response.jobs)
    return 0


def resubmit(ctx: Context) -> int:
    states = parse_state_filter(ctx.args.filter, STATE_NAMES)
    response = ctx.request(ResubmitRequest(ctx.args.job_id, states), SubmitResponse)
    ctx.out.submitted(response.job_id)
    return 0


def cat(ctx: Context) -> int:
    """`hq job cat`: the output files of tasks, in task order (spec/cli.md §6)."""
    from hqshm.link.details import TaskListResponse  # not every job command's: start-up time

    if ctx.out.mode == "json":
        raise UserError("JSON output mode doesn't support job output")
    args = ctx.args
    sel = selector(args.selector, allow_all=False)
    wanted = id_ranges(parse_array(args.tasks)) if args.tasks else None
    states = parse_state_filter(args.task_status, STATE_NAMES) if args.task_status else ()
    response = ctx.request(TaskListRequest(sel, wanted, states), TaskListResponse)
    for job_id in response.missing_jobs:
        logger.error("Job %d was not found", job_id)
    if not response.jobs:
        if not response.missing_jobs:
            logger.error("No jobs were found")
        return 0
    out = sys.stdout.buffer
    for job_id, views in response.jobs:
        if wanted is not None:
            found = {v.id for v in views}
            for task_id in expand_ids(wanted):
                if task_id not in found and not states:
                    logger.warning("Task %d of job %d not found", task_id, job_id)
        if not views:
            logger.warning("No tasks were selected for job %d, there is nothing to print",
                           job_id)
            continue
        for view in views:
            kind = view.stdout_kind if args.stream == "stdout" else view.stderr_kind
            path = view.stdout if args.stream == "stdout" else view.stderr
            if kind != "file":
                logger.warning("Task %d has no `%s` stream associated with it", view.id,
                               args.stream)
                continue
            if args.print_task_header:
                out.write(f"# Job {job_id}, task {view.id}\n".encode())
            if path is None:
                continue  # not started yet: no file
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 16):
                        out.write(chunk)
            except OSError:
                continue  # never written (e.g. failed before spawning), or removed
    out.flush()
    return 0


def expand_ids(ranges: tuple[tuple[int, int, int], ...]) -> list[int]:
    return [i for start, end, step in ranges for i in range(start, end + 1, step)]
