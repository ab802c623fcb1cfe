"""Large function task results (issue 10, item 4) against a real server and workers: results
above the inline threshold stay on their worker and are fetched from it when the client asks
(in parts above one part's size, on the warm and the cold path), the cap and its error, a
worker gone before the fetch, release of the worker's file on forget, and a worker answer that
does not match what it holds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import result_functions as rf
from harness import HqEnv
from hqshm.cluster.protocol import MAX_PART

from hqshm import taskresult
from hqshm.api.client import Client
from hqshm.api.errors import ResultError
from hqshm.api.function import PythonEnv
from hqshm.api.job import Job
from hqshm.link.requests import ServerInfoRequest
from hqshm.link.responses import ServerInfo


def stored_on_workers(client: Client, job_id: int) -> list[Path]:
    """The result files the workers of this server keep for the job (hqshm/taskresult.py)."""
    uid = client.connection._connection().request(ServerInfoRequest(), ServerInfo).server_uid
    return sorted(Path("/dev/shm").glob(f"hqshm-results-*/{uid}.{job_id}.*"))


def test_large_results_are_fetched_from_their_worker(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=2)
    job = Job(default_env=rf.FUNCTIONS_PATH, max_result_size=32 << 20)
    array = job.function(rf.make_array, args=(625_000,))  # 5 MB of float64
    blob = job.function(rf.big, args=(5_000_000,))
    parts = job.function(rf.big, args=(2 * MAX_PART + 12345,))  # three parts
    small = job.function(rf.big, args=(1000,))
    submitted = client.submit(job)
    value = submitted.result(array, timeout=60)
    assert isinstance(value, np.ndarray) and np.array_equal(value, np.arange(625_000.0))
    assert submitted.result(blob) == b"x" * 5_000_000
    assert submitted.result(parts) == b"x" * (2 * MAX_PART + 12345)
    assert submitted.result(small) == b"x" * 1000
    # Only the large ones stay on the worker; asked again, they come again.
    assert len(stored_on_workers(client, submitted.id)) == 3
    assert submitted.results([blob, small, array])[0] == b"x" * 5_000_000


def test_large_results_of_the_cold_path_and_exceptions(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    client.python_env = PythonEnv(prologue="true")  # an interpreter per task
    job = Job(default_env=rf.FUNCTIONS_PATH, max_fails=None)
    blob = job.function(rf.big, args=(3_000_000,))
    boom = job.function(rf.boom, args=("y" * 200_000,))
    submitted = client.submit(job)
    assert submitted.result(blob, timeout=60) == b"x" * 3_000_000
    with pytest.raises(ValueError, match="^y{200000}$"):
        submitted.result(boom, timeout=60)


def test_a_result_above_the_cap_is_a_clear_error(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    job = Job(default_env=rf.FUNCTIONS_PATH, max_result_size=1 << 20)
    t = job.function(rf.big, args=(2_000_000,))
    submitted = client.submit(job)
    with pytest.raises(ResultError, match=(
            r"2000\d+ bytes, above the job's max_result_size \(1048576 bytes: the largest "
            r"result kept; default 16777216, at most 67108864\); raise it with "
            r"Job\(max_result_size=\.\.\.\)")):
        submitted.result(t, timeout=60)
    assert stored_on_workers(client, submitted.id) == []  # nothing kept above the cap


def test_a_worker_gone_before_the_fetch_is_a_clear_error(hq_env: HqEnv,
                                                         client: Client) -> None:
    hq_env.start_worker(cpus=1)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    t = job.function(rf.big, args=(1_000_000,))
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted])
    hq_env.kill_worker(1)
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")
    started = time.monotonic()
    with pytest.raises(ResultError, match=(r"the result \(1000\d+ bytes\) could not be "
                                           r"fetched: worker 1, which held it, is gone")):
        submitted.result(t, timeout=60)
    assert time.monotonic() - started < 5


def test_forget_removes_the_file_on_the_worker(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=1)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    t = job.function(rf.big, args=(1_000_000,))
    u = job.function(rf.big, args=(2_000_000,))
    submitted = client.submit(job)
    assert submitted.result(t, timeout=60) == b"x" * 1_000_000  # one fetched, one not
    assert client.wait_for_jobs([submitted])
    assert len(stored_on_workers(client, submitted.id)) == 2
    client.forget(submitted)
    hq_env.wait_until(lambda: not stored_on_workers(client, submitted.id),
                      "the worker to remove the job's results")
    with pytest.raises(ResultError, match="not found"):
        submitted.result(u)


@pytest.mark.expect_log("answered for the result of task 0 of job 1 with")
def test_a_worker_answer_that_does_not_match_is_dropped(hq_env: HqEnv,
                                                        client: Client) -> None:
    """The server checks every part against what it asked and recorded: a worker whose file
    grew (as a hostile worker's answer would) gets its answer dropped with a logged error and
    the client a clear one; the server serves on."""
    hq_env.start_worker(cpus=1)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    t = job.function(rf.big, args=(1_000_000,))
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted])
    [path] = stored_on_workers(client, submitted.id)
    with path.open("ab") as f:
        f.write(bytes(MAX_PART))  # the answer is larger than the result the server recorded
    with pytest.raises(ResultError, match="sent an answer that does not match it"):
        submitted.result(t, timeout=60)
    again = Job(default_env=rf.FUNCTIONS_PATH)
    v = again.function(rf.big, args=(taskresult.INLINE_RESULT + 1,))
    assert client.submit(again).result(v, timeout=60) == b"x" * (taskresult.INLINE_RESULT + 1)


def test_a_result_from_before_a_server_restart_says_results_are_not_journaled(
        hq_env: HqEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/python-api.md, Results: the job and its task come back from the journal, their
    results do not, and asking for one says so rather than waiting or answering None."""
    monkeypatch.chdir(hq_env.work)
    journal = tmp_path / "journal"
    hq_env.start_server(["--journal", str(journal)])
    hq_env.start_worker(cpus=1)
    client = Client(hq_env.server_dir)
    job = Job(default_env=rf.FUNCTIONS_PATH)
    task = job.function(rf.add, args=(2, 3))
    submitted = client.submit(job)
    assert submitted.result(task, timeout=60) == 5
    client.connection.close()
    hq_env.kill_server()
    hq_env.start_server(["--journal", str(journal)])
    client = Client(hq_env.server_dir)
    try:
        hq_env.wait_for_job_state(submitted.id, "FINISHED")
        with pytest.raises(ResultError, match="results are not journaled"):
            client.get_result(submitted, task, timeout=10)
    finally:
        client.connection.close()
