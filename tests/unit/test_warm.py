"""The warm path without a node (hqshm/node/warm.py): which tasks run inside an executor (the
rule of hqshm/functiontask.py's TASK_CODE), and that running one leaves the process as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from hqshm import functiontask
from hqshm.api.function import PayloadBuilder, PythonEnv
from hqshm.functiontask import TASK_CODE
from hqshm.model.program import PinMode, ProgramSpec, Stdio
from hqshm.node import warm
from hqshm.node.launch import LaunchPlan
from hqshm.node.warm import FunctionCall, WarmRunner, is_function_program, runs_warm

BASE_ENV = {"PATH": "/usr/bin:/bin"}


def spec(args: tuple[str, ...], **fields: object) -> ProgramSpec:
    program = ProgramSpec(args=args, env={}, cwd="/work", stdout=Stdio(Stdio.NONE),
                          stderr=Stdio(Stdio.NONE), job_id=1, submit_dir="/work",
                          server_uid="uid", task_dir=True)
    return dataclasses.replace(program, **fields)


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A venv's bin folder whose `python` this process runs as, `python3` a link next to it,
    and another folder with a link to the same interpreter (another environment)."""
    real = os.path.realpath(sys.executable)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(real)
    (bin_dir / "python3").symlink_to("python")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "python3").symlink_to(real)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    warm._runs_this_interpreter.cache_clear()
    return bin_dir


def test_the_plain_command_with_this_interpreter_runs_warm(venv: Path) -> None:
    for python in (venv / "python", venv / "python3", venv / ".." / "bin" / "python"):
        assert is_function_program(spec((str(python), "-c", TASK_CODE)), BASE_ENV), python
    assert is_function_program(spec(tuple(PythonEnv(str(venv / "python")).command())), BASE_ENV)


def test_a_bare_name_is_looked_up_on_the_tasks_path(venv: Path) -> None:
    command = ("python3", "-c", TASK_CODE)
    own_path = {"PATH": f"{venv}:/usr/bin"}
    assert is_function_program(spec(command, env=own_path), BASE_ENV)
    assert is_function_program(spec(command), own_path)  # the worker's PATH
    other_first = {"PATH": f"{venv.parent.parent / 'other'}:{venv}"}
    assert not is_function_program(spec(command, env=other_first), BASE_ENV)
    relative_first = {"PATH": f"bin:{venv}"}  # relative to each task's working directory
    assert not is_function_program(spec(command, env=relative_first), BASE_ENV)
    assert not is_function_program(spec(("no-such-python", "-c", TASK_CODE)), own_path)


def test_every_other_form_starts_an_interpreter(venv: Path) -> None:
    python = str(venv / "python")
    commands = [
        (python, "-c", TASK_CODE + " "),
        (python, "-I", "-c", TASK_CODE),
        (str(venv.parent.parent / "other" / "python3"), "-c", TASK_CODE),  # another environment
        ("venv/bin/python", "-c", TASK_CODE),  # relative to the task's working directory
        tuple(PythonEnv(python, prologue="source init.sh").command()),
        (python, "-c", "print(1)"),
        ("true",),
    ]
    for command in commands:
        assert not is_function_program(spec(command), BASE_ENV), command


def test_what_an_interpreter_cannot_honour_once_started_starts_one(venv: Path) -> None:
    command = (str(venv / "python"), "-c", TASK_CODE)
    assert is_function_program(spec(command, env={"PYTHONPATH": "/lib"}), BASE_ENV)
    assert not is_function_program(spec(command, env={"PYTHONHASHSEED": "0"}), BASE_ENV)
    assert not is_function_program(spec(command, pin=PinMode.TASKSET), BASE_ENV)
    assert is_function_program(spec(command, pin=PinMode.OMP), BASE_ENV)
    streamed = spec(command, stream_dir="/streams", stdout=Stdio(Stdio.STREAM))
    assert not is_function_program(streamed, BASE_ENV)
    assert runs_warm({"HQ_RESOURCE_VALUES_cpus": "0"})
    assert not runs_warm({"CUDA_VISIBLE_DEVICES": "1"})
    assert not runs_warm({"ROCR_VISIBLE_DEVICES": "0"})


