"""`hq server start|stop|info|wait|generate-access` (spec/cli.md §3)."""

from __future__ import annotations

import logging
import time

from hqshm import __version__
from hqshm.cli.commands.context import Context
from hqshm.errors import UserError
from hqshm.link import access, serverdir
from hqshm.link.requests import ServerInfoRequest, StopServerRequest
from hqshm.link.responses import Ack, ServerInfo
from hqshm.model.durations import format_humantime, parse_hms_or_human
from hqshm.server.endpoints import Listeners, ServerConfig

logger = logging.getLogger("hqshm.cli")


class WaitTimeout(UserError):  # spec/cli.md §3, hq server wait
    template = ("Timeout after {duration}: Could not connect to server at `{dir}`. "
                "Make sure that the server is running.")


def run(ctx: Context, command: str) -> int:
    return {
        "stop": stop,
        "info": info,
        "wait": wait,
        "generate-access": generate_access,
    }[command](ctx)


def serve(ctx: Context, config: ServerConfig, listeners: Listeners | None) -> int:
    """Build the server on the ports that hqshm.cli.serverstart bound and published (None: it
    could not read the journal's server UID; they are bound once the journal is loaded) and
    run it."""
    from hqshm.server.process import Server

    server_dir = config.server_dir
    server = Server(config, listeners)

    def ready(info: ServerInfo) -> None:
        # The loop answers from now on: clients no longer need the marker.
        serverdir.unmark_starting(server_dir)
        ctx.out.server_info(info, server_dir=str(server_dir))

    server.run(on_ready=ready)  # SIGINT and SIGTERM stop it (held until then: serverstart)
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

