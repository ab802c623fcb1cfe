"""`hq alloc` against recorded PBS behaviour (autoalloc_helpers.FakePbs: no PBS server can run
here, so fake qsub/qstat/qdel first on the server's PATH stand in for it): commands and
messages, the script and directory of a submission, states from polls, failing qsub, vanished
jobs, pause after failures with retries, dry runs, remove, server stop, journal restore."""

from __future__ import annotations

from pathlib import Path

import pytest
from autoalloc_helpers import FakePbs, allocations, queue_json, start_server, wait_allocs
from harness import HqEnv, Table

pytestmark = pytest.mark.slow  # several s each: a server, fake PBS programs, polls


@pytest.fixture
def pbs(hq_env: HqEnv) -> FakePbs:
    return FakePbs(hq_env.root)


def _start(hq_env: HqEnv, pbs: FakePbs, args: tuple[str, ...] = (), **extra: str) -> None:
    start_server(hq_env, pbs.env(hq_env.env(), **extra), args)


def test_queue_commands_and_listing(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs)
    out = hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run",
                          "--name", "foo", "--backlog", "3", "-m", "2", "--", "-q", "qexp"])
    assert "Allocation queue 1 successfully created" in out
    assert "probing mode" in out
    table = hq_env.command(["alloc", "list"], as_table=True)
    assert table.header == ["ID", "State", "Backlog size", "Max workers per alloc",
                            "Max worker count", "Timelimit", "Manager", "Worker resources",
                            "Name", "Args"]
    assert table.rows == [["1", "ACTIVE", "3", "2", "0", "1h", "PBS", "<unknown>", "foo",
                           "-q,qexp"]]
    q = queue_json(hq_env)
    assert (q["manager"], q["state"], q["timelimit"], q["additional_args"], q["name"]) == \
        ("PBS", "Active", 3600.0, ["-q", "qexp"], "foo")
    assert q["worker_args"][-2:] == ['--on-server-lost "finish-running"', '--time-limit "1h"']
    assert "Allocation queue 1 successfully paused" in hq_env.command(["alloc", "pause", "1"])
    assert hq_env.command(["alloc", "list"], as_table=True).rows[0][1] == "PAUSED"
    assert "successfully resumed" in hq_env.command(["alloc", "resume", "1"])
    hq_env.command(["alloc", "pause", "7"], expect_fail="Allocation queue not found")
    hq_env.command(["alloc", "info", "7"], expect_fail="Queue 7 not found")
    hq_env.command(["alloc", "log", "nope", "stdout"], expect_fail="Allocation nope not found")
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--backlog", "0"],
                   expect_fail="Backlog has to be at least 1")
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--workers-per-alloc", "0"],
                   expect_fail="max workers per allocation 0 is out of range")  # older name
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "10m", "--worker-time-limit", "1h"],
                   expect_fail="Worker time limit cannot be larger than queue time limit")
    out = hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run",
                          "--cpus", "4", "--idle-timeout", "20m"])
    assert "idle timeout longer than 10 minutes" in out and "probing mode" not in out
    assert hq_env.command(["alloc", "list"], as_table=True).rows[1][7] == "cpus 4"
    assert "successfully removed" in hq_env.command(["alloc", "remove", "2"])
    assert [q["id"] for q in hq_env.json(["alloc", "list"])] == [1]