def test_an_executor_imports_nothing_of_the_api_before_its_first_function_task() -> None:
    code = ("import sys, hqshm.node.executor\n"
            "print(sorted(m for m in sys.modules if m.startswith(('cloudpickle', 'hqshm.api'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


# -- one task in this process ----------------------------------------------------------------


def in_child(test: Callable[[], None]) -> None:
    """Run ``test`` in a forked child: the runner changes this process's fds, cwd and group."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            test()
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's test failed (its stderr above)"


def meddle(path: str) -> None:
    """What a function may do to its interpreter, after noting what it was given."""
    with open(path, "w") as f:
        json.dump({"cwd": os.getcwd(), "task": os.environ.get("HQ_TASK_ID"),
                   "argv": sys.argv, "group": os.getpgid(0) == os.getpid()}, f)
    print("out")
    os.environ["LEAK"] = "1"
    os.chdir("/")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout = None  # type: ignore[assignment]
    raise ValueError("meddled")


def test_a_task_leaves_the_process_as_it_found_it(tmp_path: Path) -> None:
    payload = PayloadBuilder().payload(meddle, (str(tmp_path / "seen"),), {})
    plan = LaunchPlan(argv=[sys.executable, "-c", TASK_CODE],
                      env={**os.environ, "HQ_TASK_ID": "7"}, cwd=str(tmp_path),
                      stdout=str(tmp_path / "out"), stderr=str(tmp_path / "err"),
                      rm_stdout=False, rm_stderr=False)

    def run() -> None:
        before = (os.getcwd(), os.getpgid(0), sys.stdout, sys.argv, list(sys.path),
                  signal.getsignal(signal.SIGTERM), os.fstat(1).st_ino)
        started: list[bool] = []
        ending = WarmRunner().run(
            FunctionCall(payload, ("uid", 1), plan, None, None, 2),
            lambda: started.append(True), lambda: False)
        assert (started, ending.code, ending.signum) == ([True], 1, 0)
        after = (os.getcwd(), os.getpgid(0), sys.stdout, sys.argv, list(sys.path),
                 signal.getsignal(signal.SIGTERM), os.fstat(1).st_ino)
        assert after == before
        seen = json.loads((tmp_path / "seen").read_text())
        assert seen == {"cwd": str(tmp_path), "task": "7", "argv": ["-c"], "group": True}
        assert (tmp_path / "out").read_text() == "out\n"
        assert (tmp_path / "err").read_text().endswith("ValueError: meddled\n")

    in_child(run)


def start_late_writer(path: str) -> None:
    """A function that leaves a thread behind, which writes ``path`` after it returned."""
    import threading
    import time

    def write() -> None:
        time.sleep(0.2)
        Path(path).write_text("written")

    threading.Thread(target=write).start()


def test_threads_a_function_started_end_before_its_task_does(tmp_path: Path) -> None:
    """As an interpreter joins them before it exits; with none left over the next task
    checks nothing but its own thread."""
    payload = PayloadBuilder().payload(start_late_writer, (str(tmp_path / "late"),), {})
    plan = LaunchPlan(argv=[sys.executable, "-c", TASK_CODE], env=dict(os.environ),
                      cwd=str(tmp_path), stdout=None, stderr=None, rm_stdout=False,
                      rm_stderr=False)

    def run() -> None:
        runner = WarmRunner()
        for _ in range(2):
            (tmp_path / "late").unlink(missing_ok=True)
            ending = runner.run(FunctionCall(payload, ("uid", 1), plan, None, None, 2),
                                lambda: None, lambda: False)
            assert ending.ok
            assert (tmp_path / "late").read_text() == "written"
        assert warm._threads() is None  # the executor's thread alone again

    in_child(run)


def test_the_environment_follows_each_task_of_a_group_and_what_a_function_changed() -> None:
    """Tasks of one group compare only their varying variables, unless the function before
    changed the environment: then all of it."""

    def run() -> None:
        environment = warm._Environment()
        group = object()
        base = {k: v for k, v in os.environ.items() if not k.startswith("HQ_")}
        tasks = [{**base, "HQ_TASK_ID": "1", "HQ_ENTRY": "a", "HQ_RESOURCE_X": "1"},
                 {**base, "HQ_TASK_ID": "2", "HQ_RESOURCE_Y": "2"},
                 {**base, "HQ_TASK_ID": "3"}]
        for i, env in enumerate(tasks):
            environment.become(env, group, {"HQ_TASK_ID", "HQ_ENTRY", *env.keys() - base.keys()})
            assert dict(os.environ) == env
            if i == 1:  # the function meddles: the next task undoes it
                os.environ["LEAK"] = "1"
                del os.environ["PATH"]
                os.environ["HQ_TASK_ID"] = "999"
        other = {**base, "OTHER": "1", "HQ_TASK_ID": "4"}
        environment.become(other, object(), {"HQ_TASK_ID"})
        assert dict(os.environ) == other

    in_child(run)


def test_arguments_are_fresh_for_each_task_of_a_shared_payload() -> None:
    """The payload of a function's tasks is read once per interpreter; the arguments in each
    task's entry are unpickled anew, so a function that changes them changes its own."""
    args = pickle.dumps((([1],), {}))
    payload = PayloadBuilder()._pack(list.append, (), {}, {"entry": True})
    entry = functiontask.entry_text(args, False)
    first = functiontask.load_payload(payload, None, entry)
    first.args[0].append(2)
    second = functiontask.load_payload(payload, None, entry)
    assert (first.fn, second.fn) == (list.append, list.append)
    assert second.args == ([1],) and second.args[0] is not first.args[0]
    assert payload in functiontask._payloads


@pytest.mark.parametrize("data", ["ab!c", "abc", "\u00e9", "YQ==YQ=="])
def test_an_entry_that_is_not_base64_fails_the_task_it_carries(data: str) -> None:
    """A task's arguments come base64-coded in its HQ_ENTRY (``entry_text``); a mangled one
    is refused as what it is, never decoded into something else."""
    payload = PayloadBuilder()._pack(list.append, (), {}, {"entry": True})
    with pytest.raises(ValueError):
        functiontask.load_payload(payload, None, f"{functiontask.ENTRY_PREFIX}-:{data}")
