"""`hq submit` / `hq job submit` (spec/cli.md §5, jobs.md §3-§5)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from hqshm.cli.commands.context import Context, id_ranges
from hqshm.cli.render import Output
from hqshm.cli.submit import directives
from hqshm.errors import UsageError, UserError
from hqshm.link import submitting
from hqshm.link.client import ClientConnection
from hqshm.link.commandlog import CommandLogger
from hqshm.link.requests import JobProgressRequest, Selector, WaitJobsRequest
from hqshm.link.responses import JobProgressResponse, Notification, WaitJobsResponse
from hqshm.model import placeholders, resourcespec, submit
from hqshm.model.arrays import parse_array, parse_single
from hqshm.model.durations import parse_hms_or_human
from hqshm.model.submission import ArraySubmission, StdioDesc, TaskRef

logger = CommandLogger("hqshm.cli")

RM_IF_FINISHED = ":rm-if-finished"
PROGRESS_PERIOD = 0.5


def _usage(parser_hint: str) -> UsageError:
    return UsageError(f"error: {parser_hint}\n\nFor more information, try '--help'.")


def parse_stdio(text: str | None, default: str) -> StdioDesc | None:
    """`none`, `PATH`, `PATH:rm-if-finished` or `:rm-if-finished` (jobs.md §4.3); None when
    not given, for the builder's default."""
    if text is None:
        return None
    if text == "none":
        return StdioDesc(StdioDesc.NONE)
    if text.endswith(RM_IF_FINISHED):
        path = text[: -len(RM_IF_FINISHED)] or default
        if ":" in path and path != default:
            raise _usage(f"invalid value '{text}' for output path")
        return StdioDesc(StdioDesc.FILE, path, rm_if_finished=True)
    if ":" in text:
        raise _usage(
            f"invalid value '{text}' for output path: the only suffix is `{RM_IF_FINISHED}`"
        )
    return StdioDesc(StdioDesc.FILE, text)


def parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    duplicate = False
    for item in items:
        key, _, value = item.partition("=")
        if key in env:
            duplicate = True
            continue
        env[key] = value
    if duplicate:
        logger.warning(
            "Some environment variables were ignored. Check if you haven't used duplicate keys."
        )
    return env


def parse_resources(items: list[str]) -> dict[str, str]:
    """`--resource NAME=REQUEST`, each name once; the builder parses the requests."""
    resources: dict[str, str] = {}
    for item in items:
        name, value = resourcespec.parse_resource_arg(item)
        if name in resources:
            raise resourcespec.RequestDefinedTwice(name=name)
        resources[name] = value
    return resources


def parse_crash_limit(text: str | None) -> int | str | None:
    """A number or one of the builder's words; the builder refuses 0."""
    if text is None or text in submit.CRASH_LIMIT_WORDS:
        return text
    try:
        value = int(text)
    except ValueError:
        raise _usage(
            f"invalid value '{text}' for '--crash-limit <CRASH_LIMIT>': a number, "
            "never-restart or unlimited"
        ) from None
    if value < 0:
        raise _usage(f"invalid value '{text}' for '--crash-limit <CRASH_LIMIT>'")
    return value


def read_entries(args: object) -> list[bytes] | None:
    """Task entries, as bytes: HQ hands --each-line lines to tasks exactly as they are."""
    each_line = getattr(args, "each_line", None)
    from_json = getattr(args, "from_json", None)
    if each_line:
        logger.info("Reading file: %s", each_line)
        data = _read(each_line)
        if len(data) > 100 * 1024 * 1024:
            logger.warning("The file %s is larger than 100 MB", each_line)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        return lines
    if from_json:
        logger.info("Reading json file: %s", from_json)
        try:
            document = json.loads(_read(from_json))
        except json.JSONDecodeError as exc:
            raise UserError(f"{from_json}: invalid JSON: {exc}") from None
        if not isinstance(document, list):
            raise UserError(
                f"{from_json}: The top element of the provided JSON file has to be an array"
            )
        return [
            json.dumps(e, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
            for e in document
        ]
    return None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"Cannot read {path}: {exc.strerror}") from None


def apply_directives(
    args: argparse.Namespace, command: list[str], stdin: bytes
) -> tuple[argparse.Namespace, list[str]]:
    """The options and command after a script's `#HQ` lines and shebang (jobs.md §11)."""
    if args.directives == "stdin":
        head = directives.scan(stdin)
    elif directives.reads_file(args.directives, command):
        data = _read_head(command[0])
        if data is None:
            return args, command  # the worker reports what is wrong with the program
        logger.debug("Extracting directives from file: %s", command[0])
        head = directives.scan(data)
    else:
        return args, command
    if head.arguments:
        args = directives.merge(args, directives.parse_arguments(head.arguments))
    if not args.stdin:
        command = directives.with_shebang(command, head)
    return args, command


