"""Automatic allocation's pure parts: scripts, worker command line, names and directories
(deployment.md §6.3-§6.5 test facts), batch-system parsers, demand, the planner's decisions and
reasons, rate limits and pauses, and reconciliation of polls and worker events."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest
from hqshm.cluster.ids import task_key
from hqshm.cluster.resources import RequestVariant, ResourceRequest

from hqshm.model.allocqueue import QueueParams
from hqshm.model.limits import LimitError
from hqshm.server.autoalloc import parsers, planner, reconcile, script
from hqshm.server.autoalloc.demand import queue_demand
from hqshm.server.autoalloc.state import (
    FAILED,
    FINISHED,
    PAUSED,
    QUEUED,
    RUNNING,
    Allocation,
    Queue,
    Tunables,
)

from .core_env import Env

ROOT = Path("/root")
INSTANCE = ROOT / "001"


def params(**kw: object) -> QueueParams:
    kw.setdefault("manager", "slurm")
    kw.setdefault("time_limit", 3600.0)
    return QueueParams(**kw)  # type: ignore[arg-type]


# --- scripts, names, dirs --------------------------------------------------------------------

def test_worker_command_exact() -> None:
    p = params(cpus="2x8", resources=("x=sum(100)", "y=range(1-4)", "z=[1,2,4]"),
               no_hyper_threading=True, detect_resources="cpus,mem", min_utilization=0.2)
    assert script.worker_command(p, "<hq>", INSTANCE, None) == (
        '<hq> worker start --idle-timeout "5m" --manager "slurm" --server-dir "/root/001" '
        '--cpus "2x8" --resource "x=sum(100)" --resource "y=range(1-4)" --resource "z=[1,2,4]" '
        '--no-hyper-threading --detect-resources cpus,mem --min-utilization 0.2 '
        '--on-server-lost "finish-running" --time-limit "1h"')


def test_worker_command_start_stop_wrap_rust_log() -> None:
    p = params(worker_start_cmd="init.sh", worker_stop_cmd="unload.sh")
    cmd = script.worker_command(p, "<hq>", INSTANCE, "foo")
    assert cmd.startswith("init.sh && RUST_LOG=foo <hq> worker start ")
    assert cmd.endswith('--time-limit "1h"; unload.sh')
    wrapped = script.worker_command(params(worker_wrap_cmd="podman run myimage"), "<hq>",
                                    INSTANCE, "foo")
    assert wrapped.startswith("RUST_LOG=foo podman run myimage <hq> worker start ")


def test_worker_command_idle_and_worker_time_limit() -> None:
    p = params(idle_timeout=90.0, worker_time_limit=1800.0, on_server_lost="stop",
               group="g1", coupling="cpus[0]:gpus[0]", overview_interval="2s")
    assert script.worker_command(p, "hq", INSTANCE, None) == (
        'hq worker start --idle-timeout "1m 30s" --manager "slurm" --server-dir "/root/001" '
        '--coupling "cpus[0]:gpus[0]" --group g1 --overview-interval "2s" '
        '--on-server-lost "stop" --time-limit "30m"')


def test_scripts_with_extra_args() -> None:
    extra = ("--foo=bar", "a", "b", "--baz", "42")
    pbs = params(manager="pbs", time_limit=180.0, additional_args=extra)
    text = script.pbs_script(pbs, "hq-1-1", 1, Path("/d"), "CMD")
    assert text.splitlines() == ["#!/bin/bash", "#PBS -l select=1", "#PBS -N hq-1-1",
                                 "#PBS -o /d/stdout", "#PBS -e /d/stderr",
                                 "#PBS -l walltime=00:03:00", "#PBS --foo=bar a b --baz 42",
                                 "", "CMD"]
    slurm = params(time_limit=180.0, additional_args=extra)
    text = script.slurm_script(slurm, "foo-2", 3, Path("/d"), "CMD")
    assert text.splitlines() == ["#!/bin/bash", "#SBATCH --nodes=3", "#SBATCH --job-name=foo-2",
                                 "#SBATCH --output=/d/stdout", "#SBATCH --error=/d/stderr",
                                 "#SBATCH --time=00:03:00", "#SBATCH --foo=bar a b --baz 42",
                                 "", "srun --overlap --ntasks=3 --nodes=3 CMD"]
    dry = script.pbs_script(params(manager="pbs", time_limit=7200.0), "n", 2, Path("/d"), "C",
                            dry_run=True).splitlines()
    assert dry[-3:] == ["#PBS -h", "", "pbsdsh -- bash -l -c 'C'"]
    assert "#PBS -l walltime=02:00:00" in dry


def test_names_and_dirs() -> None:
    assert script.allocation_name(1, params(), 1) == "hq-1-1"
    assert script.allocation_name(1, params(name="foo"), 1) == "foo-1"
    assert script.allocation_name(1, params(name="foo"), 2) == "foo-2"
    assert script.allocation_dir(INSTANCE, 1, params(name="foo"), 1) == \
        Path("/root/001/autoalloc/1-foo/001")
    assert script.allocation_dir(INSTANCE, 2, params(), 12) == Path("/root/001/autoalloc/2/012")
    assert script.format_walltime(90061) == "25:01:01"


def test_params_checked() -> None:
    with pytest.raises(LimitError, match="Backlog has to be at least 1"):
        params(backlog=0)
    with pytest.raises(LimitError, match="Worker time limit cannot be larger"):
        params(time_limit=60.0, worker_time_limit=61.0)
    with pytest.raises(LimitError):
        params(additional_args=("a\n#SBATCH --evil",))
    with pytest.raises(LimitError):
        params(name="../x")
    assert params().declared_resources() is None
    declared = params(cpus="4", resources=("gpus=[0,1]",)).declared_resources()
    assert declared is not None and [p.name for p in declared.pools] == ["cpus", "gpus"]


# --- parsers ---------------------------------------------------------------------------------

def test_sbatch_and_qsub() -> None:
    assert parsers.parse_sbatch("warning: x\nSubmitted batch job 1234\n") == "1234"
    assert parsers.parse_sbatch("submitted BATCH job 77 on cluster c") == "77"
    with pytest.raises(parsers.ParseError, match="Missing job id in sbatch output"):
        parsers.parse_sbatch("nothing here")
    assert parsers.parse_qsub("  12.pbs-server\n") == "12.pbs-server"
    with pytest.raises(parsers.ParseError):
        parsers.parse_qsub("")
    with pytest.raises(parsers.ParseError):
        parsers.parse_qsub("x" * 1000)


def test_scontrol() -> None:
    out = ("JobId=5 JobName=hq-1-1\n   JobState=RUNNING Reason=None Dependency=(null)\n"
           "   RunTime=00:00:05 TimeLimit=00:10:00 StartTime=2024-05-01T10:00:00 "
           "EndTime=2024-05-01T10:10:00\n")
    status = parsers.parse_scontrol_job(out)
    assert status.state == RUNNING and status.started_at is not None and status.ended_at is None
    timeout = parsers.parse_scontrol_job(out.replace("RUNNING", "TIMEOUT"))
    assert timeout.state == FINISHED and timeout.benign and timeout.ended_at is not None
    assert parsers.parse_scontrol_job("JobState=PENDING StartTime=Unknown").state == QUEUED
    preempted = parsers.parse_scontrol_job("JobState=PREEMPTED")
    assert preempted.state == FAILED and preempted.benign
    assert parsers.parse_scontrol_job("JobState=CANCELLED").state == FAILED
    with pytest.raises(parsers.ParseError):
        parsers.parse_scontrol_job("garbage")
    with pytest.raises(parsers.ParseError):
        parsers.parse_scontrol_job("JobState=WEIRD")
    assert parsers.scontrol_missing("slurm_load_jobs error: Invalid job id specified")


def test_qstat() -> None:
    data = {"Jobs": {
        "1.s": {"job_state": "Q"},
        "2.s": {"job_state": "R", "stime": "Wed May 01 10:00:00 2024"},
        "3.s": {"job_state": "F", "Exit_status": 0, "mtime": "Wed May 01 11:00:00 2024"},
        "4.s": {"job_state": "F", "Exit_status": 1},
        "5.s": {"job_state": "F", "Exit_status": -29},
    }}
    found = parsers.parse_qstat(json.dumps(data), ["1.s", "2.s", "3.s", "4.s", "5.s", "6.s"])
    assert [found[k].state for k in ("1.s", "2.s", "3.s", "4.s", "5.s")] == \
        [QUEUED, RUNNING, FINISHED, FAILED, FAILED]
    assert found["5.s"].benign and not found["4.s"].benign
    assert found["2.s"].started_at is not None
    assert "6.s" not in found
    with pytest.raises(parsers.ParseError):
        parsers.parse_qstat("not json", ["1"])
    with pytest.raises(parsers.ParseError):
        parsers.parse_qstat("[1, 2]", ["1"])


# --- demand and the planner ------------------------------------------------------------------

def queue(p: QueueParams | None = None, cpus: str | None = "4") -> Queue:
    p = p or params(cpus=cpus)
    return Queue(1, p, p.declared_resources())


def test_demand_counts_fitting_tasks_only() -> None:
    env = Env()
    env.group(8, cpus=2)  # 2 per 4-CPU worker: 4 workers
    env.group(3, cpus=8)  # never fits
    env.group(2, min_time=7200.0)  # longer than the queue lives
    first = env.group(1)
    env.group(5, deps={task_key(5, i): [task_key(first.job_id, 0)] for i in range(5)})
    env.group(4, after=[task_key(first.job_id, 0)])
    q = queue()
    d = queue_demand(env.core, q.resources, q.params.worker_limit, 1)
    assert d.unfit == 3 and d.too_long == 2 and d.blocked == 9
    assert d.fitting == 9 and d.workers == pytest.approx(4 + 1 / 4)


def test_plan_respects_backlog_and_workers_per_alloc() -> None:
    env = Env()
    env.group(40, cpus=1)  # 10 workers of 4 CPUs
    q = queue(params(cpus="4", backlog=2, max_workers_per_alloc=3))
    d = queue_demand(env.core, q.resources, 3600.0, 3)
    decision = planner.plan(q, d, 0.0)
    assert decision.submit == (3, 3) and decision.reason.startswith("backlog full")
    q.allocations["1"] = Allocation("1", 1, 1, 3, "", 0.0)
    q.allocations["2"] = Allocation("2", 1, 2, 3, "", 0.0)
    assert planner.plan(q, d, 0.0).reason == "backlog full (2 of 2 allocations queued)"


def test_plan_fewer_workers_when_demand_is_small_and_max_worker_count() -> None:
    env = Env()
    env.group(5, cpus=4)
    q = queue(params(cpus="4", backlog=10, max_workers_per_alloc=4, max_worker_count=3))
    d = queue_demand(env.core, q.resources, 3600.0, 4)
    assert planner.plan(q, d, 0.0).submit == (3,)
    q.allocations["1"] = Allocation("1", 1, 1, 3, "", 0.0, state=RUNNING)
    q.allocations["1"].connected = {1: 0.0, 2: 0.0, 3: 0.0}
    assert planner.plan(q, d, 0.0).reason == "max workers reached (3 of 3)"
    env2 = Env()
    env2.group(2, cpus=4)
    q2 = queue(params(cpus="4", backlog=10, max_workers_per_alloc=4))
    assert planner.plan(q2, queue_demand(env2.core, q2.resources, 3600.0, 4), 0.0).submit == (2,)


@pytest.mark.parametrize(("build", "reason"), [
    (lambda env: None, "no waiting tasks"),
    (lambda env: env.group(1, cpus=64), "no waiting task fits"),
    (lambda env: env.group(1, min_time=7200.0), "time request longer than the allocation"),
    (lambda env: env.group(1, after=[task_key(99, 0)]), "blocked on dependencies"),
])
def test_plan_reasons_from_demand(build, reason: str) -> None:  # noqa: ANN001
    env = Env()
    build(env)
    q = queue()
    decision = planner.plan(q, queue_demand(env.core, q.resources, 3600.0, 1), 0.0)
    assert decision.submit == () and reason in decision.reason


def test_time_request_equal_to_limit_triggers() -> None:
    env = Env()
    env.group(1, min_time=600.0)
    q = queue(params(cpus="4", time_limit=600.0))
    assert planner.plan(q, queue_demand(env.core, q.resources, 600.0, 1), 0.0).submit == (1,)


def test_probing_mode_submits_one() -> None:
    env = Env()
    env.group(100)
    q = queue(params(max_workers_per_alloc=2, backlog=5), cpus=None)
    assert q.resources is None
    d = queue_demand(env.core, None, 3600.0, 2)
    assert planner.plan(q, d, 0.0).submit == (2,)
    q.allocations["1"] = Allocation("1", 1, 1, 2, "", 0.0)
    assert "probing" in planner.plan(q, d, 0.0).reason


def test_rate_limit_and_pause_after_failed_submissions_then_retry() -> None:
    env = Env()
    env.group(4)
    q = queue()
    tun = Tunables(backoff_unit=1.0, pause_retry=100.0)
    d = queue_demand(env.core, q.resources, 3600.0, 1)
    now = 0.0
    assert planner.submission_failed(q, "Stderr: FOOBAR", now, tun) is None
    assert planner.plan(q, d, now).submit == (1,)  # first delay is 0
    planner.submission_failed(q, "Stderr: FOOBAR", now, tun)
    limited = planner.plan(q, d, now)
    assert limited.submit == () and limited.reason.startswith("rate limited after 2 failed")
    assert "FOOBAR" in limited.reason
    message = None
    for _ in range(8):
        message = planner.submission_failed(q, "Stderr: FOOBAR", now, tun)
    assert message == "The queue 1 had too many failed submissions, it will be paused."
    assert q.state == PAUSED and q.auto_paused and q.retry_at == 100.0
    assert "paused after" in planner.plan(q, d, 50.0).reason
    assert planner.plan(q, d, 100.0).submit == (1,)  # a trial, one allocation
    q.in_flight = 1
    assert planner.plan(q, d, 100.0).reason.startswith("paused after 10 failures; trying one")
    q.in_flight = 0
    planner.submission_failed(q, "again", 100.0, tun)
    assert q.state == PAUSED and q.retry_at == 100.0 + 200.0  # doubled back-off
    assert planner.plan(q, d, 300.0).submit == (1,)
    planner.submission_succeeded(q)
    assert q.state != PAUSED and q.failed_submissions == 0


def test_pause_after_failed_allocations_but_not_benign_ends() -> None:
    q = queue()
    tun = Tunables(max_allocation_fails=3)
    assert planner.allocation_ended(q, False, "", 0.0, tun) is None
    planner.allocation_ended(q, True, "x", 0.0, tun)
    planner.allocation_ended(q, True, "x", 0.0, tun)
    assert q.state != PAUSED
    assert planner.allocation_ended(q, True, "x", 0.0, tun) == \
        "The queue 1 had too many failed allocations, it will be paused."
    assert q.state == PAUSED and q.auto_paused
    planner.resume(q)
    assert q.state != PAUSED and q.failed_allocations == 0


def test_old_directories_are_retired_beyond_the_bound() -> None:
    """Ended allocations' and failed submissions' directories share one bound per queue; the
    oldest go first, and a bound of 0 keeps none."""
    dirs: deque[str] = deque()
    removed = [planner.retire_dir(dirs, f"{n:03d}", 2) for n in range(1, 6)]
    assert removed == [[], [], ["001"], ["002"], ["003"]] and list(dirs) == ["004", "005"]
    assert planner.retire_dir(dirs, "006", 0) == ["004", "005", "006"] and not dirs


def test_user_pause_stays() -> None:
    env = Env()
    env.group(1)
    q = queue()
    planner.pause(q)
    assert planner.plan(q, queue_demand(env.core, q.resources, 3600.0, 1), 1e9).reason == \
        "paused"


# --- reconciliation --------------------------------------------------------------------------

def test_workers_drive_the_allocation() -> None:
    a = Allocation("7", 1, 1, 2, "", 0.0)
    reconcile.worker_connected(a, 1, 10.0)
    assert a.state == RUNNING and a.started_at == 10.0
    reconcile.worker_connected(a, 2, 11.0)
    assert reconcile.worker_lost(a, 1, "idle-timeout", 500.0) is None
    assert reconcile.worker_lost(a, 2, "connection-lost", 501.0) == (False, "all workers ended")
    assert a.state == FINISHED and a.ended_at == 501.0


def test_worker_lost_right_after_start_fails_allocation() -> None:
    """HQ: FAILED. hqshm asks the batch system first: a preempted node loses its workers the
    same way, and that is no failure; anything else (or silence) is FAILED."""
    def suspect() -> Allocation:
        a = Allocation("7", 1, 1, 1, "", 0.0)
        reconcile.worker_connected(a, 1, 10.0)
        assert reconcile.worker_lost(a, 1, "connection-lost", 12.0) is None
        assert a.state == RUNNING and a.suspect_at == 12.0
        return a

    a = suspect()
    verdict = reconcile.status_reported(a, parsers.ManagerStatus(RUNNING, 9.0), 13.0)
    assert verdict is not None and verdict[0] and a.state == FAILED  # alive: HQ's verdict
    a = suspect()
    ending = parsers.ManagerStatus(RUNNING, 9.0, detail="COMPLETING")
    assert reconcile.status_reported(a, ending, 13.0) is None  # ending: wait for its end state
    verdict = reconcile.status_reported(a, ending, 22.0)
    assert verdict is not None and verdict[0] and a.state == FAILED  # still ending 10 s later
    a = suspect()
    verdict = reconcile.status_reported(
        a, parsers.ManagerStatus(FAILED, 9.0, 12.0, True, "PREEMPTED"), 13.0)
    assert verdict is not None and not verdict[0] and a.benign
    a = suspect()
    verdict = reconcile.status_reported(
        a, parsers.ManagerStatus(FINISHED, 9.0, 12.0, False, "COMPLETED"), 13.0)
    assert verdict is not None and verdict[0] and a.state == FAILED
    a = suspect()
    assert reconcile.status_missing(a, 13.0) is not None and a.state == FAILED
    a = suspect()
    assert reconcile.status_failed(a, "boom", 13.0) is None
    assert reconcile.status_failed(a, "boom", 23.0) is not None and a.state == FAILED


def test_manager_verdicts() -> None:
    a = Allocation("7", 1, 1, 1, "", 0.0)
    assert reconcile.status_reported(a, parsers.ManagerStatus(RUNNING, 5.0), 6.0) is None
    assert a.state == RUNNING and a.started_at == 5.0
    verdict = reconcile.status_reported(
        a, parsers.ManagerStatus(FINISHED, 5.0, 9.0, True, "TIMEOUT"), 10.0)
    assert verdict is not None and not verdict[0] and a.state == FINISHED and a.ended_at == 9.0
    b = Allocation("8", 1, 2, 1, "", 0.0)
    verdict = reconcile.status_reported(b, parsers.ManagerStatus(FAILED, None, None, True), 1.0)
    assert verdict is not None and not verdict[0] and b.state == FAILED  # preempted: benign


def test_vanished_allocation_fails_on_second_poll() -> None:
    a = Allocation("7", 1, 1, 1, "", 0.0)
    assert reconcile.status_missing(a, 1.0) is None and a.state == QUEUED
    verdict = reconcile.status_missing(a, 2.0)
    assert verdict is not None and verdict[0] and a.state == FAILED
    assert "no longer knows" in a.end_reason


def test_failing_status_queries() -> None:
    a = Allocation("7", 1, 1, 1, "", 0.0)
    for _ in range(9):
        assert reconcile.status_failed(a, "boom", 1.0) is None
    assert reconcile.status_failed(a, "boom", 1.0) is not None and a.state == FAILED
    r = Allocation("8", 1, 2, 1, "", 0.0, state=RUNNING)
    for _ in range(19):
        reconcile.status_failed(r, "boom", 1.0)
    assert r.state == RUNNING
    reconcile.status_failed(r, "boom", 1.0)
    assert r.state == FAILED


def test_worker_killed_at_walltime_is_no_failure() -> None:
    """A 1-minute allocation whose only worker is killed (connection lost) 50 s after it
    connected: the batch system's time limit, not a broken allocation."""
    a = Allocation("7", 1, 1, 1, "", 0.0)
    reconcile.worker_connected(a, 1, 10.0)
    verdict = reconcile.worker_lost(a, 1, "connection-lost", 60.0, limit=60.0)
    assert verdict == (False, "its workers ended at the time limit")
    assert a.state == FINISHED and a.benign
    b = Allocation("8", 1, 2, 1, "", 0.0)
    reconcile.worker_connected(b, 1, 10.0)
    verdict = reconcile.worker_lost(b, 1, "connection-lost", 20.0, limit=3600.0)
    assert verdict is None and b.suspect_at == 20.0  # early: the batch system decides


