"""Entry points of `hq` and `hq-node`: parse, set up logging and output, run, map errors.

The only place where an error becomes a message and an exit code (spec/cli.md §1.2): user
errors exit 1 (in JSON mode as ``{"error": ...}`` on stdout), parse errors exit 2, and anything
else is a bug, printed as one line with a hint to rerun with --debug for the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hqshm.cli.parser import OUTPUT_MODES, parse
from hqshm.errors import HqError, UsageError, UserError

if TYPE_CHECKING:
    from hqshm.cli.render import Output

logger = logging.getLogger("hqshm.cli")


class _Formatter(logging.Formatter):
    """`2024-05-01T10:00:00Z INFO message` (cli.md §1.1); milliseconds with --debug."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t)
        if self.debug:
            stamp += f".{int(record.msecs):03d}"
        level = {"WARNING": "WARN", "CRITICAL": "ERROR"}.get(record.levelname, record.levelname)
        text = f"{stamp}Z {level} {record.getMessage()}"
        if record.exc_info and self.debug:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(debug))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


def run(argv: Sequence[str]) -> int:
    debug = "--debug" in argv or _env_flag("HQ_DEBUG")
    setup_logging(debug)
    try:
        args = parse(list(argv))
    except UsageError as exc:
        sys.stderr.write(str(exc) + "\n")
        return exc.exit_code
    debug = bool(getattr(args, "debug", False)) or debug
    setup_logging(debug)
    mode = args.output_mode or os.environ.get("HQ_OUTPUT_MODE") or "cli"
    if mode not in OUTPUT_MODES:
        sys.stderr.write(f"error: invalid value '{mode}' for HQ_OUTPUT_MODE "
                         f"(one of {', '.join(OUTPUT_MODES)})\n")
        return 2
    colors = args.colors or "auto"
    color = colors == "always" or (colors == "auto" and sys.stdout.isatty())
    made: list[Output] = []

    def output() -> Output:
        """The renderer, imported on first use: `hq server start` listens before it."""
        if not made:
            from hqshm.cli.render import Output

            made.append(Output(mode, color))
        return made[0]

    try:
        if args.command == "server" and args.server_command == "start":
            from hqshm.cli.serverstart import start

            return start(args, output)
        from hqshm.cli.commands import dispatch

        return dispatch(args, output())
    except UsageError as exc:
        sys.stderr.write(str(exc) + "\n")
        return exc.exit_code
    except UserError as exc:
        output().error(str(exc))
        return exc.exit_code
    except HqError as exc:
        output().error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug; say so in one line, the traceback only with --debug
        logger.debug("Unexpected error", exc_info=True)
        output().error(f"Internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
                       "details, and please report it)")
        return 1


def main() -> None:
    sys.exit(run(sys.argv[1:]))


def node_main() -> None:
    """`hq-node ARGS` is `hq worker start ARGS`."""
    sys.exit(run(["worker", "start", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