def test_submission_script_dir_and_states(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs, RUST_LOG="foo")
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "3m", "--no-dry-run", "--name",
                    "foo", "--cpus", "2", "--", "--foo=bar", "a", "b", "--baz", "42"])
    hq_env.command(["submit", "--", "true"])
    allocs = wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation")
    workdir = hq_env.server_dir / "001" / "autoalloc" / "1-foo" / "001"
    assert allocs[0]["id"] == "1.pbs" and allocs[0]["status"] == "queued"
    assert allocs[0]["workdir"] == str(workdir) and allocs[0]["target_worker_count"] == 1
    qsub = pbs.calls("qsub")[0]
    assert qsub["args"] == ["hq-submit.sh"] and qsub["cwd"] == str(workdir)
    assert (workdir / "jobid").read_text() == "1.pbs"
    lines = (workdir / "hq-submit.sh").read_text().splitlines()
    assert lines[:7] == ["#!/bin/bash", "#PBS -l select=1", "#PBS -N foo-1",
                         f"#PBS -o {workdir}/stdout", f"#PBS -e {workdir}/stderr",
                         "#PBS -l walltime=00:03:00", "#PBS --foo=bar a b --baz 42"]
    assert lines[7] == ""
    assert lines[8].startswith("RUST_LOG=foo /") and lines[8].endswith(
        f'/hq worker start --idle-timeout "5m" --manager "pbs" --server-dir '
        f'"{hq_env.server_dir / "001"}" --cpus "2" --on-server-lost "finish-running" '
        '--time-limit "3m"')
    pbs.set_job("1.pbs", job_state="R", stime="Wed May 01 10:00:00 2024")
    wait_allocs(hq_env, lambda a: a[0]["status"] == "running", "RUNNING")
    pbs.set_job("1.pbs", job_state="F", Exit_status=0, stime="Wed May 01 10:00:00 2024",
                mtime="Wed May 01 10:05:00 2024")
    allocs = wait_allocs(hq_env, lambda a: a[0]["status"] == "finished", "FINISHED")
    assert allocs[0]["started_at"] and allocs[0]["ended_at"]
    table = hq_env.command(["alloc", "info", "1"], as_table=True)
    assert table.header == ["ID", "State", "Working directory", "Worker count", "Queue time",
                            "Start time", "Finish time"]
    assert table.rows[0][:4] == ["1.pbs", "FINISHED", str(workdir), "1"]
    assert hq_env.json(["alloc", "info", "1", "--filter", "running"]) == []
    (workdir / "stdout").write_text("hello from the allocation\n")
    out = hq_env.command(["alloc", "log", "1.pbs", "stdout"])
    assert "hello from the allocation" in out and "Outputting allocation path at" in out
    # `cat`: the older name, which HQ users' scripts may still call.
    assert "hello from the allocation" in hq_env.command(["alloc", "cat", "1.pbs", "stdout"])


def test_failing_qsub_is_reported_and_rate_limited(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs)
    pbs.fail_qsub("FOOBAR")
    out = hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h"], expect_fail="FOOBAR")
    assert "Dry-run (test allocation submission) has failed" in out
    assert "Could not submit allocation: qsub execution failed" in out and "Stderr: FOOBAR" in out
    hq_env.command(["alloc", "dry-run", "pbs", "--time-limit", "1h"],
                   expect_fail="Could not submit allocation: qsub execution failed")
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1"])
    hq_env.command(["submit", "--", "true"])
    hq_env.wait_until(lambda: queue_json(hq_env)["status"]["failed_submissions"] >= 2,
                      "two failed submissions")
    status = queue_json(hq_env)["status"]
    assert status["reason"].startswith("rate limited after 2 failed submissions")
    assert "Stderr: FOOBAR" in status["last_failure"] and status["next_submit_at"]
    result = hq_env.run(["alloc", "info", "1"])
    assert b"Queue 1 is not submitting: rate limited" in result.stderr
    assert allocations(hq_env) == []


def test_queue_pauses_after_failures_and_retries(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs, HQ_AUTOALLOC_BACKOFF_UNIT_MS="1", HQ_AUTOALLOC_PAUSE_RETRY_MS="1500")
    pbs.fail_qsub("FOOBAR")
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1"])
    hq_env.command(["submit", "--", "true"])
    hq_env.wait_until(lambda: queue_json(hq_env)["state"] == "Paused", "the queue to pause")
    assert "The queue 1 had too many failed submissions, it will be paused." in \
        hq_env.log("server")
    q = queue_json(hq_env)
    assert q["status"]["paused_automatically"] and q["status"]["retry_at"]
    assert q["status"]["reason"].startswith("paused after 10 failures")
    # `hq alloc info` says it too (qsub still fails: paused, waiting for or trying a retry).
    stderr = hq_env.run(["alloc", "info", "1"]).stderr.decode()
    assert "Queue 1 is not submitting: paused after 10 failures" in stderr
    assert "last failure: qsub execution failed" in stderr and "FOOBAR" in stderr
    pbs.fail_qsub(None)  # the cause is gone: the next retry submits and resumes the queue
    hq_env.wait_until(lambda: queue_json(hq_env)["state"] == "Active", "the queue to resume",
                      timeout=10)
    wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation")


