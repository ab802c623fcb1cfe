"""`hq task list|info` (spec/cli.md §7)."""

from __future__ import annotations

import logging
import os
import time

from hqshm.cli.commands.context import Context, id_ranges, selector
from hqshm.cli.commands.jobs import parse_state_filter
from hqshm.errors import UserError
from hqshm.link.details import TaskExplainResponse, TaskInfoResponse, TaskListResponse
from hqshm.link.requests import Selector, TaskExplainRequest, TaskInfoRequest, TaskListRequest
from hqshm.model import notification
from hqshm.model.arrays import parse_array, parse_single
from hqshm.model.taskstates import STATE_NAMES

logger = logging.getLogger("hqshm.cli")

NOTIFY_REPLY_TIMEOUT = 10.0


def run(ctx: Context, command: str) -> int:
    return {"list": list_tasks, "info": info, "explain": explain, "notify": notify_task}[command](ctx)


def list_tasks(ctx: Context) -> int:
    args = ctx.args
    tasks = id_ranges(parse_array(args.tasks)) if args.tasks else None
    states = parse_state_filter(args.task_status, tuple(STATE_NAMES)) if args.task_status else ()
    request = TaskListRequest(selector(args.selector, allow_all=False), tasks, states)
    response = ctx.request(request, TaskListResponse)
    for job_id in response.missing_jobs:
        logger.warning("Job %d not found", job_id)
    ctx.out.task_list(response.jobs, bool(args.verbose), time.time())
    return 0


def info(ctx: Context) -> int:
    args = ctx.args
    job = _single_job(args.job)
    request = TaskInfoRequest(job, id_ranges(parse_array(args.tasks)))
    response = ctx.request(request, TaskInfoResponse)
    if response.job_id is None:
        raise UserError(f"Cannot find job {args.job}")
    for task_id in response.missing_tasks:
        logger.warning("Task %d not found", task_id)
    ctx.out.task_info(response.tasks, response.submits, bool(args.verbose), time.time())
    return 0


def explain(ctx: Context) -> int:
    args = ctx.args
    job = _single_job(args.job)
    response = ctx.request(TaskExplainRequest(job, parse_single(args.task)), TaskExplainResponse)
    ctx.out.explain(response)
    return 0


def _single_job(text: str) -> Selector:
    job = selector(text, allow_all=False)
    if job.kind == "ids" and (len(job.ranges) != 1 or job.ranges[0][0] != job.ranges[0][1]):
        raise UserError(f"invalid job id '{text}': a single id or `last` is expected")
    return job


def notify_task(ctx: Context) -> int:
    """`hq task notify MESSAGE`, from inside a task: to its worker, no server connection."""
    env = ctx.env
    key = env.get("HQ_ACCESS_KEY")
    notification.parse_key(key)
    try:
        ids = [int(env[name]) for name in ("HQ_JOB_ID", "HQ_TASK_ID", "HQ_INSTANCE_ID")]
    except (KeyError, ValueError):
        raise UserError("HQ_JOB_ID, HQ_TASK_ID and HQ_INSTANCE_ID must be set as in a "
                        "task") from None
    send_notification(key, *ids, os.fsencode(ctx.args.message))
    ctx.out.empty()
    return 0


def send_notification(key: str | None, job_id: int, task_id: int, instance: int,
                      message: bytes) -> None:
    """Deliver one message to the task's node and wait for its answer."""
    import socket

    from hqshm.cluster.digests import token_hex

    name, token = notification.parse_key(key)
    datagram = notification.encode_notice(token, job_id, task_id, instance, message)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + f"hqshm-notify-client-{token_hex(8)}")
        sock.settimeout(NOTIFY_REPLY_TIMEOUT)
        try:
            sock.sendto(datagram, "\0" + name)
            data = sock.recv(notification.MAX_DATAGRAM)
        except OSError as exc:
            raise notification.NotifyFailed(
                reason=f"the worker does not answer ({exc})") from None
    error = notification.decode_answer(data)
    if error:
        raise notification.NotifyFailed(reason=error)
