"""Stopping gracefully ends every child (issue 8, item 8; spec/cli.md §3, deployment.md §3-§4).

`hq server stop`, SIGINT (Ctrl-C) and SIGTERM to `hq server start`: the server exits 0, removes
`hq-current`, and its workers exit 1 with their executors, tasks and the tasks' children gone.
SIGINT and SIGTERM sent to the `hq worker start` process alone (not its group, as `kill PID`
does): the node ends its executors, tasks and the tasks' children itself, and the server, which
sees a lost connection, gives the tasks back with a crash counted (deployment.md §4.2).
`hq worker stop`: the worker exits 0 with the same left behind (nothing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from harness import HqEnv
from job_helpers import submit, task_json
from worker_helpers import (
    children_of,
    kill_pids,
    read_pid,
    shm_segments_of,
    wait_exit,
    wait_gone,
)

# A task that writes its pid and that of a background child which ignores SIGINT (a shell
# without job control starts background commands so), so only the end of its whole process
# group, not a SIGINT to the task alone, ends that child.
TASK = ("sleep 100 & echo $! > child.$HQ_JOB_ID.$HQ_TASK_ID; "
        "echo $$ > task.$HQ_JOB_ID.$HQ_TASK_ID; wait")


@dataclass
class Busy:
    """A worker process with its executors and the pids of what its tasks started."""

    proc: subprocess.Popen
    executors: list[int]
    tasks: list[int]

    def everything(self) -> list[int]:
        return [*self.executors, *self.tasks]


def busy_worker(env: HqEnv, job: int, cpus: int = 2) -> Busy:
    """Start a worker and a job of `cpus` tasks that all run on it until they are killed."""
    proc = env.start_worker(cpus=cpus)
    executors = children_of(proc.pid)
    assert len(executors) >= cpus, executors
    env.command(["submit", "--array", f"1-{cpus}", "--", "bash", "-c", TASK])
    tasks = []
    for task in range(1, cpus + 1):
        tasks.append(read_pid(env, env.work / f"task.{job}.{task}"))
        tasks.append(read_pid(env, env.work / f"child.{job}.{task}"))
    env.wait_for_tasks(job, "running", count=cpus)
    return Busy(proc, executors, tasks)


def assert_all_gone(env: HqEnv, busy: Busy, what: str) -> None:
    try:
        wait_gone(env, busy.everything(), what)
    finally:
        kill_pids(busy.tasks)  # never leave a sleeper behind a failed check
    assert shm_segments_of(busy.proc.pid) == []


def _signal_process(sig: int) -> Callable[[subprocess.Popen], None]:
    return lambda proc: os.kill(proc.pid, sig)


def _ctrl_c(proc: subprocess.Popen) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
    os.killpg(proc.pid, signal.SIGINT)


SERVER_STOPS = [
    pytest.param(None, id="hq-server-stop"),
    pytest.param(_signal_process(signal.SIGINT), id="SIGINT"),
    pytest.param(_signal_process(signal.SIGTERM), id="SIGTERM"),
    pytest.param(_ctrl_c, id="ctrl-c"),
]


@pytest.mark.parametrize("stop", SERVER_STOPS)
def test_stopping_the_server_ends_every_worker_and_task(
    hq_env: HqEnv, stop: Callable[[subprocess.Popen], None] | None
) -> None:
    server = hq_env.start_server()
    instance = (hq_env.server_dir / "hq-current").resolve()
    first = busy_worker(hq_env, job=1)
    second = busy_worker(hq_env, job=2)
    if stop is None:
        hq_env.command(["server", "stop"])
    else:
        stop(server)
    assert wait_exit(server) == 0, hq_env.log("server")
    assert not os.path.lexists(hq_env.server_dir / "hq-current")
    assert (instance / "access.json").is_file()  # the instance dir stays
    assert "Stopping server" in hq_env.log("server")
    for index, busy in ((1, first), (2, second)):
        assert wait_exit(busy.proc) == 1, hq_env.log(f"worker{index}")
        assert_all_gone(hq_env, busy, f"worker {index}'s executors and tasks to end")


def _ignoring_sigint() -> None:
    """What a non-interactive shell does to a background job (`hq server start &`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(("sig", "delay", "ignored"), [
    (signal.SIGINT, 0.0, False),
    (signal.SIGINT, 0.05, False),
    (signal.SIGINT, 0.15, False),
    (signal.SIGTERM, 0.0, False),
    (signal.SIGTERM, 0.1, False),
    (signal.SIGINT, 0.0, True),
], ids=["ctrl-c", "ctrl-c-50ms", "ctrl-c-150ms", "SIGTERM", "SIGTERM-100ms",
        "ctrl-c-inherited-ignored"])
def test_ctrl_c_while_the_server_starts_exits_zero_and_leaves_nothing(
        hq_env: HqEnv, sig: int, delay: float, ignored: bool) -> None:
    """Start-up holds SIGINT and SIGTERM until the loop's handlers are in place: at any moment
    they stop the server cleanly (once a stop that came before the loop ran was lost, and the
    server served on), even when the shell left SIGINT ignored."""
    if ignored:
        with open(hq_env.logs / "server.log", "wb") as log:
            server = subprocess.Popen([*hq_env.hq, "server", "start"], env=hq_env.env(),
                                      cwd=hq_env.work, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_ignoring_sigint)
        hq_env.processes.append(("server", server))
    else:
        server = hq_env.start_server(wait=False)
    # The first thing `hq server start` does is to say it is starting: interrupt it from then.
    hq_env.wait_until(lambda: (hq_env.server_dir / "hq-starting").exists()
                      or (hq_env.server_dir / "hq-current").exists(), "the server to start",
                      interval=0.0)
    time.sleep(delay)
    os.killpg(server.pid, sig)
    try:
        code = wait_exit(server)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n{hq_env.log('server')}") from None
    assert code == 0, hq_env.log("server")
    assert not os.path.lexists(hq_env.server_dir / "hq-current")
    assert not os.path.lexists(hq_env.server_dir / "hq-starting")
    result = hq_env.run(["server", "info"])
    assert result.returncode == 1
    assert b"No running instance of HQ found" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_worker_process_alone_ends_its_children(hq_env: HqEnv, sig: int) -> None:
    hq_env.start_server()
    busy = busy_worker(hq_env, job=1)
    os.kill(busy.proc.pid, sig)  # not its process group: the node must do it all
    assert wait_exit(busy.proc) == 1, hq_env.log("worker1")
    assert_all_gone(hq_env, busy, "the executors, tasks and their children to end")
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_tasks_of_a_signalled_worker_go_back_to_waiting_with_a_crash(
    hq_env: HqEnv, sig: int
) -> None:
    """deployment.md §4.2: CONNECTION LOST (the worker got SIGINT/SIGTERM) returns running
    tasks to WAITING with crash count +1; they are not failures of the tasks."""
    hq_env.start_server()
    busy = busy_worker(hq_env, job=1)
    os.kill(busy.proc.pid, sig)
    wait_exit(busy.proc)
    assert_all_gone(hq_env, busy, "the executors, tasks and their children to end")
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")
    states = hq_env.task_states(1)
    assert states == {1: "waiting", 2: "waiting"}, states


def test_a_signalled_worker_counts_a_crash(hq_env: HqEnv) -> None:
    """The crash counts (deployment.md §4.2): with a crash limit of 1, the task of a worker
    that got SIGTERM fails as a task of a lost worker, not with the signal its program got."""
    hq_env.start_server()
    worker = hq_env.start_worker(cpus=1)
    job = submit(hq_env, ["--crash-limit=1", "--", "bash", "-c", "echo $$ > pid; exec sleep 100"])
    pid = read_pid(hq_env, hq_env.work / "pid")
    try:
        hq_env.wait_for_tasks(job, "running", count=1)
        os.kill(worker.pid, signal.SIGTERM)
        assert wait_exit(worker) == 1, hq_env.log("worker1")
        wait_gone(hq_env, [pid], "the task to end")
    finally:
        kill_pids([pid])
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")
    [task] = task_json(hq_env, job).values()
    assert task["state"] == "failed", task
    assert task["error"] == ("Task was running on a worker that was lost; the task has "
                             "occurred 1 times in this situation and limit was reached."), task


def test_a_task_killed_with_its_worker_by_a_batch_system_runs_again(hq_env: HqEnv) -> None:
    """A batch system ending an allocation (walltime, preemption, scancel) sends SIGTERM to
    every process of the job at once: the task may die of it a moment before the worker gets
    its own. That task is a task of a lost worker, run again elsewhere, not a failure."""
    hq_env.start_server()
    worker = hq_env.start_worker(cpus=1)
    job = submit(hq_env, ["--", "bash", "-c",
                          'if [ "$HQ_INSTANCE_ID" = 0 ]; then echo $$ > pid; exec sleep 100; fi'])
    pid = read_pid(hq_env, hq_env.work / "pid")
    try:
        hq_env.wait_for_tasks(job, "running", count=1)
        os.kill(pid, signal.SIGTERM)  # the task first, as a batch system may order them
        time.sleep(0.2)  # a loaded machine: the task's end reached the worker first
        os.kill(worker.pid, signal.SIGTERM)
        assert wait_exit(worker) == 1, hq_env.log("worker1")
    finally:
        kill_pids([pid])
    hq_env.wait_for_worker_state(1, "CONNECTION LOST")
    assert hq_env.task_states(job) == {0: "waiting"}
    hq_env.start_worker(cpus=1)
    hq_env.wait_for_job_state(job, "FINISHED")
    [task] = task_json(hq_env, job).values()
    assert task["worker"] == 2, task


def test_worker_stop_exits_zero_and_ends_its_children(hq_env: HqEnv) -> None:
    hq_env.start_server()
    busy = busy_worker(hq_env, job=1)
    hq_env.command(["worker", "stop", "1"])
    assert wait_exit(busy.proc) == 0, hq_env.log("worker1")
    assert_all_gone(hq_env, busy, "the executors, tasks and their children to end")
    hq_env.wait_for_worker_state(1, "STOPPED")


def test_a_stopped_worker_does_not_outlive_the_server_stop_that_follows(hq_env: HqEnv) -> None:
    """A server stopped right after `hq worker stop` still ends with nothing left."""
    server = hq_env.start_server()
    busy = busy_worker(hq_env, job=1)
    hq_env.command(["worker", "stop", "1"])
    server.send_signal(signal.SIGTERM)
    assert wait_exit(server) == 0
    assert wait_exit(busy.proc) in (0, 1)
    assert_all_gone(hq_env, busy, "the executors, tasks and their children to end")
    assert not os.path.lexists(hq_env.server_dir / "hq-current")
