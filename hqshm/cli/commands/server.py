"""`hq server start|stop|info|wait|generate-access` (spec/cli.md §3)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hqshm import __version__
from hqshm.cli.commands.context import Context
from hqshm.errors import UserError
from hqshm.link import access, serverdir
from hqshm.link.requests import ServerInfoRequest, StopServerRequest
from hqshm.link.responses import Ack, ServerInfo
from hqshm.model.durations import format_humantime, parse_hms_or_human

logger = logging.getLogger("hqshm.cli")


class WaitTimeout(UserError):  # spec/cli.md §3, hq server wait
    template = ("Timeout after {duration}: Could not connect to server at `{dir}`. "
                "Make sure that the server is running.")


def run(ctx: Context, command: str) -> int:
    return {
        "start": start,
        "stop": stop,
        "info": info,
        "wait": wait,
        "generate-access": generate_access,
    }[command](ctx)


def start(ctx: Context) -> int:
    """Serve until stopped. Clients that come while this process is still starting (imports,
    journal, binding) find ``hq-starting`` and wait for ``hq-current`` instead of failing."""
    server_dir = ctx.server_dir
    serverdir.mark_starting(server_dir)
    try:
        return _start(ctx, server_dir)
    except KeyboardInterrupt:
        return 0  # Ctrl-C while checking for a live server or importing the server
    finally:
        serverdir.unmark_starting(server_dir)


def _start(ctx: Context, server_dir: Path) -> int:
    from hqshm.server.process import Server, ServerConfig, check_not_online

    args = ctx.args
    idle = parse_hms_or_human(args.idle_timeout) if args.idle_timeout else None
    config = ServerConfig(
        server_dir=server_dir,
        host=args.host,
        client_port=args.client_port,
        worker_port=args.worker_port,
        idle_timeout=idle,
        access_file=Path(args.access_file) if args.access_file else None,
        disable_client_auth=args.disable_client_authentication_and_encryption,
        disable_worker_auth=args.disable_worker_authentication_and_encryption,
        journal=Path(args.journal).absolute() if args.journal else None,
        journal_flush_period=parse_hms_or_human(args.journal_flush_period)
        if args.journal_flush_period else 30.0,
    )
    check_not_online(server_dir)
    logger.info("No online server found, starting a new server")
    server = None
    try:
        server = Server(config)

        def ready(info: ServerInfo) -> None:
            # hq-current is published: clients no longer need the marker.
            serverdir.unmark_starting(server_dir)
            ctx.out.server_info(info, server_dir=str(server_dir))

        server.run(on_ready=ready)
    except KeyboardInterrupt:
        # Ctrl-C before the server's own SIGINT handler was in place (start-up) is a stop
        # too: exit 0, and no hq-current left behind (spec/cli.md §3).
        logger.info("Stopping server")
        if server is not None and server.instance is not None:
            serverdir.unlink_current(server_dir, server.instance)
    return 0


def stop(ctx: Context) -> int:
    ctx.request(StopServerRequest(), Ack)
    logger.info("Stopping server")
    ctx.out.empty()
    return 0


def info(ctx: Context) -> int:
    response = ctx.request(ServerInfoRequest(), ServerInfo)
    ctx.out.server_info(response)
    return 0


def wait(ctx: Context) -> int:
    timeout = parse_hms_or_human(ctx.args.timeout)
    logger.info("Waiting for server to become available (timeout: %s)...",
                format_humantime(timeout))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with ctx.connect() as conn:
                conn.request(ServerInfoRequest(), ServerInfo, timeout=5.0)
            logger.info("Successfully connected to server")
            ctx.out.empty()
            return 0
        except UserError:
            pass
        if time.monotonic() >= deadline:
            raise WaitTimeout(duration=format_humantime(timeout), dir=ctx.server_dir)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def generate_access(ctx: Context) -> int:
    import socket

    args = ctx.args
    host = args.host or socket.gethostname()
    record = access.generate(
        __version__,
        client_host=args.client_host or host,
        client_port=args.client_port,
        worker_host=args.worker_host or host,
        worker_port=args.worker_port,
    )
    access.write_access_file(args.access_file, record)
    if args.client_file:
        access.write_access_file(args.client_file, record, part="client")
    if args.worker_file:
        access.write_access_file(args.worker_file, record, part="worker")
    ctx.out.empty()
    return 0

