"""What every command needs: its arguments, the output, the server dir and a connection."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from hqshm.cli.render import Output
from hqshm.link import serverdir
from hqshm.link.client import ClientConnection
from hqshm.link.requests import Selector
from hqshm.model import arrays

R = TypeVar("R")


@dataclass
class Context:
    args: argparse.Namespace
    out: Output
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def server_dir(self) -> Path:
        return serverdir.resolve_server_dir(getattr(self.args, "server_dir", None), self.env)

    def connect(self) -> ClientConnection:
        return ClientConnection(self.server_dir, env=self.env)

    def request(self, message: object, expect: type[R], timeout: float | None = 120.0) -> R:
        with self.connect() as conn:
            return conn.request(message, expect, timeout=timeout)


def selector(text: str, *, allow_all: bool = True) -> Selector:
    """A command-line selector (`all`, `last`, `1-3,7`) as the request field."""
    parsed = arrays.parse_selector(text, allow_all=allow_all)
    if isinstance(parsed, arrays.All):
        return Selector("all")
    if isinstance(parsed, arrays.Last):
        return Selector("last")
    return Selector("ids", id_ranges(parsed.ids))


def id_ranges(ids: arrays.IdSet) -> tuple[tuple[int, int, int], ...]:
    return tuple((r.start, r.end, r.step) for r in ids.ranges)