def test_every_reason_names_its_cause() -> None:
    """Item 5's list, each with what it promises: when a rate-limited queue may submit next,
    and the last failure's message of a paused one (failed allocations too)."""
    env = Env()
    env.group(4)
    q = queue()
    tun = Tunables(backoff_unit=60.0, pause_retry=100.0, max_allocation_fails=2)
    d = queue_demand(env.core, q.resources, 3600.0, 1)
    planner.submission_failed(q, "first", 0.0, tun)
    planner.submission_failed(q, "Stderr: no such partition", 0.0, tun)
    reason = planner.plan(q, d, 1.0).reason
    assert reason.startswith("rate limited after 2 failed submissions; may submit at ")
    assert reason.endswith("last failure: Stderr: no such partition")
    assert planner.plan(q, d, 61.0).submit == (1,)
    p = queue()
    planner.allocation_ended(p, True, "allocation 5: its status query failed", 0.0, tun)
    planner.allocation_ended(p, True, "allocation 6: every worker was lost", 0.0, tun)
    reason = planner.plan(p, d, 1.0).reason
    assert reason.startswith("paused after 2 failures; retries at ")
    assert reason.endswith("last failure: allocation 6: every worker was lost")


def test_journal_events_of_automatic_allocation() -> None:
    """`hq journal export|replay` name allocation events as HQ does (output.md §6)."""
    from hqshm.cli.eventjson import EventRenderer
    from hqshm.server.journal.allocrecords import (
        AllocQueuedRecord,
        AllocStateRecord,
        QueueCreatedRecord,
        QueueRemovedRecord,
        QueueStateRecord,
    )

    r = EventRenderer()
    p = params(name="foo", cpus="2", backlog=3)
    bodies = [e["event"] for rec in (
        QueueCreatedRecord(1, p, 10.0), QueueStateRecord(1, True, False, 11.0),
        AllocQueuedRecord(1, "42", 1, 2, "/d", 12.0), AllocStateRecord(1, "42", RUNNING, 13.0),
        AllocStateRecord(1, "42", FAILED, 14.0), QueueRemovedRecord(1, 15.0))
        for e in r.render(rec)]
    assert [b["type"] for b in bodies] == [
        "autoalloc-queue-created", "autoalloc-allocation-queued", "autoalloc-allocation-started",
        "autoalloc-allocation-finished", "autoalloc-queue-removed"]
    created = bodies[0]
    assert created["queue-id"] == 1 and created["params"]["name"] == "foo"
    assert created["params"]["backlog"] == 3 and created["params"]["manager"] == "Slurm"
    assert created["params"]["worker_args"][0] == '--cpus "2"'
    assert bodies[1] == {"type": "autoalloc-allocation-queued", "queue-id": 1,
                         "allocation-id": "42", "worker-count": 2}
    assert bodies[2] == {"type": "autoalloc-allocation-started", "queue-id": 1,
                         "allocation-id": "42"}


