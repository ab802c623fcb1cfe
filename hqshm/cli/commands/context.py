"""What every command needs: its arguments, the output, the server dir and a connection."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from hqshm.link import serverdir
from hqshm.model import arrays

if TYPE_CHECKING:  # `hq worker start` and `hq server start` connect through neither
    from pathlib import Path

    from hqshm.cli.render import Output
    from hqshm.link.client import ClientConnection
    from hqshm.link.requests import Selector

R = TypeVar("R")


class Context:
    def __init__(self, args: argparse.Namespace, out: Output,
                 env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.out = out
        self.env: Mapping[str, str] = dict(os.environ) if env is None else env

    @property
    def server_dir(self) -> Path:
        return serverdir.resolve_server_dir(getattr(self.args, "server_dir", None), self.env)

    def connect(self) -> ClientConnection:
        """A connection to the server; its directory as a string (no pathlib: start-up)."""
        from hqshm.link.client import ClientConnection

        path = serverdir.server_dir_path(getattr(self.args, "server_dir", None), self.env)
        return ClientConnection(path, env=self.env)

    def request(self, message: object, expect: type[R], timeout: float | None = 120.0) -> R:
        with self.connect() as conn:
            return conn.request(message, expect, timeout=timeout)


def selector(text: str, *, allow_all: bool = True) -> Selector:
    """A command-line selector (`all`, `last`, `1-3,7`) as the request field."""
    from hqshm.link.requests import Selector

    parsed = arrays.parse_selector(text, allow_all=allow_all)
    if isinstance(parsed, arrays.All):
        return Selector("all")
    if isinstance(parsed, arrays.Last):
        return Selector("last")
    return Selector("ids", id_ranges(parsed.ids))


def id_ranges(ids: arrays.IdSet) -> tuple[tuple[int, int, int], ...]:
    return tuple((r.start, r.end, r.step) for r in ids.ranges)