def test_allocation_directories_are_bounded(hq_env: HqEnv, pbs: FakePbs) -> None:
    """Only the newest HQ_AUTOALLOC_KEEP_DIRS directories of ended allocations and failed
    submissions stay (the active allocation's always does): a queue that keeps retrying a
    failing qsub, or runs allocation after allocation, does not fill the disk."""
    _start(hq_env, pbs, HQ_AUTOALLOC_KEEP_DIRS="2", HQ_AUTOALLOC_BACKOFF_UNIT_MS="1")
    pbs.fail_qsub("FOOBAR")
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1"])
    hq_env.command(["submit", "--", "true"])  # no worker ever comes: the demand stays
    hq_env.wait_until(lambda: queue_json(hq_env)["status"]["failed_submissions"] >= 4,
                      "four failed submissions")
    queue_dir = hq_env.server_dir / "001" / "autoalloc" / "1"

    def names() -> list[str]:
        return sorted(p.name for p in queue_dir.iterdir())

    hq_env.wait_until(lambda: len(names()) == 2, "only two directories of failed submissions")
    pbs.fail_qsub(None)
    for n in range(1, 4):  # three allocations end in turn, each replaced by a new one
        job = f"{n}.pbs"
        wait_allocs(hq_env, lambda a, job=job: any(x["id"] == job for x in a), job)
        pbs.set_job(job, job_state="F", Exit_status=0)
    allocs = wait_allocs(hq_env, lambda a: len(a) == 4 and a[2]["status"] == "finished",
                         "three finished allocations and a queued one")
    assert [a["status"] for a in allocs] == ["finished"] * 3 + ["queued"]
    kept = sorted(Path(a["workdir"]).name for a in allocs[1:])
    hq_env.wait_until(lambda: names() == kept, f"only the directories {kept}")
    assert (Path(allocs[3]["workdir"]) / "hq-submit.sh").exists()
    assert not Path(allocs[0]["workdir"]).exists()


def test_vanished_allocation_fails_and_is_replaced(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs)
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1"])
    hq_env.command(["submit", "--", "true"])
    wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation")
    pbs.forget_job("1.pbs")
    allocs = wait_allocs(hq_env, lambda a: len(a) == 2 and a[0]["status"] == "failed",
                         "FAILED and a new one")
    assert allocs[1]["status"] == "queued"


def test_failed_status_queries_end_allocation(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs)
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1"])
    hq_env.command(["submit", "--", "true"])
    wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation")
    (pbs.state / "qstat_fail").write_text("")
    wait_allocs(hq_env, lambda a: a[0]["status"] == "failed" and len(a) == 2,
                "FAILED after failing polls, and a new QUEUED one")


def test_dry_run_submits_and_cancels(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs)
    out = hq_env.command(["alloc", "dry-run", "pbs", "--time-limit", "1h"])
    assert "A trial allocation was submitted successfully. It was immediately canceled" in out
    assert [c["args"] for c in pbs.calls("qdel")] == [["1.pbs"]]
    out = hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--cpus", "1"])
    assert "A trial allocation was submitted successfully" in out
    assert [c["args"] for c in pbs.calls("qdel")][-1] == ["2.pbs"]
    assert len(hq_env.json(["alloc", "list"])) == 1