def test_compacted_journal_restores_allocations() -> None:
    """The journal's snapshot (what compaction keeps) restores queues, allocations with their
    states and times, the counters, and the directories that old ones are removed from."""
    from hqshm.server.autoalloc.service import AutoAlloc

    def service() -> AutoAlloc:
        return AutoAlloc(None, lambda: None, lambda r: None, lambda *a: None,  # type: ignore[arg-type]
                         lambda *a: None, lambda: b"", {})

    old = service()
    q = Queue(2, params(name="n", cpus="1"), None, created_at=5.0, counter=2)
    q.allocations["41"] = Allocation("41", 2, 1, 1, "/d/001", 6.0, state=FINISHED,
                                     started_at=7.0, ended_at=8.0)
    q.allocations["42"] = Allocation("42", 2, 2, 1, "/d/002", 9.0, state=RUNNING,
                                     started_at=10.0)
    old.queues[2] = q
    old.next_queue_id = 3
    new = service()
    new.restore(list(old.snapshot()), 100.0)
    r = new.queues[2]
    assert new.next_queue_id == 3 and r.counter == 2 and r.created_at == 5.0
    assert [(a.id, a.state, a.queued_at, a.started_at, a.ended_at)
            for a in r.allocations.values()] == [("41", FINISHED, 6.0, 7.0, 8.0),
                                                  ("42", RUNNING, 9.0, 10.0, None)]
    assert new.by_alloc == {"41": 2, "42": 2} and list(new.ended_dirs[2]) == ["/d/001"]


