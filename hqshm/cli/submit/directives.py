"""`#HQ` directives and the shebang at the head of a job script (spec/jobs.md §11).

A script can carry its own submit options (`#HQ --cpus=4`) so that `hq submit job.sh` needs no
flags. This module is the pure part: it scans the bytes the client read, splits the directive
lines with HQ's quoting rules, parses them with the very argparse definitions of `hq submit`
(so both accept the same flags and say the same things about bad ones) and merges the result
under the command line's options. Reading the script and stdin is the caller's job.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from hqshm.cli.parser import HqParser, add_submit_options
from hqshm.cluster.frozen import frozen
from hqshm.errors import UsageError, UserError

SCAN_LIMIT = 32 * 1024  # HQ reads only this much of a script
PREFIX = "#HQ "

# Options that steer the client rather than describe the job: meaningless inside the job's own
# script, so HQ's directive parser does not know them (nor `--job`, which names another job).
REJECTED = ("--job", "--wait", "--progress", "--on-notify", "--stdin", "--directives")
_REJECTED_DESTS = frozenset(flag[2:].replace("-", "_") for flag in REJECTED)
# Repeatable options: the script's values and the command line's are combined.
COMBINED = ("resource", "env", "after")
# The task source is one thing: a command-line source replaces the script's as a whole.
TASK_SOURCE = ("array", "each_line", "from_json")
# Accepted in a script, but only the command line's value counts (as in HQ).
CLI_ONLY = ("weight",)


class InvalidDirective(UserError):  # spec/jobs.md §11
    template = "You have used invalid parameter(s) after a #HQ directive.\n{parser_error}"


class DirectivesNeedStdin(UserError):  # spec/cli.md §5.3
    template = "You have to use `--stdin` when you specify `--directives=stdin`."


@frozen
class ScriptHead:
    """What the head of a script says: directive arguments and the shebang's words."""

    arguments: tuple[str, ...] = ()
    shebang: tuple[str, ...] = ()


def reads_file(mode: str, command: Sequence[str]) -> bool:
    """Whether `--directives MODE` scans the command's first word as a file."""
    return bool(command) and (mode == "file" or (mode == "auto" and command[0].endswith(".sh")))


def scan(data: bytes) -> ScriptHead:
    """The directives and shebang of a script's head (only its first 32 KiB count).

    `#HQ ` lines add arguments; other `#` lines and empty ones are skipped; the first other
    line ends the header, so a later `#HQ` line is only a comment.
    """
    text = data[:SCAN_LIMIT].decode("utf-8", "replace")
    lines = text.split("\n")
    shebang: tuple[str, ...] = ()
    if lines[0].startswith("#!"):
        shebang = tuple(lines[0][2:].split())
    arguments: list[str] = []
    for raw in lines:
        line = raw.removesuffix("\r").lstrip()
        if line.startswith(PREFIX):
            arguments.extend(split_arguments(line[len(PREFIX) :]))
        elif line and not line.startswith("#"):
            break
    return ScriptHead(tuple(arguments), shebang)


def split_arguments(text: str) -> list[str]:
    """Split on whitespace; double quotes group and vanish; a backslash protects the next
    character from both, and stays in the argument (HQ keeps it)."""
    arguments: list[str] = []
    current: list[str] = []
    in_word = quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current += (char, text[i + 1])
            in_word = True
            i += 2
            continue
        if char == '"':
            quoted = not quoted
            in_word = True
        elif char.isspace() and not quoted:
            if in_word:
                arguments.append("".join(current))
                current = []
                in_word = False
        else:
            current.append(char)
            in_word = True
        i += 1
    if in_word:
        arguments.append("".join(current))
    return arguments


def with_shebang(command: Sequence[str], head: ScriptHead) -> list[str]:
    """`#!/bin/bash -l` + `job.sh` → `/bin/bash -l job.sh`: a script with a shebang runs even
    when it is not executable."""
    return [*head.shebang, *command]


class _Rejected(argparse.Action):
    """A submit flag a script may not use: refused with clap's unknown-argument error."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        parser.error(f"unrecognized arguments: {option_string}")


def _directive_parser() -> HqParser:
    """`hq submit`'s options, less the rejected ones."""
    parser = HqParser(prog="#HQ", add_help=False, allow_abbrev=False, conflict_handler="resolve")
    add_submit_options(parser)
    for flag in REJECTED:
        parser.add_argument(flag, action=_Rejected, nargs="?", help=argparse.SUPPRESS)
    return parser


def _submit_defaults() -> dict[str, Any]:
    """Every `hq submit` option at its default: how `merge` tells a given option from one
    left alone (a value equal to the default changes nothing either way)."""
    parser = HqParser(add_help=False)
    add_submit_options(parser)
    return vars(parser.parse_args([]))


def parse_arguments(arguments: Sequence[str]) -> dict[str, Any]:
    """The options the directive arguments set, by destination name."""
    parser = _directive_parser()
    try:
        parsed = vars(parser.parse_args(list(arguments)))
        if parsed["program"]:
            _unexpected(parser, parsed["program"][0])
    except UsageError as exc:
        raise InvalidDirective(parser_error=str(exc)) from None
    defaults = _submit_defaults()
    return {
        name: value
        for name, value in parsed.items()
        if name not in _REJECTED_DESTS and value != defaults[name]
    }


def _unexpected(parser: HqParser, argument: str) -> NoReturn:
    parser.error(f"unrecognized arguments: {argument}")


def merge(cli: argparse.Namespace, given: Mapping[str, Any]) -> argparse.Namespace:
    """The command line's options with the script's filling in (spec/jobs.md §11 precedence).

    Single-valued options: the command line wins when the user gave them there (a value other
    than the default). Repeatable ones are combined, the command line's `--env` first so that
    its value wins a duplicate key. The task source is taken whole from one side.
    """
    defaults = _submit_defaults()
    merged = argparse.Namespace(**vars(cli))
    cli_has_source = any(getattr(cli, name) != defaults[name] for name in TASK_SOURCE)
    for name, value in given.items():
        if name in CLI_ONLY or (name in TASK_SOURCE and cli_has_source):
            continue
        if name == "env":
            merged.env = [*cli.env, *value]
        elif name in COMBINED:
            setattr(merged, name, [*value, *getattr(cli, name)])
        elif getattr(cli, name) == defaults[name]:
            setattr(merged, name, value)
    return merged
