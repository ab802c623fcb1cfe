"""A full /dev/shm against a real node: the node's rings live there, and a sparse segment's page
first written when /dev/shm is full kills the writer with SIGBUS. Tasks fill /dev/shm (data
loaders do, in containers of 64 MB): the node then died at its next task, and the job never
ended. Rings reserve the pages every record touches when made (hqshm/node/ring.py,
``_reserve``), and the rest of a slot before a large payload first needs it (``_make_room``,
which fails with ``RingFull`` instead): a node whose /dev/shm cannot hold its rings refuses to
start, saying so; one whose tasks fill it later runs on; a function task's larger result that
finds no room is reported as not kept, with why.

Each node here runs in a mount namespace of its own with a small tmpfs on /dev/shm
(``unshare -m``, which needs root: the tests skip without it).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import result_functions as rf
from harness import HqEnv

from hqshm.api.client import Client
from hqshm.api.errors import ResultError
from hqshm.api.job import Job


def _can_mount_tmpfs() -> bool:
    try:
        done = subprocess.run(["unshare", "-m", "sh", "-c",
                               "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount_tmpfs(),
                                reason="needs `unshare -m` and tmpfs mounts (root)")


@contextlib.contextmanager
def small_shm(hq_env: HqEnv, size: str) -> Iterator[None]:
    """Workers started within get a /dev/shm of ``size`` of their own."""
    hq = hq_env.hq
    hq_env.hq = ["unshare", "-m", "sh", "-c",
                 f'mount -t tmpfs -o size={size} tmpfs /dev/shm && exec "$0" "$@"', *hq]
    try:
        yield
    finally:
        hq_env.hq = hq


def test_a_node_whose_shm_cannot_hold_its_rings_refuses_to_start(hq_env: HqEnv) -> None:
    hq_env.start_server()
    with small_shm(hq_env, "64k"):
        proc = hq_env.start_worker(cpus=2, wait=False)
    assert proc.wait(timeout=30) == 1
    log = hq_env.log("worker1")
    assert "cannot reserve shared memory" in log and "No space left on device" in log
    assert "--shm-size" in log and "Traceback" not in log


def test_a_node_runs_on_after_its_tasks_filled_shm(hq_env: HqEnv) -> None:
    hq_env.start_server()
    with small_shm(hq_env, "16m"):
        hq_env.start_worker(cpus=1)
    hq_env.command(["submit", "--", "sh", "-c", "cat /dev/zero > /dev/shm/fill"])
    hq_env.wait_for_job_state(1, "FAILED")  # no space left on the device, as it should
    hq_env.command(["submit", "--array", "1-50", "--", "true"])
    hq_env.wait_for_job_state(2, "FINISHED")
    assert set(hq_env.task_states(2).values()) == {"finished"}
    assert hq_env.workers[1].poll() is None  # the node lives


def test_a_result_that_finds_shm_full_is_reported_not_kept(hq_env: HqEnv,
                                                           client: Client) -> None:
    """A 10 KB result needs more of its ring slot than the page reserved for every record;
    with /dev/shm full the task still succeeds, and its result is an error saying why."""
    with small_shm(hq_env, "16m"):
        hq_env.start_worker(cpus=1)
    hq_env.command(["submit", "--", "sh", "-c", "cat /dev/zero > /dev/shm/fill"])
    hq_env.wait_for_job_state(1, "FAILED")
    job = Job(default_env=rf.FUNCTIONS_PATH)
    task = job.function(rf.big, args=(10_000,), stdout=None, stderr=None)
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted])
    with pytest.raises(ResultError, match="could not be kept on its worker: cannot reserve "
                                          "shared memory .* in /dev/shm: it is full"):
        submitted.result(task, timeout=30)
    assert hq_env.workers[1].poll() is None  # the node lives


def test_a_ring_whose_shm_is_full_refuses_a_large_payload_and_takes_small_ones(
        tmp_path: Path) -> None:
    """The ring itself (in a process of its own on a 1 MB /dev/shm, then filled): records
    whose payload fits the reserved page go on; a larger one raises RingFull (a SIGBUS
    before) and goes once there is room again."""
    script = tmp_path / "ring.py"
    script.write_text(RING_SCRIPT)
    done = subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} "
                           f"{script}"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == [
        "filled", "small: 72", "large: RingFull it is full", "freed: large went"], done.stdout


RING_SCRIPT = """
import os
from hqshm.node.ring import RecordKind, Ring, RingFull
ring = Ring.create("hqshm-t", capacity=36, spin=0.0)
with open("/dev/shm/fill", "wb") as f:
    try:
        while True:
            f.write(bytes(65536))
            f.flush()
    except OSError:
        print("filled")
for i in range(72):
    ring.push(key=i, instance=0, kind=RecordKind.ENDED, payload=b"s" * 3000)
    ring.pop()
print("small: 72")
try:
    ring.push(key=1, instance=0, kind=RecordKind.ENDED, payload=b"b" * 10000)
except RingFull as exc:
    print("large: RingFull", "it is full" if "it is full" in str(exc) else str(exc))
os.unlink("/dev/shm/fill")
ring.push(key=1, instance=0, kind=RecordKind.ENDED, payload=b"b" * 10000)
print("freed: large went" if ring.pop().payload == b"b" * 10000 else "freed: wrong payload")
ring.close()
"""
