"""A node keeps the live groups only (issue 9): every single-task job is a group, and a node
that runs a million of them must not keep a million."""

from __future__ import annotations

import re

from harness import HqEnv
from hqshm.cluster.resources import cpus_request

from hqshm.link import submitting
from hqshm.link.client import ClientConnection
from hqshm.model.submission import ArraySubmission, StdioDesc, TaskTemplate

JOBS = 300
KEPT = re.compile(r"The server forgot (\d+) groups; (\d+) groups kept here")


def submit_single_task_jobs(hq_env: HqEnv, jobs: int) -> None:
    """Single-task jobs over one connection (a process per `hq submit` takes far longer)."""
    template = TaskTemplate(args=("true",), env={}, cwd="%{SUBMIT_DIR}",
                            stdout=StdioDesc("none"), stderr=StdioDesc("none"),
                            request=cpus_request())
    submission = ArraySubmission("single", None, str(hq_env.work), template, ((0, 0, 1),))
    with ClientConnection(hq_env.server_dir) as conn:
        for _ in range(jobs):
            submitting.submit(conn, submission)


def test_a_node_forgets_the_groups_of_finished_jobs(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2, env={"HQ_DEBUG": "1"})
    submit_single_task_jobs(hq_env, JOBS)
    hq_env.command(["job", "wait", "all"], timeout=120)
    assert set(hq_env.job_states().values()) == {"FINISHED"}

    def forgotten() -> tuple[int, int] | None:
        seen = [(int(a), int(b)) for a, b in KEPT.findall(hq_env.log("worker1"))]
        total = sum(a for a, _ in seen)
        return (total, seen[-1][1]) if total >= JOBS else None

    total, kept = hq_env.wait_until(forgotten, "the node to forget every group")
    assert (total, kept) == (JOBS, 0)
    # The node still runs what comes next.
    submit_single_task_jobs(hq_env, 3)
    hq_env.command(["job", "wait", "all"], timeout=60)
    assert set(hq_env.job_states().values()) == {"FINISHED"}