def test_remove_and_server_stop_cancel(hq_env: HqEnv, pbs: FakePbs) -> None:
    _start(hq_env, pbs)
    for _ in range(2):
        hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run",
                        "--cpus", "1"])
    hq_env.command(["submit", "--", "sleep", "100"])
    first = wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation of queue 1")[0]["id"]
    second = wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation of queue 2",
                         queue=2)[0]["id"]
    pbs.set_job(first, job_state="R")
    wait_allocs(hq_env, lambda a: a[0]["status"] == "running", "RUNNING")
    hq_env.command(["alloc", "remove", "1"], expect_fail="Allocation queue has running jobs, "
                   "so it will not be removed. Use `--force` if you want to remove the queue "
                   "anyway")
    hq_env.command(["alloc", "remove", "1", "--force"])
    hq_env.wait_until(lambda: [first] in [c["args"] for c in pbs.calls("qdel")], "qdel")
    hq_env.command(["server", "stop"])
    hq_env.server.wait(timeout=20)
    assert [second] in [c["args"] for c in pbs.calls("qdel")]


def test_queues_restored_from_journal(hq_env: HqEnv, pbs: FakePbs) -> None:
    journal = str(hq_env.root / "journal.bin")
    _start(hq_env, pbs, ("--journal", journal))
    for name in ("a", "b", "c"):
        hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--name",
                        name, "--", "-q", "x"])
    hq_env.command(["alloc", "remove", "2"])
    hq_env.command(["alloc", "pause", "3"])
    before = hq_env.json(["alloc", "list"])
    hq_env.command(["server", "stop"])
    hq_env.server.wait(timeout=20)
    _start(hq_env, pbs, ("--journal", journal))
    after = hq_env.json(["alloc", "list"])
    strip = [{k: v for k, v in q.items() if k != "status"} for q in before]
    assert [{k: v for k, v in q.items() if k != "status"} for q in after] == strip
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run"])
    assert [q["id"] for q in hq_env.json(["alloc", "list"])] == [1, 3, 4]
    assert Table  # imported for the table checks above


def test_reasons_and_no_allocation_for_blocked_or_unfit_tasks(hq_env: HqEnv,
                                                               pbs: FakePbs) -> None:
    _start(hq_env, pbs)
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "30m", "--no-dry-run", "--cpus", "1"])

    def reason() -> str:
        return queue_json(hq_env)["status"]["reason"] or ""

    hq_env.wait_until(lambda: reason() == "no waiting tasks", "the first tick")
    hq_env.command(["submit", "--time-request", "1h", "--", "true"])
    hq_env.wait_until(lambda: "time request longer than the allocation" in reason(), "reason")
    hq_env.command(["job", "cancel", "1"])
    hq_env.command(["submit", "--cpus", "4", "--", "true"])
    hq_env.wait_until(lambda: "no waiting task fits this queue's workers" in reason(), "reason")
    hq_env.command(["job", "cancel", "2"])
    hq_env.start_worker(cpus=1)
    hq_env.command(["submit", "--", "sleep", "8"])
    hq_env.command(["submit", "--after", "3", "--", "true"])
    hq_env.wait_until(lambda: "blocked on dependencies" in reason(), "reason")
    assert pbs.calls("qsub") == []
    # Once the dependency finished, the task waits ready: the worker takes it, or the queue
    # submits for it; either way it runs.
    hq_env.wait_for_job_state(4, "FINISHED", timeout=40)


def test_backlog_and_max_worker_count_reasons(hq_env: HqEnv, pbs: FakePbs) -> None:
    """Item 5's limits at the user level: three waiting tasks, a queue with a backlog of 1
    and one capped at one worker each submit one allocation and say which limit stops them
    (`hq alloc info` and `hq alloc list`'s JSON)."""
    _start(hq_env, pbs)
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1"])
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1",
                    "--backlog", "3", "--max-worker-count", "1"])
    hq_env.command(["submit", "--array", "1-3", "--", "true"])
    for queue in (1, 2):
        wait_allocs(hq_env, lambda a: len(a) == 1, f"an allocation of queue {queue}", queue)
    hq_env.wait_until(lambda: queue_json(hq_env, 1)["status"]["reason"] ==
                      "backlog full (1 of 1 allocations queued)", "queue 1's reason")
    hq_env.wait_until(lambda: queue_json(hq_env, 2)["status"]["reason"] ==
                      "max workers reached (1 of 1)", "queue 2's reason")
    assert "Queue 1 is not submitting: backlog full (1 of 1 allocations queued)" in \
        hq_env.run(["alloc", "info", "1"]).stderr.decode()
    assert "Queue 2 is not submitting: max workers reached (1 of 1)" in \
        hq_env.run(["alloc", "info", "2"]).stderr.decode()
    assert len(pbs.calls("qsub")) == 2


