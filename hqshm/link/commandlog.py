"""Loggers of what client commands print as log lines, with `logging` imported at the first.

HQ prints a command's messages ("Job 3 canceled", "Job 7 not found") as log lines, but most
commands print none, and `logging` with what it imports (traceback, threading, string...) is
6-12 ms of a command whose budget is 40 ms (issue 9, item 2). The CLI registers its set-up with
``set_up_on_first_message``; without one (the API, a server) these are plain loggers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

_set_up: list[Callable[[], None]] = []


def set_up_on_first_message(set_up: Callable[[], None]) -> None:
    """Run ``set_up`` (which configures `logging`) before the first message of any logger."""
    _set_up[:] = [set_up]


class CommandLogger:
    """The few methods of ``logging.Logger`` that commands call, forwarded to the real one."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _logger(self) -> logging.Logger:
        import logging

        while _set_up:
            _set_up.pop()()
        return logging.getLogger(self.name)

    def debug(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._logger().debug(msg, *args, **kwargs)

    def info(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._logger().info(msg, *args, **kwargs)

    def warning(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._logger().warning(msg, *args, **kwargs)

    def error(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._logger().error(msg, *args, **kwargs)