def test_min_utilization_and_multi_node_sizing() -> None:
    """--min-utilization: a worker that its tasks would fill less than that is not started
    (beyond the full ones). Multi-node tasks get allocations of their node count each."""
    env = Env()
    env.group(5, cpus=1)  # 1.25 workers of 4 CPUs
    q = queue(params(cpus="4", backlog=5, max_workers_per_alloc=4, min_utilization=0.5))
    d = queue_demand(env.core, q.resources, 3600.0, 4)
    assert planner.plan(q, d, 0.0).submit == (1,)  # the quarter-filled second one is not
    small = Env()
    small.group(1, cpus=1)
    d = queue_demand(small.core, q.resources, 3600.0, 4)
    decision = planner.plan(q, d, 0.0)
    assert decision.submit == () and "--min-utilization 0.5" in decision.reason
    assert planner.worker_demand(1.5, 0.5) == 2 and planner.worker_demand(1.25, 0.0) == 2
    multi = Env()
    multi.group(2, req=ResourceRequest((RequestVariant(n_nodes=2),)))
    multi.group(1, req=ResourceRequest((RequestVariant(n_nodes=8),)))  # more than 4: unfit
    q = queue(params(cpus="4", backlog=5, max_workers_per_alloc=4))
    d = queue_demand(multi.core, q.resources, 3600.0, 4)
    assert d.multi_node == [2, 2] and d.unfit == 1
    assert planner.plan(q, d, 0.0).submit == (2, 2)


