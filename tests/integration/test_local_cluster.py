"""``LocalCluster`` (spec/python-api.md §4) and HQ scripts run unchanged.

The clusters run in ``hq_env``'s server dir where the test can choose it, so `hq` commands see
them and the env's teardown fails the test on any process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from harness import HqEnv, processes_mentioning

from hqshm.api.errors import ClusterStartFailed, ClusterStopped, ServerAlreadyRunning
from hqshm.api.job import Job
from hqshm.api.localcluster import LocalCluster, WorkerConfig

FIXTURES = Path(__file__).parents[1] / "fixtures"


def wait_until_gone(marker: str, timeout: float = 15.0) -> dict[int, str]:
    """Processes still mentioning ``marker`` after ``timeout`` seconds (none: empty)."""
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_leftovers(marker: str) -> None:
    """After a failed check: the processes a script started and left, killed by pid."""
    for pid in processes_mentioning(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_workers_clients_and_stopping(hq_env: HqEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(hq_env.work)
    cluster = LocalCluster(server_dir=hq_env.server_dir, worker_config=WorkerConfig(cores=4))
    try:
        assert cluster.cluster.server_dir == hq_env.server_dir
        with pytest.raises(ServerAlreadyRunning, match="A server is already running in"):
            LocalCluster(server_dir=hq_env.server_dir)
        cluster.start_worker(WorkerConfig(cores=1))
        table = hq_env.command(["worker", "list"], as_table=True)
        assert table.column("Resources") == ["cpus 4", "cpus 1"]
        assert {p.name for p in (hq_env.server_dir / "worker").iterdir()} >= {"1", "2"}
        client = cluster.client()
        job = Job()
        job.program(["bash", "-c", "echo $HQ_CPUS"], resources=None)
        assert client.wait_for_jobs([client.submit(job)]) is True
        assert (hq_env.work / "0.stdout").read_text().strip() in {"0", "1", "2", "3"}
        client.connection.close()
    finally:
        cluster.stop()
    assert wait_until_gone(str(hq_env.server_dir)) == {}
    with pytest.raises(ClusterStopped, match="already been stopped"):
        cluster.stop()


def test_context_manager_stops_on_an_exception_and_removes_its_directory() -> None:
    with pytest.raises(RuntimeError, match="in the block"), LocalCluster() as cluster:
        server_dir = cluster.cluster.server_dir
        assert server_dir.name.startswith("hq")
        assert server_dir.parent == Path(tempfile.gettempdir())
        cluster.start_worker(WorkerConfig(cores=1))
        raise RuntimeError("in the block")
    assert cluster.cluster.stopped
    assert wait_until_gone(str(server_dir)) == {}
    assert not server_dir.exists()


def test_a_worker_that_cannot_start_stops_the_cluster(hq_env: HqEnv) -> None:
    with pytest.raises(ClusterStartFailed) as info:
        LocalCluster(server_dir=hq_env.server_dir, worker_config=WorkerConfig(cores=0))
    log = hq_env.server_dir / "worker" / "1.log"
    assert str(info.value).startswith("The local cluster's worker exited with code 1:\n")
    assert str(info.value).endswith(f"(full log: {log})")
    assert log.exists()
    assert wait_until_gone(str(hq_env.server_dir)) == {}


def test_a_stopped_cluster_leaves_the_block_quietly(hq_env: HqEnv) -> None:
    with LocalCluster(server_dir=hq_env.server_dir) as cluster:
        cluster.stop()
    assert hq_env.server_dir.exists()  # given by the caller: kept


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_no_process_outlives_the_script(hq_env: HqEnv, ending: str) -> None:
    """A script that never stops its cluster stops it at exit; one that is killed takes it
    down through the parent-death signal."""
    script = (
        "import os, signal, sys\n"
        "from hyperqueue.cluster import LocalCluster, WorkerConfig\n"
        "cluster = LocalCluster(sys.argv[1], WorkerConfig(cores=1))\n"
        "print('up', flush=True)\n"
        "if sys.argv[2] == 'sigkill':\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", script, str(hq_env.server_dir), ending],
                                capture_output=True, text=True, timeout=60)
        assert result.stdout == "up\n", result.stderr
        assert result.returncode == (-signal.SIGKILL if ending == "sigkill" else 0)
        assert wait_until_gone(str(hq_env.server_dir)) == {}
    finally:
        kill_leftovers(str(hq_env.server_dir))


def test_hq_workflow_script_runs_unchanged(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HQ_")}
    env["TMPDIR"] = str(tmp_path / "tmp")  # where its LocalCluster makes its server dir
    (tmp_path / "tmp").mkdir()
    try:
        result = subprocess.run([sys.executable, str(FIXTURES / "hq_workflow.py")],
                                cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
    finally:
        left = wait_until_gone(str(tmp_path))
        kill_leftovers(str(tmp_path))
    assert left == {}
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["ok"] is True
    assert report["total"] == "14"
    assert report["program"] == "hi\nfrom stdin"
    assert report["message"].startswith(
        "The following tasks of job `2` have failed:\nTask broken/0 (id=0):\nTraceback")
    assert report["errors"]["0"].endswith("RuntimeError: this task always fails\n")
    assert "Waiting for job(s)" not in result.stderr  # the script configures no logging
    assert "6/6" in result.stderr  # the progress bar
    assert (tmp_path / "graph.dot").read_text().startswith('digraph job {\n"square/0";\n')
    assert Path(report["server_dir"]).parent == tmp_path / "tmp"
    assert not Path(report["server_dir"]).exists()
