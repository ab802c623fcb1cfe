"""`hq server start`, its first steps: listen and publish before the heavy imports.

`hq` sends `server start` here before it imports the renderer, so the access file is written
within tens of milliseconds of exec (issue 8, item 7); then hqshm.cli.commands.server builds
and runs the server on the endpoints opened here. A journal whose first record cannot be read
here is loaded in full before anything is published (its server UID is in it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hqshm.link import serverdir
from hqshm.model.durations import parse_hms_or_human
from hqshm.server.endpoints import (
    Listeners,
    ServerConfig,
    bind_listeners,
    check_not_online,
    journal_server_uid,
)

if TYPE_CHECKING:
    from hqshm.cli.render import Output

logger = logging.getLogger("hqshm.cli")

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # a stop, like `hq server stop`


def server_config(args: argparse.Namespace, server_dir: Path) -> ServerConfig:
    return ServerConfig(
        server_dir=server_dir,
        host=args.host,
        client_port=args.client_port,
        worker_port=args.worker_port,
        idle_timeout=parse_hms_or_human(args.idle_timeout) if args.idle_timeout else None,
        access_file=Path(args.access_file) if args.access_file else None,
        disable_client_auth=args.disable_client_authentication_and_encryption,
        disable_worker_auth=args.disable_worker_authentication_and_encryption,
        journal=Path(args.journal).absolute() if args.journal else None,
        journal_flush_period=parse_hms_or_human(args.journal_flush_period)
        if args.journal_flush_period else 30.0,
    )


def start(args: argparse.Namespace, output: Callable[[], Output]) -> int:
    """Serve until stopped. Clients that come while this process is still starting find
    ``hq-starting`` and wait for ``hq-current``, then for the loop to answer."""
    server_dir = serverdir.resolve_server_dir(getattr(args, "server_dir", None), os.environ)
    # SIGINT and SIGTERM during start-up are a stop too: exit 0, nothing left published
    # (spec/cli.md §3). They are held until the server's loop has its handlers (Server.run
    # unblocks them, and one that came meanwhile stops it at once, cleanly), rather than
    # raised into whatever start-up was doing: a KeyboardInterrupt there could leave sockets
    # open that hang the exit, and SIGTERM would kill the process with its access file
    # published. Held, not ignored, they arrive even when the parent left them ignored (a
    # shell's background job).
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    serverdir.mark_starting(server_dir)
    listeners: Listeners | None = None
    try:
        config = server_config(args, server_dir)
        check_not_online(server_dir)
        logger.info("No online server found, starting a new server")
        known, uid = journal_server_uid(config.journal)
        if known:
            listeners = bind_listeners(config, uid)
            listeners.publish(server_dir)
        from hqshm.cli.commands.context import Context
        from hqshm.cli.commands.server import serve

        served, listeners = listeners, None  # the server closes them from now on
        return serve(Context(args, output()), config, served)
    finally:
        if listeners is not None:  # the server did not get to start
            listeners.unpublish(server_dir)
            listeners.close()
        serverdir.unmark_starting(server_dir)
        # As it was (a start that failed before the server ran; one that ran unblocked them).
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
