"""The core path a new user walks: server, a node, a submitted array, its outputs."""

from __future__ import annotations

from harness import HqEnv


def test_array_job_runs_every_task_once_with_hq_environment(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    out = hq_env.command(["submit", "--array", "1-100", "--wait", "--",
                          "bash", "-c", "echo $HQ_JOB_ID-$HQ_TASK_ID-$HQ_INSTANCE_ID"])
    assert "Job submitted successfully, job ID: 1" in out
    for task_id in range(1, 101):
        path = hq_env.work / "job-1" / f"{task_id}.stdout"
        assert path.read_text() == f"1-{task_id}-0\n"
    assert not (hq_env.work / "job-1" / "0.stdout").exists()
    assert hq_env.job_states() == {1: "FINISHED"}


def test_task_is_pinned_to_exactly_its_cpus(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.command(["submit", "--array", "0-3", "--wait", "--", "bash", "-c",
                    "echo $HQ_CPUS; grep Cpus_allowed_list /proc/self/status"])
    for task_id in range(4):
        hq_cpus, allowed = (hq_env.work / "job-1" / f"{task_id}.stdout").read_text().split("\n")[:2]
        assert hq_cpus in ("0", "1")
        assert allowed.split(":")[1].strip() == hq_cpus


def test_failed_task_reports_exit_code(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "bash", "-c", "exit 3"])
    table = hq_env.command(["job", "info", "1"])
    assert "Program terminated with exit code 3." in table
    assert hq_env.job_states() == {1: "FAILED"}