def test_workers_lost_at_once_ask_the_batch_system(hq_env: HqEnv, pbs: FakePbs) -> None:
    """Every worker of an allocation lost right after connecting: HQ calls it FAILED. hqshm
    asks the batch system first (no regular poll runs here): preempted (Exit_status 271) is
    no failure; a job PBS still shows running is FAILED at once, as in HQ."""
    _start(hq_env, pbs, HQ_AUTOALLOC_REFRESH_INTERVAL_MS="3600000")
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1"])
    hq_env.command(["submit", "--", "sleep", "100"])

    def run_and_kill(job_id: str, index: int) -> None:
        wait_allocs(hq_env, lambda a: job_id in [x["id"] for x in a], f"allocation {job_id}")
        pbs.set_job(job_id, job_state="R")
        hq_env.start_worker(env={**pbs.env(hq_env.env()), "PBS_ENVIRONMENT": "PBS_BATCH",
                                 "PBS_JOBID": job_id})
        wait_allocs(hq_env, lambda a: a[-1]["status"] == "running", f"{job_id} RUNNING")
        hq_env.wait_for_job_state(1, "RUNNING")
        if job_id == "1.pbs":
            pbs.set_job(job_id, job_state="F", Exit_status=271)
        hq_env.kill_worker(index)

    run_and_kill("1.pbs", 1)
    # PBS's state decides what is shown (F with a non-zero exit: failed), but it is no failure
    # of the queue.
    allocs = wait_allocs(hq_env, lambda a: a[0]["status"] != "running", "the verdict")
    assert allocs[0]["status"] == "failed"
    assert queue_json(hq_env)["status"]["failed_allocations"] == 0
    assert "Allocation 1.pbs failed: the batch system reports it ended (Exit_status=271)" in \
        hq_env.log("server")
    run_and_kill("2.pbs", 2)
    allocs = wait_allocs(hq_env, lambda a: a[1]["status"] != "running", "the verdict",
                         timeout=5)
    assert allocs[1]["status"] == "failed"
    assert queue_json(hq_env)["status"]["failed_allocations"] == 1


def test_multi_node_task_gets_an_allocation_of_its_size(hq_env: HqEnv, pbs: FakePbs) -> None:
    """A 2-node task: one allocation of 2 workers (select=2, pbsdsh), even though the queue
    could give 4; a 5-node task never fits a queue of 4-worker allocations."""
    _start(hq_env, pbs)
    hq_env.command(["alloc", "add", "pbs", "--time-limit", "1h", "--no-dry-run", "--cpus", "1",
                    "-m", "4", "--backlog", "3"])
    hq_env.command(["submit", "--nodes", "5", "--", "true"])
    hq_env.wait_until(lambda: "no waiting task fits" in (
        queue_json(hq_env)["status"]["reason"] or ""), "the reason")
    hq_env.command(["submit", "--nodes", "2", "--", "true"])
    allocs = wait_allocs(hq_env, lambda a: len(a) == 1, "an allocation")
    assert allocs[0]["target_worker_count"] == 2
    script = (hq_env.server_dir / "001" / "autoalloc" / "1" / "001" / "hq-submit.sh").read_text()
    assert "#PBS -l select=2" in script and "pbsdsh -- bash -l -c '" in script
    hq_env.wait_until(lambda: queue_json(hq_env)["status"]["reason"], "a tick without need")
    assert len(allocations(hq_env)) == 1
