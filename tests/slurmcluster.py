"""The real Slurm cluster that Slurm tests run against.

``.ci/run`` starts a single-machine Slurm (``.ci/slurm/start-local-slurm.sh``: Debian's
slurmctld, slurmd and munge on 127.0.0.1) and exports ``SLURM_CONF`` for the test run. The
``slurm`` fixture hands its tests that cluster, or skips them with a reason that says how to
start one: Slurm needs root (or its packages installed) and Debian's package archive, which a
developer's machine may lack. With ``HQSHM_REQUIRE_SLURM=1`` (set by ``.ci/run`` once the
cluster is up) such a skip is a failure instead.

Tests share the one cluster and the machine's CPUs with each other (two test processes), so
they must not assume an empty queue: they name their own jobs and wait for their own states.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURM_SKIP = "no Slurm cluster"
DEFAULT_CONF = "/tmp/local-slurm/etc/slurm.conf"
START_HINT = ('start one with `eval "$(bash .ci/slurm/start-local-slurm.sh)"` '
              "(as root; .ci/run does this)")


@dataclass(frozen=True)
class SlurmCluster:
    conf: str
    partition: str

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which the Slurm commands find this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = self.conf
        return env

    def run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A Slurm command against this cluster (output captured, never raises on failure)."""
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)


def slurm_required() -> bool:
    return os.environ.get("HQSHM_REQUIRE_SLURM") == "1"


def find_cluster() -> SlurmCluster | str:
    """The running cluster, or why there is none."""
    conf = os.environ.get("SLURM_CONF") or (DEFAULT_CONF if Path(DEFAULT_CONF).exists() else "")
    if not conf:
        return f"{SLURM_SKIP}: SLURM_CONF is not set; {START_HINT}"
    if shutil.which("sinfo") is None:
        return f"{SLURM_SKIP}: `sinfo` is not on PATH; {START_HINT}"
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%P %t"], env={**os.environ, "SLURM_CONF": conf},
                               capture_output=True, text=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return f"{SLURM_SKIP}: `sinfo` did not answer within 15 s (SLURM_CONF={conf})"
    if probe.returncode != 0:
        return f"{SLURM_SKIP}: `sinfo` failed (SLURM_CONF={conf}): {probe.stderr.strip()}"
    fields = probe.stdout.split()
    if len(fields) < 2:
        return f"{SLURM_SKIP}: `sinfo` shows no partition (SLURM_CONF={conf})"
    return SlurmCluster(conf=conf, partition=fields[0].rstrip("*"))


@pytest.fixture(scope="session")
def slurm() -> SlurmCluster:
    found = find_cluster()
    if isinstance(found, str):
        if slurm_required():
            pytest.fail(f"HQSHM_REQUIRE_SLURM=1, but {found}")
        pytest.skip(found)
    return found
