"""`hq alloc` against the real single-machine Slurm (tests/slurmcluster.py; skipped without
one): queued work triggers sbatch, the allocation's worker runs the tasks and ends when idle,
a bad partition is reported with Slurm's own message, and server stop scancels what is left.

The cluster is shared with other tests: each test names its queue uniquely, looks only at its
own allocations and cancels them in teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from autoalloc_helpers import FAST, allocations, start_server, wait_allocs
from harness import HqEnv
from slurmcluster import SlurmCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_env(hq_env: HqEnv, slurm: SlurmCluster) -> Iterator[tuple[HqEnv, SlurmCluster]]:
    start_server(hq_env, {**slurm.env(hq_env.env()), **FAST})
    yield hq_env, slurm
    ids: list[str] = []
    try:
        for queue in hq_env.json(["alloc", "list"]):
            ids += [a["id"] for a in allocations(hq_env, queue["id"])]
    except Exception:  # noqa: BLE001 - the server may be gone already
        pass
    if ids:
        slurm.run("scancel", *ids)


def _add(hq_env: HqEnv, slurm: SlurmCluster, *args: str) -> str:
    name = f"hqt{uuid.uuid4().hex[:8]}"
    hq_env.command(["alloc", "add", "slurm", "--time-limit", "5m", "--no-dry-run", "--name", name,
                    "--cpus", "1", *args, "--", f"--partition={slurm.partition}"])
    return name


def _job_state(slurm: SlurmCluster, job_id: str) -> str:
    out = slurm.run("scontrol", "show", "job", job_id).stdout
    return next((t.split("=", 1)[1] for t in out.split() if t.startswith("JobState=")), "")


def test_slurm_allocation_runs_tasks_and_ends_when_idle(
        slurm_env: tuple[HqEnv, SlurmCluster]) -> None:
    hq_env, slurm = slurm_env
    _add(hq_env, slurm, "--idle-timeout", "2s")
    hq_env.command(["submit", "--array", "1-3", "--", "bash", "-c", "echo $SLURM_JOB_ID"])
    hq_env.wait_for_job_state(1, "FINISHED", timeout=120)
    allocs = allocations(hq_env)
    assert len(allocs) >= 1
    job_id = allocs[0]["id"]
    assert (hq_env.server_dir / "001" / "autoalloc").is_dir()
    # Idle workers end after their idle timeout, and so does the allocation.
    wait_allocs(hq_env, lambda a: all(x["status"] == "finished" for x in a),
                "the allocation to finish", timeout=90)
    assert _job_state(slurm, job_id) in ("COMPLETED", "COMPLETING")
    workers = hq_env.json(["worker", "list", "--all"])
    assert workers and all(w["ended"] is not None for w in workers)


@pytest.mark.expect_log("Dry-run \\(test allocation submission\\) has failed")
def test_slurm_bad_partition_is_reported(slurm_env: tuple[HqEnv, SlurmCluster]) -> None:
    hq_env, _ = slurm_env
    out = hq_env.command(["alloc", "add", "slurm", "--time-limit", "1m", "--",
                          "--partition=hqshm-no-such-partition"],
                         expect_fail="Could not submit allocation: sbatch execution failed")
    assert "invalid partition" in out.lower()
    assert hq_env.json(["alloc", "list"]) == []


def test_slurm_dry_run_and_server_stop_cancels(slurm_env: tuple[HqEnv, SlurmCluster]) -> None:
    hq_env, slurm = slurm_env
    out = hq_env.command(["alloc", "dry-run", "slurm", "--time-limit", "1m", "--",
                          f"--partition={slurm.partition}"])
    assert "A trial allocation was submitted successfully" in out
    _add(hq_env, slurm)
    hq_env.command(["submit", "--", "sleep", "300"])
    allocs = wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation", timeout=60)
    job_id = allocs[0]["id"]
    hq_env.command(["server", "stop"])
    assert hq_env.server is not None
    hq_env.server.wait(timeout=30)
    hq_env.wait_until(lambda: _job_state(slurm, job_id) in ("CANCELLED", "COMPLETED"),
                      f"Slurm job {job_id} to be canceled", timeout=30)
