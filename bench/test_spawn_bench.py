"""Spawn costs: `true` launched and reaped through the C launcher and through the fallback,
and the Python time spent building the C call (target: under 30 us beyond the syscalls).

The spec is an executor's typical one: our whole environment, pinned CPUs, output files.
Run: ``python -m pytest bench/test_spawn_bench.py``; rounds stay small on a shared 2-core box.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from hqshm.node import affinity
from hqshm.node.affinity import SpawnSpec

needs_c = pytest.mark.skipif(not affinity.C_MODULE, reason="C module not built")


@pytest.fixture
def spec(tmp_path: Path) -> SpawnSpec:
    return SpawnSpec(
        ["true", "--task", "1"],
        env=dict(os.environ),
        cwd=str(tmp_path),
        stdout_path=str(tmp_path / "0.stdout"),
        stderr_path=str(tmp_path / "0.stderr"),
        cpus=sorted(os.sched_getaffinity(0)),
    )


def spawn_and_reap(spawn: Callable[[SpawnSpec], int], spec: SpawnSpec) -> None:
    _, status = os.waitpid(spawn(spec), 0)
    assert os.waitstatus_to_exitcode(status) == 0


@needs_c
def test_spawn_true_c(benchmark: BenchmarkFixture, spec: SpawnSpec) -> None:
    benchmark.extra_info["env_vars"] = len(spec.env)
    benchmark.pedantic(
        spawn_and_reap, args=(affinity._c_spawn, spec), rounds=40, iterations=5, warmup_rounds=2
    )


def test_spawn_true_fallback(benchmark: BenchmarkFixture, spec: SpawnSpec) -> None:
    benchmark.extra_info["env_vars"] = len(spec.env)
    benchmark.pedantic(
        spawn_and_reap, args=(affinity._py_spawn, spec), rounds=20, iterations=3, warmup_rounds=1
    )


def test_spawn_true_posix_spawn_baseline(benchmark: BenchmarkFixture, spec: SpawnSpec) -> None:
    """glibc's posix_spawn with the steps it can do (no affinity, no cwd): the floor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 1, spec.stdout_path, flags, 0o666),
        (os.POSIX_SPAWN_OPEN, 2, spec.stderr_path, flags, 0o666),
    ]

    def posix_spawn(spec: SpawnSpec) -> int:
        return os.posix_spawnp(spec.argv[0], spec.argv, spec.env, file_actions=actions, setsid=True)

    benchmark.pedantic(
        spawn_and_reap, args=(posix_spawn, spec), rounds=40, iterations=5, warmup_rounds=2
    )


@needs_c
def test_c_call_preparation(benchmark: BenchmarkFixture, spec: SpawnSpec) -> None:
    """Everything `spawn` does in Python before hq_spawn: the per-task overhead we own."""
    benchmark.extra_info["env_vars"] = len(spec.env)
    benchmark.pedantic(affinity._c_args, args=(spec,), rounds=200, iterations=20, warmup_rounds=5)