def test_just_connected_worker_is_not_unmet_demand() -> None:
    """A tick in the same turn as a worker's registration sees its tasks still waiting: that
    worker counts as coming for a few seconds, so no second allocation is submitted."""
    env = Env()
    env.group(1)
    q = queue(params(cpus="4", backlog=3))
    a = Allocation("1", 1, 1, 1, "", 0.0)
    q.allocations["1"] = a
    reconcile.worker_connected(a, 1, 100.0)
    d = queue_demand(env.core, q.resources, 3600.0, 1)
    assert planner.plan(q, d, 100.0).submit == ()
    assert planner.plan(q, d, 106.0).submit == (1,)  # still waiting later: unmet demand


def test_allocation_ids_sort_by_their_numbers() -> None:
    """`hq alloc info` lists allocations by id: Slurm's job 10 after job 9 (a text sort put it
    first, and the real-Slurm restore test then read the wrong allocation once Slurm's job
    ids reached two digits)."""
    from hqshm.server.autoalloc.state import id_order

    ids = ["10", "9", "100", "11", "99.pbs-1", "100.pbs-1", "7.pbs-2"]
    assert sorted(ids, key=id_order) == ["7.pbs-2", "9", "10", "11", "99.pbs-1", "100",
                                         "100.pbs-1"]


def test_new_tasks_get_the_allocator_s_look_after_the_scheduler_s(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduling pass put off to a later turn (a busy server spaces them) left a new task
    waiting beside a free worker, and the allocator asked for a worker for it."""
    from hqshm.server.autoalloc.service import AutoAlloc

    env = Env()
    service = AutoAlloc(env.core, lambda: None, lambda r: None, lambda *a: None,
                        lambda *a: None, lambda: b"", {})
    service.queues[1] = Queue(1, params(name="q", cpus="1"), None, created_at=0.0)
    ticks: list[float] = []
    monkeypatch.setattr(service, "tick", ticks.append)
    env.core.needs_scheduling = True
    service.after_turn(10.0, next_gid=5)
    assert ticks == []
    env.core.needs_scheduling = False
    service.after_turn(10.5, next_gid=5)
    assert ticks == [10.5]
    service.after_turn(11.0, next_gid=5)  # nothing new since
    assert ticks == [10.5]
