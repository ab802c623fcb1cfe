"""The `hq` command tree, with HQ's flag names and clap's error texts and exit code (2).

argparse does the parsing; ``HqParser.error`` rewrites its messages into the clap forms that
HQ users' scripts and HQ's tests match (``unexpected argument '--foo' found``, ``the following
required arguments were not provided: --time-limit <TIME_LIMIT>``). Global options are added to
every sub-parser so they may appear anywhere before a task's own arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from hqshm import __version__
from hqshm.errors import UsageError

OUTPUT_MODES = ("cli", "json", "quiet")
COLOR_POLICIES = ("auto", "always", "never")


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter, told its width: argparse builds one for every option it adds,
    and finding the width itself imports shutil (and its compression modules), a few
    milliseconds of every `hq` call, `hq server start` before it listens included."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:  # as shutil.get_terminal_size finds it
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return argparse.HelpFormatter(prog, width=(columns or 80) - 2)


class HqParser(argparse.ArgumentParser):
    """argparse with clap's manners: no abbreviated options, clap's error texts."""

    _argv: tuple[str, ...] = ()
    wanted_sub: str | None = None  # the subcommand to build, of this parser's group
    unbuilt_missing = False  # wanted_sub named no subcommand: the group must be built whole

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _formatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        self._argv = tuple(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        # argparse checks required arguments before it reports unknown ones; clap stops at the
        # first unknown flag, so `hq --foo` must say so rather than ask for a subcommand.
        if message.startswith("the following arguments are required: "):
            unknown = self._unknown_option()
            if unknown is not None:
                message = f"unrecognized arguments: {unknown}"
        raise UsageError(_clap_message(message, self))

    def _unknown_option(self) -> str | None:
        for arg in self._argv:
            if arg == "--":
                return None
            if not arg.startswith("-") or arg == "-" or self._negative_number_matcher.match(arg):
                continue
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
            if name not in self._option_string_actions:
                return arg
        return None


def _metavar(option: str) -> str:
    return f"<{option.lstrip('-').replace('-', '_').upper()}>"


def _flag_name(argument: str) -> str:
    """clap names an unknown long flag without its value: `--foo=bar` is `'--foo'`."""
    if argument.startswith("--") and "=" in argument:
        return argument.split("=", 1)[0]
    return argument


def _clap_message(message: str, parser: argparse.ArgumentParser) -> str:
    unknown = re.match(r"unrecognized arguments: (\S+)", message)
    if unknown:
        text = f"error: unexpected argument '{_flag_name(unknown.group(1))}' found"
    elif message.startswith("the following arguments are required: "):
        names = [n.split("/")[-1] for n in message.split(": ", 1)[1].split(", ")]
        listed = "\n  ".join(f"{n} {_metavar(n)}" if n.startswith("-") else f"<{n.upper()}>"
                             for n in names)
        text = f"error: the following required arguments were not provided:\n  {listed}"
    else:
        choice = re.match(r"argument (\S+?)(?:/\S+)?: invalid choice: '?([^' ]*)'?", message)
        if choice:
            name = choice.group(1)
            shown = f"{name} {_metavar(name)}" if name.startswith("-") else f"<{name.upper()}>"
            text = f"error: invalid value '{choice.group(2)}' for '{shown}'"
        else:
            text = f"error: {message}"
    usage = parser.format_usage().strip().replace("usage: ", "Usage: ", 1)
    return f"{text}\n\n{usage}\n\nFor more information, try '--help'."


def _add_globals(parser: argparse.ArgumentParser, top: bool = False) -> None:
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("global options")
    group.add_argument("--server-dir", metavar="PATH", default=default,
                       help="Directory of the server's instances and access files "
                            "[env: HQ_SERVER_DIR] (default: ~/.hq-server)")
    group.add_argument("--output-mode", choices=OUTPUT_MODES, default=default,
                       help="How to print results [env: HQ_OUTPUT_MODE] (default: cli)")
    group.add_argument("--colors", choices=COLOR_POLICIES, default=default,
                       help="Use colours: auto (on a terminal), always or never")
    group.add_argument("--debug", action="store_true", default=default,
                       help="Debug logging with millisecond timestamps [env: HQ_DEBUG]")


# Only the branch of the tree a command line selects is filled in: building every command's
# options costs a few milliseconds of every `hq` call. No (or an unknown) command: all of it.
_GLOBALS_WITH_VALUE = ("--server-dir", "--output-mode", "--colors")
_COMMANDS = ("server", "worker", "submit", "job", "task", "alloc", "output-log", "journal",
             "local")


def _selected(argv: list[str]) -> tuple[str, ...]:
    """The first two words of a command line (skipping global options and their values)."""
    words: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--":
            break
        if token.startswith("-"):
            skip = token in _GLOBALS_WITH_VALUE
            continue
        words.append(token)
        if len(words) == 2:
            break
    return tuple(words)


class _Unbuilt:
    """Stands for the parser of a subcommand the command line did not select: what would
    configure it is ignored."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


