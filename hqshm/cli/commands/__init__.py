"""`hq` commands, one module per group; ``dispatch`` picks the function for parsed arguments.

Each command reads its arguments from a ``Context``, reaches the server through ``hqshm.link``
(or runs a server or node itself) and prints only through ``hqshm.cli.render``.
"""

from __future__ import annotations

import argparse

from hqshm.cli.commands.context import Context
from hqshm.cli.render import Output


def dispatch(args: argparse.Namespace, out: Output) -> int:
    ctx = Context(args, out)
    command = args.command
    if command == "server":
        from hqshm.cli.commands import server

        return server.run(ctx, args.server_command)
    if command == "worker":
        from hqshm.cli.commands import worker

        return worker.run(ctx, args.worker_command)
    if command == "submit" or (command == "job" and args.job_command == "submit"):
        from hqshm.cli.commands import submit

        return submit.run(ctx)
    if command == "job" and args.job_command == "submit-file":
        from hqshm.cli.commands import jobfile

        return jobfile.run(ctx)
    if command == "job":
        from hqshm.cli.commands import jobs

        return jobs.run(ctx, args.job_command)
    if command == "task":
        from hqshm.cli.commands import tasks

        return tasks.run(ctx, args.task_command)
    if command == "alloc":
        from hqshm.cli.commands import alloc

        return alloc.run(ctx, args.alloc_command)
    if command == "output-log":
        from hqshm.cli.commands import outputlog

        return outputlog.run(ctx, args.log_command)
    if command == "journal":
        from hqshm.cli.commands import journal

        return journal.run(ctx, args.journal_command)
    if command == "local":
        from hqshm.cli.commands import local

        return local.run(ctx, args.local_command)
    raise AssertionError(f"unknown command {command}")