def _read_head(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(directives.SCAN_LIMIT)
    except OSError:
        return None


def build_request(ctx: Context) -> ArraySubmission:
    """The command line (after its script's directives) as the builder's typed values."""
    args = ctx.args
    command = list(args.program)
    if command and command[0] == "--":
        command = command[1:]
    elif command and command[0].startswith("-") and command[0] != "-":
        raise _usage(f"unexpected argument '{command[0]}' found")
    if not command:
        raise _usage("the following required arguments were not provided:\n  <COMMANDS>...")
    if args.directives == "stdin" and not args.stdin:
        raise directives.DirectivesNeedStdin()
    stdin = _read_stdin() if args.stdin else b""
    args, command = apply_directives(args, command, stdin)
    built = submit.array_submission(
        command,
        submit_dir=os.getcwd(),
        name=args.name,
        max_fails=args.max_fails,
        job_id=args.job,
        cpus=args.cpus,
        resources=parse_resources(args.resource),
        nodes=args.nodes,
        time_request=parse_hms_or_human(args.time_request) if args.time_request else 0.0,
        weight=args.weight,
        pin=args.pin,
        cwd=args.cwd,
        stdout=parse_stdio(args.stdout, placeholders.DEFAULT_STDOUT),
        stderr=parse_stdio(args.stderr, placeholders.DEFAULT_STDERR),
        stream_dir=args.stream,
        retries=args.retries,
        ids=id_ranges(parse_array(args.array)) if args.array is not None else (),
        entries=read_entries(args),
        env=parse_env(args.env),
        priority=args.priority or 0,
        time_limit=parse_hms_or_human(args.time_limit) if args.time_limit else None,
        crash_limit=parse_crash_limit(args.crash_limit),
        task_dir=args.task_dir,
        stdin=stdin,
        after=[parse_after(text) for text in args.after],
    )
    for warning in built.warnings:  # spec/cli.md §5.3
        logger.warning("%s", warning)
    return built.submission


def _read_stdin() -> bytes:
    sys.stdout.write("Reading data from stdin. In the interactive mode press Ctrl-D to submit.\n")
    sys.stdout.flush()
    return sys.stdin.buffer.read()


def parse_after(text: str) -> TaskRef:
    """`JOB` (all its tasks) or `JOB@TASKS` (an id list), for --after."""
    job_text, _, tasks_text = text.partition("@")
    try:
        job_id = parse_single(job_text)
    except UserError:
        raise UserError(
            f"invalid --after value '{text}': expected JOB or JOB@TASKS, e.g. "
            "`--after 3` or `--after 3@0-9`"
        ) from None
    return TaskRef(job_id, id_ranges(parse_array(tasks_text)) if tasks_text else None)


def run(ctx: Context) -> int:
    on_notify = OnNotify(ctx.args.on_notify) if ctx.args.on_notify else None
    if on_notify is not None and not (ctx.args.wait or ctx.args.progress):
        raise UserError("--on-notify needs --wait or --progress: notifications reach a client "
                        "only while it waits for the job")
    submission = build_request(ctx)
    with ctx.connect() as conn:
        job_id = submitting.submit(conn, submission)
        ctx.out.submitted(job_id)
        selector = Selector("ids", ((job_id, job_id, 1),))
        if ctx.args.wait:
            conn.request(WaitJobsRequest(selector, notifications=on_notify is not None),
                         WaitJobsResponse, timeout=None, on_notification=on_notify)
        elif ctx.args.progress:
            show_progress(conn, selector, ctx.out, on_notify)
    return 0


def show_progress(conn: ClientConnection, selector: Selector, out: Output,
                  on_notify: OnNotify | None = None) -> None:
    """Redraw the progress line until every selected job is done.

    With ``on_notify`` a waiting request (with notifications) runs alongside the polling, so
    notifications are handled as they come; its answer is drained at the end.
    """
    waiting = on_notify is not None  # the WaitJobsResponse is still to come
    if waiting:
        conn.send(WaitJobsRequest(selector, notifications=True))
    while True:
        response = conn.request(JobProgressRequest(selector), JobProgressResponse,
                                on_notification=on_notify)
        done = all(j.counts[0] + j.counts[1] == 0 and not j.is_open for j in response.jobs)
        out.progress(response.jobs, final=done)
        if done:
            break
        if on_notify is None:
            time.sleep(PROGRESS_PERIOD)
            continue
        deadline = time.monotonic() + PROGRESS_PERIOD
        while (left := deadline - time.monotonic()) > 0:
            message = conn.receive(left)
            if isinstance(message, Notification):
                on_notify(message)
            elif isinstance(message, WaitJobsResponse):
                waiting = False
    while waiting:
        message = conn.receive(None)
        if isinstance(message, Notification):
            on_notify(message)  # type: ignore[misc]
        waiting = not isinstance(message, WaitJobsResponse)


class OnNotify:
    """`--on-notify CMD`: run CMD with the message as its last argument, one at a time."""

    def __init__(self, command: str) -> None:
        import shlex  # here: few submits notify, and subprocess costs every command 4 ms

        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise UserError(f"invalid --on-notify command: {exc}") from None
        if not self.argv:
            raise UserError("--on-notify needs a command")

    def __call__(self, note: Notification) -> None:
        env = dict(os.environ, HQ_JOB_ID=str(note.job_id), HQ_TASK_ID=str(note.task_id),
                   HQ_WORKER_ID=str(note.worker_id))
        argv = [*self.argv, note.message.decode("utf-8", "replace")]
        import subprocess

        try:
            result = subprocess.run(argv, env=env, check=False)
        except OSError as exc:
            logger.warning("Cannot run the --on-notify command %s: %s", self.argv[0], exc)
            return
        if result.returncode != 0:
            logger.warning("The --on-notify command exited with code %d", result.returncode)