def _sub(subparsers: argparse._SubParsersAction, name: str, help_text: str,
         aliases: tuple[str, ...] = ()) -> HqParser:
    wanted = getattr(subparsers, "wanted", None)
    if wanted is not None and wanted != name and wanted not in aliases:
        return _Unbuilt()  # type: ignore[return-value]
    if wanted is not None:
        subparsers.owner.unbuilt_missing = False
    parser = subparsers.add_parser(name, help=help_text, description=help_text,
                                   aliases=list(aliases))
    _add_globals(parser)
    return parser


def build_parser(argv: list[str] | None = None) -> HqParser:
    words = _selected(argv) if argv is not None else ()
    parser = _build(words)
    if len(words) == 2 and parser.unbuilt_missing:  # not a subcommand: all of that branch
        parser = _build(words[:1])
    return parser


def _build(words: tuple[str, ...]) -> HqParser:
    """The tree, with only the branch of ``words`` filled in (all of it without words)."""
    selected = words[0] if words and words[0] in _COMMANDS else None
    parser = HqParser(
        prog="hq",
        description="hqshm: a HyperQueue-compatible task runtime for HPC clusters and laptops.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"hq {__version__}")
    _add_globals(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=HqParser)
    commands.required = True
    for name, help_text, fill in (
        ("server", "Commands for the server", _server_commands),
        ("worker", "Commands for workers", _worker_commands),
        ("submit", "Submit a job (alias of `hq job submit`)", add_submit_options),
        ("job", "Commands for jobs", _job_commands),
        ("task", "Commands for tasks", _task_commands),
        ("alloc", "Automatic allocation: queues that submit batch jobs running workers",
         _alloc_commands),
        ("output-log", "Read the output streamed with `--stream`", _output_log_commands),
        ("journal", "Read and manage the server's event journal", _journal_commands),
        ("local", "Laptop mode: a server and a node on this machine, in the background",
         _local_commands),
    ):
        if selected not in (None, name):
            # Never parsed, and its help is printed only by `hq --help`, which builds all:
            # each parser costs gettext look-ups on disk (3 a parser, 0.3-0.6 ms).
            continue
        sub = _sub(commands, name, help_text)
        sub.wanted_sub = words[1] if len(words) == 2 else None
        fill(sub)
        parser.unbuilt_missing = sub.unbuilt_missing
    return parser


def _subcommands(parser: HqParser, dest: str) -> argparse._SubParsersAction:
    """A group of subcommands; of those, only the one the command line names is built."""
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND", parser_class=HqParser)
    sub.required = True
    sub.wanted = parser.wanted_sub  # type: ignore[attr-defined]
    sub.owner = parser  # type: ignore[attr-defined]
    parser.unbuilt_missing = parser.wanted_sub is not None  # until _sub builds it
    return sub


def _server_commands(parser: argparse.ArgumentParser) -> None:
    sub = _subcommands(parser, "server_command")
    start = _sub(sub, "start", "Start the server (runs until stopped)")
    start.add_argument("--host", help="Hostname advertised to clients and workers")
    start.add_argument("--idle-timeout", metavar="DURATION",
                       help="Default idle timeout of workers that set none")
    start.add_argument("--client-port", type=_port, default=0, help="Port for clients")
    start.add_argument("--worker-port", type=_port, default=0, help="Port for workers")
    start.add_argument("--journal", metavar="PATH",
                       help="Event journal; if the file exists, the state is restored from it")
    start.add_argument("--journal-flush-period", metavar="DURATION",
                       help="How often the journal is written to disk [default: 30s]")
    start.add_argument("--access-file", metavar="PATH",
                       help="Use a pre-generated access file (hq server generate-access)")
    start.add_argument("--disable-client-authentication-and-encryption", action="store_true",
                       help="Clients need no key (anyone reaching the port can act as you)")
    start.add_argument("--disable-worker-authentication-and-encryption", action="store_true",
                       help="Workers need no key (anyone reaching the port can join)")
    start.add_argument("--scheduler-time-limit", metavar="DURATION", help=argparse.SUPPRESS)
    _sub(sub, "stop", "Stop the server")
    _sub(sub, "info", "Show the server's connection details")
    wait = _sub(sub, "wait", "Wait until a server is reachable")
    wait.add_argument("--timeout", default="5m", metavar="DURATION",
                      help="How long to wait (default 5m)")
    gen = _sub(sub, "generate-access", "Generate an access file for a later `server start`")
    gen.add_argument("access_file", metavar="ACCESS_FILE")
    gen.add_argument("--client-port", type=_port, required=True)
    gen.add_argument("--worker-port", type=_port, required=True)
    gen.add_argument("--host")
    gen.add_argument("--client-host")
    gen.add_argument("--worker-host")
    gen.add_argument("--client-file", metavar="PATH")
    gen.add_argument("--worker-file", metavar="PATH")


def add_worker_start_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpus", help="CPUs: a count (4), a list ([0,1]), groups (2x4, "
                                       "[[0,1],[2,3]]) or range(0-3); detected by default")
    parser.add_argument("--resource", action="append", default=[], metavar="NAME=DEF",
                        help="A generic resource pool, e.g. gpus=[0,1] or mem=sum(4096)")
    parser.add_argument("--group", help="Worker group (for multi-node tasks)")
    parser.add_argument("--coupling", metavar="SPEC",
                        help="Prefer these groups together, e.g. cpus[0]:gpus[0],cpus[1]:gpus[1]"
                             " (optional weight: cpus[0]:gpus[0]=64; default 256)")
    parser.add_argument("--detect-resources", default="all", metavar="LIST",
                        help="all, none, or a comma list of cpus, mem, gpus/nvidia, gpus/amd")
    parser.add_argument("--no-hyper-threading", action="store_true",
                        help="Use only the first hardware thread of each core")
    parser.add_argument("--idle-timeout", metavar="DURATION",
                        help="Stop after having nothing to do for this long")
    parser.add_argument("--overview-interval", metavar="DURATION", help=argparse.SUPPRESS)
    parser.add_argument("--min-utilization", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", default="8s", metavar="DURATION",
                        help="Heartbeat period (default 8s)")
    parser.add_argument("--time-limit", metavar="DURATION", help="Stop after this long")
    parser.add_argument("--manager", choices=("detect", "none", "pbs", "slurm"),
                        default="detect", help=argparse.SUPPRESS)
    parser.add_argument("--hostname", help="Hostname reported to the server")
    parser.add_argument("--on-server-lost", choices=("stop", "finish-running", "reconnect"),
                        default="stop",
                        help="When the server is lost: stop at once, finish running tasks, or "
                             "keep them running and register again with the restarted server "
                             "(reconnect: not in HQ)")
    parser.add_argument("--work-dir", metavar="PATH", help="The worker's private directory")
    parser.add_argument("--retract-check-interval", metavar="DURATION", help=argparse.SUPPRESS)
    parser.add_argument("--memory-binding", choices=("bind", "prefer", "none"), default="bind",
                        help="Memory of a task whose CPUs lie in one NUMA node: bound to it "
                             "(default), preferred there, or left alone (not in HQ)")
    parser.add_argument("--no-pin", action="store_true",
                        help="Do not pin tasks to their CPUs (HQ's behaviour without --pin)")


def _worker_commands(parser: argparse.ArgumentParser) -> None:
    sub = _subcommands(parser, "worker_command")
    add_worker_start_options(_sub(sub, "start", "Start a worker (the same program as hq-node)"))
    stop = _sub(sub, "stop", "Stop workers")
    stop.add_argument("selector", metavar="SELECTOR", help="Worker ids, `last` or `all`")
    lst = _sub(sub, "list", "List workers")
    excl = lst.add_mutually_exclusive_group()
    excl.add_argument("--all", action="store_true", help="Include offline workers")
    excl.add_argument("--filter", choices=("running", "offline"), help="Only these workers")
    info = _sub(sub, "info", "Show details of workers")
    info.add_argument("selector", metavar="SELECTOR")
    address = _sub(sub, "address", "Print a worker's hostname")
    address.add_argument("worker_id", metavar="WORKER_ID")
    wait = _sub(sub, "wait", "Wait until this many workers are connected")
    wait.add_argument("count", type=int, metavar="COUNT")
    hwdetect = _sub(sub, "hwdetect", "Show the resources a worker would detect here")
    hwdetect.add_argument("--no-hyper-threading", action="store_true",
                          help="Use only the first hardware thread of each core")


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="Job name (default: the program's file name)")
    parser.add_argument("--max-fails", type=int, metavar="N",
                        help="Abort the job's other tasks once more than N tasks failed")
    parser.add_argument("--job", type=int, metavar="JOB_ID", help="Submit into an open job")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--each-line", metavar="FILE", help="One task per line of FILE")
    src.add_argument("--from-json", metavar="FILE", help="One task per element of a JSON array")
    parser.add_argument("--array", metavar="IDS", help="Task ids, e.g. 1-10 or 1,3,5-9:2")
    parser.add_argument("--cpus", metavar="REQUEST", help="CPUs per task (default 1)")
    parser.add_argument("--resource", action="append", default=[], metavar="NAME=REQUEST",
                        help="A resource per task, e.g. gpus=1")
    parser.add_argument("--nodes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--time-request", metavar="DURATION",
                        help="Run only on workers that live at least this long")
    parser.add_argument("--weight", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--pin", choices=("taskset", "omp"),
                        help="taskset: run under taskset -c; omp: set OMP_PLACES")
    parser.add_argument("--cwd", metavar="PATH", help="Working directory (default: here)")
    parser.add_argument("--stdout", metavar="SPEC",
                        help="none, PATH, PATH:rm-if-finished (default "
                             "%%{CWD}/job-%%{JOB_ID}/%%{TASK_ID}.stdout)")
    parser.add_argument("--stderr", metavar="SPEC", help="As --stdout")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VAL",
                        help="An environment variable of the tasks")
    parser.add_argument("--priority", type=int, default=None, help="Higher runs first")
    parser.add_argument("--time-limit", metavar="DURATION", help="Kill tasks after this long")
    parser.add_argument("--stream", metavar="DIR",
                        help="Stream all tasks' stdout/stderr into a few files in DIR "
                             "(read them with `hq output-log DIR`)")
    parser.add_argument("--task-dir", action="store_true",
                        help="Give each task a temporary directory (HQ_TASK_DIR)")
    parser.add_argument("--crash-limit", metavar="N",
                        help="N, never-restart or unlimited (default 5)")
    parser.add_argument("--retries", type=int, default=0, metavar="N",
                        help="Re-run a task that exits non-zero up to N times (not in HQ)")
    parser.add_argument("--after", action="append", default=[], metavar="JOB[@TASKS]",
                        help="Start only after these tasks of an earlier job finished; a failed "
                             "one aborts this job's tasks (repeatable; not in HQ)")
    wait = parser.add_mutually_exclusive_group()
    wait.add_argument("--wait", action="store_true", help="Wait until the job completes")
    wait.add_argument("--progress", action="store_true", help="Show progress until it completes")
    parser.add_argument("--stdin", action="store_true", help="Feed this stdin to every task")
    parser.add_argument("--directives", choices=("auto", "file", "stdin", "off"),
                        default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--on-notify", metavar="CMD",
                        help="With --wait or --progress: run CMD with each `hq task notify` "
                             "message of the job's tasks as its last argument")
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="The program and its arguments")


