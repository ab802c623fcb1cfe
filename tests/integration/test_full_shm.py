"""A full /dev/shm against a real node: the node's rings live there, and a sparse segment's page
first written when /dev/shm is full kills the writer with SIGBUS. Tasks fill /dev/shm (data
loaders do, in containers of 64 MB): the node then died at its next task, and the job never
ended. Rings reserve their pages when made (hqshm/node/ring.py, ``_reserve``): a node whose
/dev/shm cannot hold them refuses to start, saying so, and one whose tasks fill it later runs on.

Each node here runs in a mount namespace of its own with a small tmpfs on /dev/shm
(``unshare -m``, which needs root: the tests skip without it).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest
from harness import HqEnv


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
    with small_shm(hq_env, "1m"):
        proc = hq_env.start_worker(cpus=2, wait=False)
    assert proc.wait(timeout=30) == 1
    log = hq_env.log("worker1")
    assert "cannot reserve" in log and "No space left on device" in log and "--shm-size" in log
    assert "Traceback" not in log


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
