"""`hq worker start|stop|list|info|address|wait|hwdetect` (spec/cli.md §4); `hq-node` is
`worker start`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hqshm.cli.commands.context import Context, selector
from hqshm.errors import UsageError, UserError
from hqshm.model import resourcespec
from hqshm.model.arrays import parse_single
from hqshm.model.descriptor import build_descriptor, parse_coupling
from hqshm.model.durations import parse_hms_or_human
from hqshm.node.config import DETECTABLE, ServerEndpoint, system_root

# `hq worker start` registers before it imports what only the other commands use (requests,
# responses, views) and what it prints once registered (the views and their layouts).
if TYPE_CHECKING:
    from hqshm.model.workerconfig import WorkerConfiguration

logger = logging.getLogger("hqshm.cli")

DETECT_ALL = DETECTABLE


def run(ctx: Context, command: str) -> int:
    return {
        "start": start,
        "stop": stop,
        "list": list_workers,
        "info": info,
        "address": address,
        "wait": wait,
        "hwdetect": hwdetect,
    }[command](ctx)


def _detect(text: str) -> frozenset[str]:
    if text == "all":
        return frozenset(DETECT_ALL)
    if text == "none":
        return frozenset()
    items = [t.strip() for t in text.split(",") if t.strip()]
    for item in items:
        if item not in DETECT_ALL:
            raise UsageError(
                f"error: invalid value '{text}' for '--detect-resources "
                f"<DETECT_RESOURCES>': unknown component '{item}' (use all, none, "
                f"or a comma list of {', '.join(DETECT_ALL)})"
            )
    return frozenset(items)


def start(ctx: Context) -> int:
    from hqshm.node.config import NodeOptions
    from hqshm.node.loop import Node

    args = ctx.args
    resources = []
    for arg in args.resource:
        name, definition = resourcespec.parse_resource_arg(arg)
        if name == "cpus" and args.cpus is not None:
            raise UserError("Parameters --cpus and --resource cpus=... cannot be combined")
        pool = (
            resourcespec.parse_cpus(definition)
            if name == "cpus"
            else resourcespec.parse_pool(name, definition)
        )
        resources.append(pool)
    names = [p.name for p in resources]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"Resource {name} defined twice")
    detect = _detect(args.detect_resources)
    cpus = resourcespec.parse_cpus(args.cpus) if args.cpus else None
    if cpus is None and "cpus" not in names and "cpus" not in detect:
        raise UserError(
            "You have to specify --cpus explicitly when opting out of CPU automatic detection"
        )
    if not 0.0 <= args.min_utilization <= 1.0:
        raise UserError("Minimal utilization has to be in the interval [0.0, 1.0].")
    coupling = parse_coupling(args.coupling) if args.coupling is not None else ()
    options = NodeOptions(
        server=server_endpoint(ctx),
        cpus=cpus,
        resources=tuple(resources),
        coupling=coupling,
        detect=detect,
        no_hyper_threading=args.no_hyper_threading,
        hostname=args.hostname,
        work_dir=args.work_dir,
        heartbeat=parse_hms_or_human(args.heartbeat),
        idle_timeout=parse_hms_or_human(args.idle_timeout) if args.idle_timeout else None,
        time_limit=parse_hms_or_human(args.time_limit) if args.time_limit else None,
        on_server_lost=args.on_server_lost,
        group=args.group,
        manager=args.manager,
        min_utilization=args.min_utilization,
        pin=not args.no_pin,
        memory_binding=args.memory_binding,
        system_root=system_root(ctx.env),
        env=ctx.env,
        rediscover=rediscover_endpoint(ctx) if args.on_server_lost == "reconnect" else None,
    )

    def registered(worker_id: int, config: WorkerConfiguration) -> None:
        from hqshm.link.details import WorkerView

        ctx.out.worker_info([WorkerView(worker_id, "RUNNING", config, time.time(), None)])

    node = Node(options, on_registered=registered)
    return node.run()


def server_endpoint(ctx: Context, wait: bool = True) -> ServerEndpoint:
    """Where the node connects: the worker part of the server directory's access file
    (``wait``: a server still starting there gets a few seconds to publish it)."""
    from hqshm import __version__
    from hqshm.link import access, serverdir

    find = serverdir.find_access_file_waiting if wait else serverdir.find_access_file
    path = find(ctx.server_dir, default_dir=serverdir.default_server_dir(ctx.env))
    record = access.read_access_file(path)
    access.check_version(record, __version__)
    if record.worker is None:
        raise UserError(f"The access file {path} holds no worker credentials "
                        "(it is a client-only file)")
    return ServerEndpoint(record.worker.host, record.worker.port,
                          access.secret_bytes(record.worker))


def rediscover_endpoint(ctx: Context) -> Callable[[], ServerEndpoint | None]:
    """For a node that outlives its server (--on-server-lost reconnect): where the server is
    now, read again from its directory at each attempt (a restarted server has new ports and
    may have new keys); None while there is no readable access file. Never waits: the node's
    loop calls it."""

    def rediscover() -> ServerEndpoint | None:
        try:
            return server_endpoint(ctx, wait=False)
        except (UserError, OSError, ValueError) as exc:
            logger.debug("No server to register with yet: %s", exc)
            return None

    return rediscover


def hwdetect(ctx: Context) -> int:
    """What `worker start` would detect with default detection; no server needed (§3.4)."""
    from hqshm.cli import resourceview
    from hqshm.node.config import detect_resources

    detected = detect_resources(
        DETECT_ALL,
        ctx.env,
        root=system_root(ctx.env),
        no_hyper_threading=ctx.args.no_hyper_threading,
    )
    desc = build_descriptor(detected.pools)
    if ctx.out.mode == "json":
        ctx.out.json(resourceview.descriptor_json(desc))
    elif ctx.out.mode == "cli":
        full = "\n".join(
            f"{pool.name}: {resourceview.pool_full_description(pool)}" for pool in desc.pools
        )
        ctx.out.line(
            f"Summary:\n{resourceview.descriptor_summary(desc, multiline=True)}\n\n"
            f"Full Description:\n{full}"
        )
    return 0


def stop(ctx: Context) -> int:
    from hqshm.link.requests import StopWorkersRequest
    from hqshm.link.responses import StopWorkersResponse

    response = ctx.request(StopWorkersRequest(selector(ctx.args.selector)), StopWorkersResponse)
    for wid, outcome in response.results:
        if outcome == "stopped":
            logger.info("Worker %d stopped", wid)
        elif outcome == "already-stopped":
            logger.warning("Stopping worker %d failed; worker is already stopped", wid)
        else:
            logger.error("Stopping worker %d failed; worker not found", wid)
    ctx.out.empty()
    return 0


def list_workers(ctx: Context) -> int:
    from hqshm.link.details import WorkerListResponse
    from hqshm.link.requests import WorkerListRequest

    args = ctx.args
    offline = args.all or args.filter == "offline"
    online = args.filter != "offline"
    request = WorkerListRequest(include_offline=offline, include_online=online)
    response = ctx.request(request, WorkerListResponse)
    ctx.out.worker_list(response.workers)
    return 0


def info(ctx: Context) -> int:
    from hqshm.link.details import WorkerListResponse
    from hqshm.link.requests import WorkerInfoRequest

    response = ctx.request(WorkerInfoRequest(selector(ctx.args.selector)), WorkerListResponse)
    for wid in response.missing:
        logger.error("Worker %d not found", wid)
    ctx.out.worker_info(response.workers)
    return 0


def address(ctx: Context) -> int:
    from hqshm.link.details import WorkerListResponse
    from hqshm.link.requests import Selector, WorkerInfoRequest

    wid = parse_single(ctx.args.worker_id)
    response = ctx.request(WorkerInfoRequest(Selector("ids", ((wid, wid, 1),))), WorkerListResponse)
    if not response.workers:
        raise UserError(f"Worker {wid} not found")
    ctx.out.line(response.workers[0].config.hostname)
    return 0


def wait(ctx: Context) -> int:
    from hqshm.link.details import WorkerListResponse
    from hqshm.link.requests import WorkerListRequest

    while True:
        response = ctx.request(WorkerListRequest(), WorkerListResponse)
        if len(response.workers) >= ctx.args.count:
            ctx.out.empty()
            return 0
        time.sleep(1.0)
