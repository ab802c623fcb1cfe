"""Fixtures of the integration tests that drive the Python API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import HqEnv

from hqshm.api.client import Client


@pytest.fixture
def client(hq_env: HqEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """A client of a running server, submitting from the env's work dir."""
    monkeypatch.chdir(hq_env.work)
    hq_env.start_server()
    client = Client(hq_env.server_dir)
    yield client
    client.connection.close()
