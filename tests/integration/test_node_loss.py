"""Losing a node or an executor (issue 8, items 4 and 5; spec/deployment.md §4.2, §4.4).

A node killed with SIGKILL gives its running tasks back at once (crash count +1) and leaves no
process, shared-memory name or task directory behind; a node frozen past its heartbeat timeout
is dropped, and when it runs again it kills what it held instead of running it twice. A task
that kills its executor fails alone: the tasks queued behind it on that executor run elsewhere.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest
from harness import HqEnv
from job_helpers import submit, task_json
from worker_helpers import (
    children_of,
    read_pid,
    remove_shm_segments_of,
    shm_segments_of,
    wait_exit,
    wait_gone,
    worker_table,
)

from hqshm.node.loop import ABANDONED_AFTER, RESULTS_PREFIX

# The task of id {victim} kills its executor (its program's parent); every other one records
# that it ran.
KILL_EXECUTOR = (
    'if [ "$HQ_TASK_ID" = {victim} ]; then kill -9 $PPID; sleep 1; fi; echo $HQ_TASK_ID >> ran'
)
CRASHED_ONCE = (
    "Task was running on a worker that was lost; the task has occurred 1 times in this "
    "situation and limit was reached."
)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def task_states(env: HqEnv, job: int) -> dict[int, str]:
    return {t: d["state"] for t, d in task_json(env, job).items()}


def logged_at(env: HqEnv, name: str, text: str) -> float:
    """The epoch time of the first log line of ``name`` (run with --debug: milliseconds)
    that contains ``text``."""
    for line in env.log(name).splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z ", line)
        if match and text in line:
            stamp = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
            return stamp + int(match.group(2)) / 1000
    raise AssertionError(f"no {text!r} in the log of {name}")


# --- a node killed with SIGKILL (item 4) ----------------------------------------------------

# Records its pid, then runs long in its task directory (which the node must remove).
HOLD = 'echo $$ > "$HQ_SUBMIT_DIR/pid-$HQ_JOB_ID"; cd "$HQ_TASK_DIR"; touch inside; exec sleep 100'


def test_sigkill_of_a_node_requeues_its_tasks_at_once_and_leaves_nothing(hq_env: HqEnv) -> None:
    hq_env.start_server(["--debug"])  # milliseconds in its log
    worker = hq_env.start_worker(cpus=2)
    executors = children_of(worker.pid)
    work_dir = hq_env.root / "worker1"
    # With --stdin the task's input waits in a file of the work dir too.
    again = submit(hq_env, ["--task-dir", "--stdin", "--", "bash", "-c", HOLD], stdin=b"in\n")
    once = submit(hq_env, ["--task-dir", "--crash-limit=1", "--", "bash", "-c", HOLD])
    pids = [read_pid(hq_env, hq_env.work / f"pid-{job}") for job in (again, once)]
    hq_env.wait_for_job_state([again, once], "RUNNING")
    assert len(list(work_dir.glob("t*"))) == 2, "each task has its directory"
    assert len(list(work_dir.glob("stdin-*"))) == 1
    try:
        killed = time.time()
        os.kill(worker.pid, signal.SIGKILL)  # the node alone, not its process group
        hq_env.wait_until(lambda: task_states(hq_env, again) == {0: "waiting"},
                          "the task to be requeued", interval=0.0)
        seen = time.time() - killed  # through `hq`: includes one command's run time
        # The server gives the tasks back as it logs the loss (cluster/reactor.py).
        requeued = logged_at(hq_env, "server", "Worker 1 lost") - killed
        print(f"requeued {requeued:.3f} s after SIGKILL of the node (seen by hq: {seen:.3f} s)")
        assert requeued < 1.0, f"requeued {requeued:.3f} s after the kill"
        assert wait_exit(worker) == -signal.SIGKILL
        # The crash counted: with a crash limit of 1, the other task failed.
        assert task_states(hq_env, once) == {0: "failed"}
        assert task_json(hq_env, once)[0]["error"] == CRASHED_ONCE
        wait_gone(hq_env, pids, "the tasks to die with their node", timeout=5.0)
        wait_gone(hq_env, executors, "the executors to die with their node", timeout=5.0)
        assert shm_segments_of(worker.pid) == []
        hq_env.wait_until(lambda: not any(work_dir.iterdir()),
                          f"the work dir to be empty: {list(work_dir.iterdir())}", timeout=5.0)
    finally:
        remove_shm_segments_of(worker.pid)
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")


def test_sigkill_of_a_node_removes_its_own_work_dir(hq_env: HqEnv) -> None:
    """Without --work-dir the node works in a fresh /tmp/hq-worker*/work, its own to remove."""
    hq_env.start_server()
    worker = hq_env.spawn("worker1", ["worker", "start", "--detect-resources=none", "--cpus=1",
                                      "--hostname=own"])
    hq_env.wait_until(lambda: 1 in hq_env.worker_states(), "the worker to connect")
    work_dir = Path(worker_table(hq_env, 1).get("Working directory"))
    assert work_dir.name == "work" and work_dir.parent.name.startswith("hq-worker")
    job = submit(hq_env, ["--task-dir", "--", "bash", "-c", HOLD])
    task = read_pid(hq_env, hq_env.work / f"pid-{job}")
    hq_env.wait_until(lambda: any(work_dir.glob("t*/inside")), "the task in its directory")
    os.kill(worker.pid, signal.SIGKILL)
    assert wait_exit(worker) == -signal.SIGKILL
    wait_gone(hq_env, [task], "the task to die with its node", timeout=5.0)
    hq_env.wait_until(lambda: not work_dir.parent.exists(), "the node's own dir to go",
                      timeout=5.0)


def _results_dir_of(pid: int) -> Path:
    """The result directory a node holds open (and locked), from its open descriptors."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = Path(os.readlink(fd))
            if target.name.startswith(RESULTS_PREFIX):
                return target
    raise AssertionError(f"node {pid} holds no result directory")


