"""HQ 0.27.0's side of compare_hq.py and function_bench.py: N `true` tasks (or N no-op Python
function tasks) through `hyperqueue.LocalCluster`.

Runs with the python of HQ's own venv (compare_hq.py makes it), never the project's, since this
project re-exports HQ's Python API under the same import name. Usage:

    python hq_local_cluster.py TASKS CPUS [program|function]

Prints the seconds from submit to the job's completion. `Client.wait_for_jobs` polls once a
second, which would round HQ's time up by as much; instead the job's state is polled every
20 ms through the same API: ``ffi.wait_for_jobs`` asks the server at once and hands the answer
to its progress callback, which stops the call by raising.
"""

from __future__ import annotations

import contextlib
import sys
import time

from hyperqueue import Job, LocalCluster
from hyperqueue.cluster import WorkerConfig
from hyperqueue.ffi import ffi
from hyperqueue.task.function import PythonEnv

POLL_PERIOD = 0.02


class _Polled(Exception):
    """Raised from the progress callback: one answer is all a poll needs."""


def job_status(client, job_id: int) -> dict:  # noqa: ANN001 - hyperqueue.Client
    """The server's counts for the job: finished, failed, total, completed."""
    answer: dict = {}

    def keep(statuses: dict) -> None:
        answer.update(statuses[job_id])
        raise _Polled

    with contextlib.suppress(_Polled):
        ffi.wait_for_jobs(client.connection.ctx, [job_id], keep)
    return answer


def noop(_i: int) -> None:
    """function_bench.py's task (HQ runs each in an interpreter of its own)."""


def run(tasks: int, cpus: int, kind: str = "program") -> float:
    with LocalCluster() as cluster:
        cluster.start_worker(WorkerConfig(cores=cpus))
        # Function tasks run in a fresh `python3` of PATH by default: this venv's has HQ.
        client = cluster.client(python_env=PythonEnv(python_bin=sys.executable))
        job = Job()
        for i in range(tasks):
            if kind == "function":
                job.function(noop, args=(i,), stdout=None, stderr=None)
            else:
                job.program(["true"], stdout=None, stderr=None)
        start = time.perf_counter()
        submitted = client.submit(job)
        while not (status := job_status(client, submitted.id)).get("completed"):
            time.sleep(POLL_PERIOD)
        elapsed = time.perf_counter() - start
    if status["finished"] != tasks:
        raise SystemExit(f"HQ finished {status['finished']} of {tasks} tasks: {status}")
    return elapsed


if __name__ == "__main__":
    print(f"{run(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4]):.6f}")