def _job_commands(parser: argparse.ArgumentParser) -> None:
    sub = _subcommands(parser, "job_command")
    lst = _sub(sub, "list", "List jobs")
    excl = lst.add_mutually_exclusive_group()
    excl.add_argument("--all", action="store_true", help="Include completed jobs")
    excl.add_argument("--filter", metavar="STATES",
                      help="Comma list of waiting, running, finished, failed, canceled, "
                           "aborted, opened")
    lst.add_argument("--verbose", action="store_true", help="Show cancel reasons")
    info = _sub(sub, "info", "Show details of jobs")
    info.add_argument("selector", metavar="SELECTOR")
    cancel = _sub(sub, "cancel", "Cancel jobs")
    cancel.add_argument("selector", metavar="SELECTOR")
    cancel.add_argument("--reason", help="Why (shown by job list --verbose)")
    wait = _sub(sub, "wait", "Wait until jobs complete")
    wait.add_argument("selector", metavar="SELECTOR")
    wait.add_argument("--without-close", action="store_true",
                      help="Do not wait for open jobs to be closed")
    progress = _sub(sub, "progress", "Show the progress of jobs until they complete")
    progress.add_argument("selector", metavar="SELECTOR")
    add_submit_options(_sub(sub, "submit", "Submit a job"))
    submit_file = _sub(sub, "submit-file", "Submit a job described by a TOML file")
    submit_file.add_argument("path", metavar="PATH")
    submit_file.add_argument("--job", type=int, metavar="JOB_ID",
                             help="Add the tasks to this open job")
    _sub(sub, "summary", "Count jobs by state")
    forget = _sub(sub, "forget", "Remove completed jobs from the server's memory")
    forget.add_argument("selector", metavar="SELECTOR")
    forget.add_argument("--filter", default="finished,failed,aborted,canceled", metavar="STATES",
                        help="Only jobs in these states (default: all completed ones)")
    ids = _sub(sub, "task-ids", "Print the task ids of jobs, compressed")
    ids.add_argument("selector", metavar="SELECTOR")
    ids.add_argument("--filter", metavar="STATES", help="Only tasks in these states")
    cat = _sub(sub, "cat", "Print the stdout or stderr files of a job's tasks")
    cat.add_argument("selector", metavar="SELECTOR")
    cat.add_argument("stream", choices=("stdout", "stderr"))
    cat.add_argument("--tasks", metavar="IDS", help="Only these task ids")
    cat.add_argument("--task-status", metavar="STATES", help="Only tasks in these states")
    cat.add_argument("--print-task-header", action="store_true",
                     help="Print `# Job <id>, task <id>` before each task's output")
    opened = _sub(sub, "open", "Open a job that later submits add tasks to")
    opened.add_argument("--name", default="job", help="Job name (default: job)")
    opened.add_argument("--max-fails", type=int, metavar="N")
    close = _sub(sub, "close", "Close open jobs")
    close.add_argument("selector", metavar="SELECTOR")
    resubmit = _sub(sub, "resubmit", "Submit a job's failed and canceled tasks again, as a new "
                                     "job (not in HQ 0.2x)")
    resubmit.add_argument("job_id", type=int, metavar="JOB_ID")
    resubmit.add_argument("--filter", default="failed,canceled", metavar="STATES",
                          help="Tasks in these states (default: failed,canceled)")


