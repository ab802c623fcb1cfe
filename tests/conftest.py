"""Shared fixtures: ``hq_env`` gives a test its own server dir and cleans up after it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules are imported by path (--import-mode=importlib, so that tests/unit and
# tests/integration may hold files of the same name); their helper modules by these paths.
for _folder in ("", "unit", "integration"):
    sys.path.insert(0, str(Path(__file__).parent / _folder))

from harness import HqEnv  # noqa: E402


@pytest.fixture
def hq_env(tmp_path: Path) -> Iterator[HqEnv]:
    env = HqEnv(tmp_path)
    try:
        yield env
    finally:
        env.close()
    leftovers = env.leftover_processes()
    assert not leftovers, "processes left behind:\n" + "\n".join(leftovers)
