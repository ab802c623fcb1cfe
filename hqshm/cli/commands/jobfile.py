"""`hq job submit-file PATH [--job ID]` (spec/jobs.md §12): read, parse, submit, print the id."""

from __future__ import annotations

import os

from hqshm.cli.commands.context import Context
from hqshm.cli.submit.jobfile import CannotRead, parse_job_file
from hqshm.errors import os_error_text
from hqshm.link import submitting


def read_job_file(path: str) -> str:
    """The file as text; failures in HQ's words (Rust's texts: `... (os error 2)`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        error = os_error_text(exc.errno) if exc.errno else str(exc)
        raise CannotRead(path=path, error=error) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CannotRead(path=path, error="stream did not contain valid UTF-8") from None


def run(ctx: Context) -> int:
    path = ctx.args.path
    submission = parse_job_file(read_job_file(path), path, os.getcwd(), job_id=ctx.args.job)
    with ctx.connect() as conn:
        job_id = submitting.submit(conn, submission)
    ctx.out.submitted(job_id)
    return 0