def _task_commands(parser: argparse.ArgumentParser) -> None:
    sub = _subcommands(parser, "task_command")
    lst = _sub(sub, "list", "List tasks of jobs")
    lst.add_argument("selector", metavar="JOB_SELECTOR")
    lst.add_argument("--tasks", metavar="IDS", help="Only these task ids")
    lst.add_argument("--task-status", metavar="STATES", help="Only tasks in these states")
    lst.add_argument("-v", "--verbose", action="count", default=0,
                     help="Do not truncate errors")
    info = _sub(sub, "info", "Show details of tasks")
    info.add_argument("job", metavar="JOB")
    info.add_argument("tasks", metavar="TASK_IDS")
    info.add_argument("-v", "--verbose", action="count", default=0,
                      help="Do not truncate errors")
    notify = _sub(sub, "notify", "Send a message from inside a running task to clients that "
                                 "wait with --on-notify")
    notify.add_argument("message", metavar="MESSAGE")
    explain = _sub(sub, "explain", "Why a waiting task runs, or does not run, on each worker")
    explain.add_argument("job", metavar="JOB")
    explain.add_argument("task", metavar="TASK_ID")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid digit found in string '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value '{text}'")
    return value


def add_queue_options(parser: argparse.ArgumentParser) -> None:
    """`hq alloc add|dry-run pbs|slurm` (spec/cli.md §8); manager arguments after `--`."""
    parser.add_argument("manager", choices=("pbs", "slurm"), metavar="MANAGER")
    parser.add_argument("-t", "--time-limit", required=True, metavar="DURATION",
                        help="Walltime of each allocation")
    parser.add_argument("-b", "--backlog", type=_positive, default=1,
                        help="Most allocations queued at once (default 1)")
    parser.add_argument("-m", "--max-workers-per-alloc", "--workers-per-alloc",
                        type=_positive, default=1,
                        help="Workers (nodes) per allocation (default 1)")
    parser.add_argument("--max-worker-count", type=_positive,
                        help="Most queued and running workers of the queue")
    parser.add_argument("-n", "--name", help="Queue name (allocation names, directories)")
    parser.add_argument("--cpus", help="CPUs of each worker")
    parser.add_argument("--resource", action="append", default=[], metavar="NAME=DEF",
                        help="A resource of each worker")
    parser.add_argument("--group", help="Worker group")
    parser.add_argument("--coupling", metavar="SPEC", help="Workers' --coupling")
    parser.add_argument("--detect-resources", metavar="LIST", help="Workers' --detect-resources")
    parser.add_argument("--no-hyper-threading", action="store_true")
    parser.add_argument("--idle-timeout", metavar="DURATION",
                        help="Workers end after being idle this long (default 5m)")
    parser.add_argument("--overview-interval", metavar="DURATION", help=argparse.SUPPRESS)
    parser.add_argument("--min-utilization", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--on-server-lost", choices=("stop", "finish-running"),
                        default="finish-running")
    parser.add_argument("--no-dry-run", action="store_true",
                        help="Do not submit a test allocation first")
    parser.add_argument("--worker-start-cmd", metavar="CMD", help="Run before the worker")
    parser.add_argument("--worker-stop-cmd", metavar="CMD", help="Run after the worker")
    parser.add_argument("--worker-wrap-cmd", metavar="CMD", help="Prefix of the worker command")
    parser.add_argument("--worker-time-limit", metavar="DURATION",
                        help="Workers' time limit (at most --time-limit)")


