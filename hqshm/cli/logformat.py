"""HQ's log lines on stderr (spec/cli.md §1.1), set up by the entry point (cli/main.py)."""

from __future__ import annotations

import logging
import sys
import time

# A record's ``extra`` that shows its traceback without --debug: the crash of a server or a
# node, whose log is all that is left to diagnose a rare one.
ALWAYS_TRACEBACK = {"traceback": True}


class _Formatter(logging.Formatter):
    """`2024-05-01T10:00:00Z INFO message` (cli.md §1.1); milliseconds with --debug.

    Tracebacks only with --debug, or on a record logged with ``extra=ALWAYS_TRACEBACK``."""

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
        if record.exc_info and (self.debug or getattr(record, "traceback", False)):
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(debug))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
