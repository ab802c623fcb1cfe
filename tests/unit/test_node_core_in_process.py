"""The node's core with function tasks that run inside their executor (hqshm/node/warm.py): the
task's pid is the executor's, so an interrupt names the task, nothing is killed after the task
ended, and the executor's death is the task's own end."""

from __future__ import annotations

from hqshm.cluster.protocol import CancelTasks, TaskUpdates
from node_env import Dispatch, Interrupted, NodeEnv, Signaled

from hqshm import errors
from hqshm.node.core import KILL_GRACE, Signal


def running_in_process(env: NodeEnv, time_limit: float | None = None) -> tuple[int, int]:
    """A task that the executor runs in its own process; its key and pid."""
    [key] = env.compute(env.group(time_limit=time_limit))
    env.turn()
    env.out.take(Dispatch, count=1)
    pid = env.start(key, in_process=True)
    env.core.flush(env.clock.mono(), force=True)
    env.out.take(TaskUpdates, count=1)
    return key, pid


def test_a_canceled_function_is_interrupted_by_key_then_killed_with_its_executor() -> None:
    env = NodeEnv(cpus=1)
    key, pid = running_in_process(env)
    env.deliver(CancelTasks((key,)))
    assert env.out.take(Interrupted) == [Interrupted(0, key, pid)]
    env.clock.advance(KILL_GRACE)
    env.turn()
    assert env.out.take(Signaled) == [Signaled(pid, Signal.KILL)]
    env.die(0, "killed by signal 9 (SIGKILL)", errors.signal_error(9))
    env.turn()
    env.out.assert_empty()  # canceled: not reported
    env.check()


def test_an_interrupted_function_that_ended_leaves_its_executor_alone() -> None:
    env = NodeEnv(cpus=1)
    key, pid = running_in_process(env)
    env.deliver(CancelTasks((key,)))
    env.out.take(Interrupted, count=1)
    env.end(key, ok=False, error=errors.signal_error(2))
    env.clock.advance(KILL_GRACE)
    env.turn()
    env.out.assert_empty()  # no SIGKILL to the group: it is the executor's, which lives on
    env.check()


def test_a_function_canceled_before_it_started_is_interrupted_when_it_starts() -> None:
    env = NodeEnv(cpus=2)
    [key] = env.compute(env.group())
    env.turn()
    env.out.take(Dispatch, count=1)
    env.out.take(TaskUpdates, count=1)
    env.deliver(CancelTasks((key,)))
    env.out.assert_empty()
    pid = env.start(key, in_process=True)
    assert env.out.take(Interrupted) == [Interrupted(0, key, pid)]
    env.check()


def test_the_time_limit_of_a_function_interrupts_it() -> None:
    env = NodeEnv(cpus=1)
    key, pid = running_in_process(env, time_limit=2.0)
    env.clock.advance(2.0)
    env.turn()
    assert env.out.take(Interrupted) == [Interrupted(0, key, pid)]
    env.end(key, ok=False, error=errors.signal_error(2))
    env.turn()
    [failed] = env.out.take_one(TaskUpdates).failed
    assert (failed[0], failed[5]) == (key, errors.TIME_LIMIT_REACHED)
    env.out.assert_empty()
    env.check()


def test_the_death_of_its_executor_is_the_functions_end_in_a_programs_words() -> None:
    env = NodeEnv(cpus=2)
    env.register(worker_id=7)
    function, _ = running_in_process(env)
    [program] = env.run(env.group())
    crash = errors.signal_error(11)
    env.die(env.executor_of(function), "killed by signal 11 (SIGSEGV)", crash)
    env.die(env.executor_of(program), "killed by signal 11 (SIGSEGV)", crash)
    env.turn()
    failed = {f[0]: (f[5], f[6]) for f in env.out.take_one(TaskUpdates).failed}
    assert failed == {
        function: (crash, True),
        program: ("The executor running the task on worker 7 (node1) died: killed by signal 11 "
                  "(SIGSEGV)", True),
    }
    env.check()