def _alloc_commands(parser: argparse.ArgumentParser) -> None:
    sub = _subcommands(parser, "alloc_command")
    _sub(sub, "list", "List allocation queues")
    info = _sub(sub, "info", "Allocations of a queue (and why it submits nothing)")
    info.add_argument("queue_id", type=_positive, metavar="QUEUE_ID")
    info.add_argument("--filter", choices=("queued", "running", "finished", "failed"))
    log = _sub(sub, "log", "Print an allocation's stdout or stderr", aliases=("cat",))
    log.add_argument("allocation_id", metavar="ALLOCATION_ID")
    log.add_argument("channel", choices=("stdout", "stderr"), metavar="CHANNEL")
    add_queue_options(_sub(sub, "add", "Create an allocation queue"))
    add_queue_options(_sub(sub, "dry-run", "Submit a test allocation and cancel it"))
    for name, text in (("pause", "Pause a queue"), ("resume", "Resume a queue"),
                       ("remove", "Remove a queue")):
        action = _sub(sub, name, text)
        action.add_argument("queue_id", type=_positive, metavar="QUEUE_ID")
        if name == "remove":
            action.add_argument("--force", action="store_true",
                                help="Also cancel its running allocations")


def _journal_commands(parser: argparse.ArgumentParser) -> None:
    sub = _subcommands(parser, "journal_command")
    export = _sub(sub, "export", "Print the events of a journal file as JSON lines (offline)")
    export.add_argument("journal", metavar="JOURNAL", help="The journal file")
    _sub(sub, "replay", "Print the running server's past events as JSON lines")
    _sub(sub, "stream", "Print past events, then live ones until the server stops")
    _sub(sub, "prune", "Rewrite the journal without completed jobs and offline workers")
    _sub(sub, "flush", "Write the journal to disk now")


