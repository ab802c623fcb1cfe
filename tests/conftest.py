"""Shared fixtures and hooks.

``hq_env`` gives a test its own server dir; afterwards it fails the test when a process is left
or when a server, node or command reported an error that the test did not announce with
``@pytest.mark.expect_log(PATTERN)`` or ``hq_env.expect_log(PATTERN)``.

Tests that need the C module (hqshm._hqaffinity) skip without it, with a reason that starts with
"C module not built", so that the README's test command works without a compiler. CI exports
HQSHM_REQUIRE_C_MODULE=1, which turns those skips into failures: a build that lost the module
must not pass.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules are imported by path (--import-mode=importlib, so that tests/unit and
# tests/integration may hold files of the same name); their helper modules by these paths.
for _folder in ("", "unit", "integration"):
    sys.path.insert(0, str(Path(__file__).parent / _folder))

from harness import HqEnv  # noqa: E402
from hypothesis import settings  # noqa: E402
from slurmcluster import slurm  # noqa: E402, F401 (the fixture)

# Property tests check what happens, never how fast: the suite runs in two processes on machines
# that others share, where one example can take longer than hypothesis's default deadline.
settings.register_profile("hqshm", deadline=None)
settings.load_profile("hqshm")

C_MODULE_SKIP = "C module not built"


def c_module_required() -> bool:
    return os.environ.get("HQSHM_REQUIRE_C_MODULE") == "1"


def pytest_report_header() -> str:
    from hqshm.node import affinity

    state = "built" if affinity.C_MODULE else f"missing: {affinity.FALLBACK_REASON}"
    required = ", required (HQSHM_REQUIRE_C_MODULE=1)" if c_module_required() else ""
    return f"hqshm C module: {state}{required}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and c_module_required() and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    if C_MODULE_SKIP in reason:
        report.outcome = "failed"
        report.longrepr = f"HQSHM_REQUIRE_C_MODULE=1, but this test was skipped: {reason}"


@pytest.fixture
def hq_env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HqEnv]:
    env = HqEnv(tmp_path)
    for mark in request.node.iter_markers("expect_log"):
        for pattern in mark.args:
            env.expect_log(pattern)
    try:
        yield env
    finally:
        env.close_and_check()