def test_result_dirs_of_a_killed_node_and_its_executors_go_with_the_next_node(
        hq_env: HqEnv) -> None:
    """A batch system or the OOM killer may SIGKILL a node with all its executors: nobody is
    left to remove its result directory, which on tmpfs holds memory. The next node started
    on the machine finds it unlocked and removes it."""
    hq_env.start_server()
    first = hq_env.start_worker(cpus=1)
    results_dir = _results_dir_of(first.pid)
    assert results_dir.is_dir()
    hq_env.kill_worker(1)  # the whole process group: node and executors
    assert results_dir.is_dir(), "nobody was left to remove it"
    old = time.time() - 2 * ABANDONED_AFTER  # as if it had been killed a while ago
    os.utime(results_dir, (old, old))
    second = hq_env.start_worker(cpus=1)
    assert not results_dir.exists()
    assert _results_dir_of(second.pid).is_dir()
    hq_env.expect_log("Removed .* result director")


# --- a node frozen past its heartbeat timeout (item 4) ----------------------------------------

# Each run appends `start|end TASK INSTANCE`; the first instance runs long enough to be
# running still when its frozen node wakes up, the next ones are short.
RECORD = (
    'echo "start $HQ_TASK_ID $HQ_INSTANCE_ID" >> log; '
    'echo $$ > "pid-$HQ_TASK_ID-$HQ_INSTANCE_ID"; '
    'if [ "$HQ_INSTANCE_ID" = 0 ]; then sleep 15; else sleep 1; fi; '
    'echo "end $HQ_TASK_ID $HQ_INSTANCE_ID" >> log'
)


def test_a_frozen_node_is_dropped_and_kills_its_tasks_when_it_wakes(hq_env: HqEnv) -> None:
    """Issue 8 item 4: tasks of a node frozen (SIGSTOP) past its heartbeat timeout ran
    twice: the node went on with them after SIGCONT. Now it kills them and exits 1."""
    hq_env.start_server()
    frozen = hq_env.start_worker(cpus=2, args=["--heartbeat", "1s"])
    job = submit(hq_env, ["--array", "1-4", "--", "bash", "-c", RECORD])
    log = hq_env.work / "log"
    hq_env.wait_until(lambda: len(lines(log)) == 2, "two tasks to start on the node")
    first = sorted(int(line.split()[1]) for line in lines(log))
    pids = [read_pid(hq_env, hq_env.work / f"pid-{t}-0") for t in first]
    os.kill(frozen.pid, signal.SIGSTOP)  # the node; its executors and tasks run on
    try:
        hq_env.start_worker(cpus=4)
        hq_env.wait_for_worker_state(1, "HEARTBEAT LOST", timeout=15.0)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    woke = lines(log)
    assert wait_exit(frozen, timeout=10.0) == 1
    wait_gone(hq_env, pids, "the frozen node's tasks to be killed", timeout=5.0)
    hq_env.wait_for_job_state(job, "FINISHED", timeout=30.0)
    runs = lines(log)
    # Nothing of the first instances after the node woke up: no start, no end.
    assert [r for r in runs[len(woke):] if r.endswith(" 0")] == [], runs
    ends = sorted(r for r in runs if r.startswith("end"))
    assert [r.split()[1] for r in ends] == ["1", "2", "3", "4"], runs  # each ran to its end once
    assert all(r.split()[2] != "0" for r in ends), runs  # on the other node
    assert "The server dropped this worker" in hq_env.log("worker1") or \
        "unresponsive" in hq_env.log("worker1")


# --- executor loss (item 5) -------------------------------------------------------------------


@pytest.mark.parametrize("victim", [0, 3, 7])
def test_a_task_that_kills_its_executor_fails_alone(hq_env: HqEnv, victim: int) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    # Short tasks: after the first ones the node hands the next task off behind the running
    # one, on the same executor, which is what the killer takes down with it.
    job = submit(hq_env, ["--array", "0-19", "--", "bash", "-c",
                          KILL_EXECUTOR.format(victim=victim)])
    hq_env.wait_for_job_state(job, ["FAILED", "FINISHED"])
    tasks = task_json(hq_env, job)
    failed = {t: d.get("error", "") for t, d in tasks.items() if d["state"] == "failed"}
    assert list(failed) == [victim], failed
    assert "executor" in failed[victim] and "SIGKILL" in failed[victim], failed[victim]
    assert sorted(map(int, lines(hq_env.work / "ran"))) == [t for t in range(20) if t != victim]