def _output_log_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="DIR", help="The stream directory (`--stream DIR`)")
    parser.add_argument("--server-uid", help="Read only the streams of this server instance")
    sub = _subcommands(parser, "log_command")
    _sub(sub, "summary", "Sizes and counts of the streams")
    _sub(sub, "jobs", "Job ids found in the streams")
    show = _sub(sub, "show", "All output, ordered by time, each chunk prefixed `job.task:channel>`")
    show.add_argument("--job", type=int, metavar="ID")
    show.add_argument("--channel", choices=("stdout", "stderr"))
    cat = _sub(sub, "cat", "The raw output of a job's tasks, by task id")
    cat.add_argument("job", type=int, metavar="JOB")
    cat.add_argument("channel", choices=("stdout", "stderr"))
    cat.add_argument("--task", metavar="IDS", help="These tasks, in this order")
    cat.add_argument("--allow-unfinished", action="store_true",
                     help="Also print streams of tasks that have not finished")
    export = _sub(sub, "export", "A job's stdout per task, as JSON")
    export.add_argument("job", type=int, metavar="JOB")
    export.add_argument("--task", metavar="IDS", help="These tasks, in this order")


def _local_commands(parser: argparse.ArgumentParser) -> None:
    sub = _subcommands(parser, "local_command")
    start = _sub(sub, "start", "Start a server and a node here, in the background")
    start.add_argument("--cpus", help="CPUs for the node (default: all of this machine)")
    _sub(sub, "stop", "Stop the laptop-mode server and node")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port '{text}'") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


