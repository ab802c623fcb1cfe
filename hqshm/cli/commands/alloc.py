"""`hq alloc add|dry-run|list|info|log|pause|resume|remove` (spec/cli.md §8, deployment.md §6).

Durations and flags are checked here; the queue's parameters travel as one ``QueueParams``.
`alloc info` also says why the queue submits nothing now (beyond HQ), on stderr in the table
mode (the table stays HQ's) and in the queue's ``status`` object of `alloc list`'s JSON.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TypeVar

from hqshm.cli import formats
from hqshm.cli.commands.context import Context
from hqshm.cli.layouts import resources_view
from hqshm.errors import UserError
from hqshm.link.allocrequests import (
    AllocAddRequest,
    AllocDryRunRequest,
    AllocInfoRequest,
    AllocInfoResponse,
    AllocListRequest,
    AllocLogRequest,
    AllocPathResponse,
    AllocQueueCreated,
    AllocQueueRequest,
    AllocQueuesResponse,
    QueueView,
)
from hqshm.link.responses import Ack
from hqshm.model.allocqueue import QueueParams
from hqshm.model.durations import format_humantime, parse_hms_or_human

R = TypeVar("R")

logger = logging.getLogger("hqshm.cli")

PROBING_WARNING = ("No worker resources were provided for this queue. Before the first worker "
                   "connects from an allocation submitted by this queue, the queue will "
                   "operate in probing mode.")
IDLE_WARNING = ("You have set an idle timeout longer than 10 minutes. This can result in wasted "
                "allocation duration.")
DRY_RUN_OK = ("A trial allocation was submitted successfully. It was immediately canceled to "
              "avoid wasting resources.")
ADD_TIMEOUT = 300.0  # a dry run waits for qsub/sbatch and qdel/scancel


def run(ctx: Context, command: str) -> int:
    # `cat` and --workers-per-alloc: older HQ's names, which HQ users' scripts may still use.
    return {"add": add, "dry-run": dry_run, "list": list_queues, "info": info, "log": log,
            "cat": log,
            "pause": lambda c: _action(c, "pause"), "resume": lambda c: _action(c, "resume"),
            "remove": lambda c: _action(c, "remove")}[command](ctx)


def queue_params(args: object) -> QueueParams:
    a = args
    time_limit = parse_hms_or_human(a.time_limit)  # type: ignore[attr-defined]
    worker_limit = (parse_hms_or_human(a.worker_time_limit)  # type: ignore[attr-defined]
                    if a.worker_time_limit else None)  # type: ignore[attr-defined]
    if worker_limit is not None and worker_limit > time_limit:
        raise UserError("Worker time limit cannot be larger than queue time limit")
    if a.backlog == 0:  # type: ignore[attr-defined]
        raise UserError("Backlog has to be at least 1")
    idle = (parse_hms_or_human(a.idle_timeout)  # type: ignore[attr-defined]
            if a.idle_timeout else None)  # type: ignore[attr-defined]
    try:
        return QueueParams(
            manager=a.manager, time_limit=time_limit, backlog=a.backlog,  # type: ignore[attr-defined]
            max_workers_per_alloc=a.max_workers_per_alloc,  # type: ignore[attr-defined]
            max_worker_count=a.max_worker_count or None,  # type: ignore[attr-defined]
            name=a.name, idle_timeout=idle,  # type: ignore[attr-defined]
            worker_start_cmd=a.worker_start_cmd,  # type: ignore[attr-defined]
            worker_stop_cmd=a.worker_stop_cmd,  # type: ignore[attr-defined]
            worker_wrap_cmd=a.worker_wrap_cmd,  # type: ignore[attr-defined]
            worker_time_limit=worker_limit, on_server_lost=a.on_server_lost,  # type: ignore[attr-defined]
            cpus=a.cpus, resources=tuple(a.resource),  # type: ignore[attr-defined]
            coupling=a.coupling, group=a.group,  # type: ignore[attr-defined]
            no_hyper_threading=a.no_hyper_threading,  # type: ignore[attr-defined]
            detect_resources=a.detect_resources,  # type: ignore[attr-defined]
            overview_interval=a.overview_interval,  # type: ignore[attr-defined]
            min_utilization=a.min_utilization,  # type: ignore[attr-defined]
            additional_args=tuple(a.additional_args))  # type: ignore[attr-defined]
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _warn(params: QueueParams) -> None:
    params.declared_resources()  # a bad --cpus/--resource fails here, before the server
    if params.cpus is None:
        logger.warning(PROBING_WARNING)
    if params.idle_timeout is not None and params.idle_timeout > 600:
        logger.warning(IDLE_WARNING)


def add(ctx: Context) -> int:
    params = queue_params(ctx.args)
    _warn(params)
    dry = not ctx.args.no_dry_run
    created = _trial(ctx, AllocAddRequest(params, dry), AllocQueueCreated, dry)
    if dry:
        logger.info(DRY_RUN_OK)
    logger.info("Allocation queue %d successfully created", created.queue_id)
    ctx.out.empty()
    return 0


def _trial(ctx: Context, message: object, expect: type[R], dry: bool) -> R:
    """A request that may submit a trial allocation; its failure is the dry run's, but not
    a server that cannot be reached (that error alone is shown)."""
    with ctx.connect() as conn:
        try:
            return conn.request(message, expect, timeout=ADD_TIMEOUT)
        except UserError:
            if dry:
                logger.error("Dry-run (test allocation submission) has failed")
            raise


def dry_run(ctx: Context) -> int:
    params = queue_params(ctx.args)
    params.declared_resources()
    _trial(ctx, AllocDryRunRequest(params), Ack, True)
    logger.info(DRY_RUN_OK)
    ctx.out.empty()
    return 0


def _action(ctx: Context, action: str) -> int:
    queue_id = ctx.args.queue_id
    try:
        ctx.request(AllocQueueRequest(action, queue_id, getattr(ctx.args, "force", False)), Ack)
    except UserError as exc:
        if str(exc) == f"Queue {queue_id} not found":
            raise UserError("Allocation queue not found") from None
        raise
    done = {"pause": "paused", "resume": "resumed", "remove": "removed"}[action]
    logger.info("Allocation queue %d successfully %s", queue_id, done)
    ctx.out.empty()
    return 0


def log(ctx: Context) -> int:
    if ctx.out.mode == "json":
        raise UserError("JSON output mode doesn't support allocation output")
    answer = ctx.request(AllocLogRequest(ctx.args.allocation_id, ctx.args.channel),
                         AllocPathResponse)
    logger.info("Outputting allocation path at %s", answer.path)
    try:
        data = Path(answer.path).read_bytes()
    except OSError as exc:
        raise UserError(f"Cannot read {answer.path}: {exc.strerror}") from None
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


# --- rendering ----------------------------------------------------------------------------

def _summary(q: QueueView) -> str:
    if q.resources is None:
        return "<unknown>"
    return resources_view().descriptor_summary(q.resources, multiline=False)


def queue_json(q: QueueView) -> dict[str, object]:
    from hqshm.server.autoalloc.script import worker_args

    p = q.params
    return {
        "id": q.id, "name": p.name, "state": "Paused" if q.state == "paused" else "Active",
        "manager": "PBS" if p.manager == "pbs" else "Slurm",
        "additional_args": list(p.additional_args), "backlog": p.backlog,
        "max_workers_per_alloc": p.max_workers_per_alloc,
        "max_worker_count": p.max_worker_count, "timelimit": float(p.time_limit),
        "worker_args": worker_args(p),
        "known_worker_resources": (None if q.resources is None
                                   else resources_view().descriptor_json(q.resources)),
        "status": {  # beyond HQ: why it submits nothing now, and its failures
            "reason": q.reason or None, "paused_automatically": q.auto_paused,
            "retry_at": None if q.retry_at is None else formats.format_rfc3339(q.retry_at),
            "next_submit_at": (None if q.next_submit_at is None
                               else formats.format_rfc3339(q.next_submit_at)),
            "failed_submissions": q.failed_submissions,
            "failed_allocations": q.failed_allocations,
            "last_failure": q.last_failure or None,
        },
    }


def list_queues(ctx: Context) -> int:
    queues = ctx.request(AllocListRequest(), AllocQueuesResponse).queues
    out = ctx.out
    if out.mode == "json":
        out.json([queue_json(q) for q in queues])
        return 0
    if out.mode == "quiet":
        return 0
    rows = [[str(q.id), q.state.upper(), str(q.params.backlog),
             str(q.params.max_workers_per_alloc), str(q.params.max_worker_count or 0),
             format_humantime(q.params.time_limit), q.params.manager_name, _summary(q),
             q.params.name or "", ",".join(q.params.additional_args)] for q in queues]
    out.horizontal(["ID", "State", "Backlog size", "Max workers per alloc",
                    "Max worker count", "Timelimit", "Manager", "Worker resources", "Name",
                    "Args"], rows)
    return 0


def info(ctx: Context) -> int:
    answer = ctx.request(AllocInfoRequest(ctx.args.queue_id, ctx.args.filter),
                         AllocInfoResponse)
    out = ctx.out
    allocs = answer.allocations
    if out.mode == "json":
        out.json([{
            "id": a.id, "target_worker_count": a.target_workers,
            "queued_at": formats.format_rfc3339(a.queued_at),
            "started_at": None if a.started_at is None else formats.format_rfc3339(a.started_at),
            "ended_at": None if a.ended_at is None else formats.format_rfc3339(a.ended_at),
            "status": a.state, "workdir": a.workdir} for a in allocs])
        return 0
    if out.mode == "quiet":
        return 0

    def when(ts: float | None) -> str:
        return "" if ts is None else formats.format_local_datetime(ts)

    rows = [[a.id, out.state(a.state.upper(), "allocation"), a.workdir, str(a.target_workers),
             when(a.queued_at), when(a.started_at), when(a.ended_at)] for a in allocs]
    out.horizontal(["ID", "State", "Working directory", "Worker count", "Queue time",
                    "Start time", "Finish time"], rows)
    q = answer.queue
    if q.reason:
        sys.stderr.write(f"Queue {q.id} is not submitting: {q.reason}\n")
    return 0
