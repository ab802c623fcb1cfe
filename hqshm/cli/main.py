"""Entry points of `hq` and `hq-node`: parse, set up logging and output, run, map errors.

The only place where an error becomes a message and an exit code (spec/cli.md §1.2): user
errors exit 1 (in JSON mode as ``{"error": ...}`` on stdout), parse errors exit 2, and anything
else is a bug, printed as one line with a hint to rerun with --debug for the traceback.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hqshm.cli.parser import OUTPUT_MODES, parse
from hqshm.errors import HqError, UsageError, UserError
from hqshm.link.commandlog import CommandLogger, set_up_on_first_message

if TYPE_CHECKING:
    from hqshm.cli.render import Output

logger = CommandLogger("hqshm.cli")

_LOG_ON_FIRST_MESSAGE = frozenset({"submit", "job"})
"""Commands whose modules log only through CommandLogger, so that `logging` is set up (and
imported) only if one of them prints a message; every other command sets it up at once, for
the servers, nodes and modules it runs that log directly."""


def setup_logging(debug: bool) -> None:
    """HQ's log lines; `logging` is imported only here, when they are set up."""
    from hqshm.cli.logformat import setup_logging

    setup_logging(debug)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


def run(argv: Sequence[str]) -> int:
    debug = "--debug" in argv or _env_flag("HQ_DEBUG")
    try:
        args = parse(list(argv))
    except UsageError as exc:
        sys.stderr.write(str(exc) + "\n")
        return exc.exit_code
    debug = bool(getattr(args, "debug", False)) or debug
    if args.command in _LOG_ON_FIRST_MESSAGE:
        set_up_on_first_message(lambda: setup_logging(debug))
    else:
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
        if args.command in ("server", "worker") and getattr(args, args.command + "_command",
                                                           None) == "start":
            # A server or node that ends so: its log is what is left to find a rare bug.
            from hqshm.cli.logformat import ALWAYS_TRACEBACK

            logger.error("Unexpected error", exc_info=True, extra=ALWAYS_TRACEBACK)
        else:
            logger.debug("Unexpected error", exc_info=True)
        output().error(f"Internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
                       "details, and please report it)")
        return 1


def main() -> None:
    code = run(sys.argv[1:])
    # The interpreter's last collection at exit walks every object the command made (modules,
    # classes, messages): frozen, they are skipped. ~5% of a short command's CPU.
    gc.freeze()
    sys.exit(code)


def node_main() -> None:
    """`hq-node ARGS` is `hq worker start ARGS`."""
    sys.exit(run(["worker", "start", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