@contextlib.contextmanager
def _untranslated() -> Iterator[None]:
    """argparse's own texts as written, while we parse. argparse looks each one up with
    gettext, which imports `locale` and searches the disk for a catalogue on every look-up
    (1.4 ms of every `hq` command, issue 9, item 2); Python ships no catalogue for argparse and
    HQ's command line is English. Put back after, for any other user of argparse here."""
    saved = getattr(argparse, "_", None), getattr(argparse, "ngettext", None)
    if None in saved:  # an argparse that translates otherwise: leave it be
        yield
        return
    argparse._ = str  # type: ignore[attr-defined]
    argparse.ngettext = _ngettext  # type: ignore[attr-defined]
    try:
        yield
    finally:
        argparse._, argparse.ngettext = saved  # type: ignore[attr-defined]


def _ngettext(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


def parse(argv: list[str]) -> argparse.Namespace:
    with _untranslated():
        return _parse(argv)


def _parse(argv: list[str]) -> argparse.Namespace:
    extra: list[str] = []
    if _selected(argv) in (("alloc", "add"), ("alloc", "dry-run")):
        # Everything after `--` goes verbatim to qsub/sbatch (argparse would take a positional
        # followed by REMAINDER as the start of the remainder).
        if "--" in argv:
            cut = argv.index("--")
            argv, extra = argv[:cut], argv[cut + 1:]
        args = build_parser(argv).parse_args(argv)
        args.additional_args = extra
        return args
    return build_parser(argv).parse_args(argv)


if __name__ == "__main__":  # pragma: no cover
    print(parse(sys.argv[1:]))
