"""Function tasks without a server: the payload round trip through ``task_main``, its error file,
the job's initializer, the cache of unpickled functions, the interpreter ``PythonEnv`` picks,
and what importing the packages costs."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hqshm import functiontask
from hqshm.api import function, worker_state
from hqshm.api.errors import Unpicklable
from hqshm.api.function import PayloadBuilder, PythonEnv, task_main

CALLS: list[tuple[Any, ...]] = []


def record(*args: Any, **kwargs: Any) -> None:
    CALLS.append((args, kwargs))


def run_main(payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
    task_main()


def test_payload_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    run_main(PayloadBuilder().payload(record, (1, "a"), {"k": [2]}), monkeypatch)
    assert CALLS == [((1, "a"), {"k": [2]})]


def test_a_closure_travels_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    factor = 3
    payload = PayloadBuilder().payload(lambda x: seen.append(x * factor), (2,), {})
    fn, args, kwargs, initializer = pickle.loads(payload)
    fn(*args, **kwargs)
    assert initializer is None
    assert seen == []  # the unpickled closure has its own copy of `seen`
    assert fn.__closure__ is not None


def test_each_function_is_pickled_once_per_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudpickle

    dumped: list[object] = []
    real = cloudpickle.dumps
    monkeypatch.setattr(cloudpickle, "dumps", lambda obj: dumped.append(obj) or real(obj))
    builder = PayloadBuilder()
    for i in range(3):
        builder.payload(record, (i,), {})
    assert dumped.count(record) == 1
    assert len(dumped) == 4  # the function once, then one payload per task


def test_the_initializer_is_pickled_once_per_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudpickle

    dumped: list[object] = []
    real = cloudpickle.dumps
    monkeypatch.setattr(cloudpickle, "dumps", lambda obj: dumped.append(obj) or real(obj))
    builder = PayloadBuilder(initializer=make_state)
    for i in range(3):
        builder.payload(record, (i,), {})
    assert dumped.count(make_state) == 1
    assert len(dumped) == 5  # each function once, then one payload per task


INITS: list[int] = []


def make_state() -> str:
    INITS.append(1)
    if len(INITS) == 2:
        raise RuntimeError("second call fails")
    return f"state {len(INITS)}"


def remember_state() -> None:
    CALLS.append((worker_state(),))


def test_the_initializer_runs_once_per_job_in_an_interpreter() -> None:
    """As in an executor: tasks of one job share its result; another job runs it again; a
    call that raised fails its task and is made again by the next task."""
    CALLS.clear()
    INITS.clear()
    payload = PayloadBuilder(initializer=make_state).payload(remember_state, (), {})
    for job in ("job 1", "job 1"):
        functiontask.run_payload(payload, job)
    with pytest.raises(RuntimeError, match="second call fails"):
        functiontask.run_payload(payload, "job 2")
    functiontask.run_payload(payload, "job 2")
    assert CALLS == [("state 1",), ("state 1",), ("state 3",)]


def test_worker_state_without_an_initializer_says_what_it_is_for() -> None:
    payload = PayloadBuilder().payload(remember_state, (), {})
    with pytest.raises(LookupError, match=r"Job made with initializer=\.\.\.$"):
        functiontask.run_payload(payload, "job")


def test_each_function_is_unpickled_once_per_interpreter() -> None:
    payloads = [PayloadBuilder().payload(record, (i,), {}) for i in range(2)]
    first, second = (pickle.loads(payload)[0] for payload in payloads)
    assert first is second is record
    closure = PayloadBuilder().payload(lambda: None, (), {})
    assert pickle.loads(closure)[0] is pickle.loads(closure)[0]


def test_a_payload_from_before_initializers_still_runs() -> None:
    import cloudpickle

    CALLS.clear()
    functiontask.run_payload(cloudpickle.dumps((record, (1,), {"k": 2})))
    assert CALLS == [((1,), {"k": 2})]


def failing() -> None:
    raise Exception("MyException")


def test_an_exception_is_the_error_file_and_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``failing`` is pickled by reference (its module is imported), so the traceback has
    its source lines; a function of ``__main__`` travels by value, where cloudpickle (3.1 and
    later) names its file ``<dynamic-code>``, in HQ too."""
    error_file = tmp_path / "hq-error"
    monkeypatch.setenv("HQ_ERROR_FILENAME", str(error_file))
    with pytest.raises(SystemExit) as info:
        run_main(PayloadBuilder().payload(failing, (), {}), monkeypatch)
    assert info.value.code == 1
    text = error_file.read_text()
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.endswith('    raise Exception("MyException")\nException: MyException\n')
    assert "task_main" not in text  # only the user's frames
    assert capsys.readouterr().err == text


def test_system_exit_is_the_functions_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as info:
        run_main(PayloadBuilder().payload(sys.exit, (3,), {}), monkeypatch)
    assert info.value.code == 3


def test_an_unpicklable_argument_is_a_clear_error() -> None:
    import threading

    with pytest.raises(Unpicklable, match="Cannot serialise the function record"):
        PayloadBuilder().payload(record, (threading.Lock(),), {})


def test_python_env_default_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PythonEnv(prologue="module load x").python_bin == "python3"
    assert PythonEnv(python_bin="/opt/py").command()[0] == "/opt/py"
    monkeypatch.setattr(function, "default_python", lambda: "/venv/bin/python")
    assert PythonEnv().python_bin == "/venv/bin/python"


def test_default_python_is_this_interpreter_when_hqshm_is_installed_in_it() -> None:
    """The test environment installs hqshm (editable or not) into this interpreter."""
    assert function.default_python() == sys.executable


def test_importing_the_packages_stays_cheap() -> None:
    """Function tasks import hyperqueue.task.function before they run; scripts import
    hyperqueue and hqshm: none of them may pull in the client's heavy modules."""
    code = ("import sys, hqshm, hyperqueue, hyperqueue.task.function\n"
            "heavy = {'numpy', 'zmq', 'cloudpickle', 'tqdm', 'hqshm.link', 'hqshm.model'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_a_fresh_interpreter_runs_the_payload_with_hq_pylog(tmp_path: Path) -> None:
    """The cold path of a function task, without a node: the task's command, the payload on
    stdin, the log level from HQ_PYLOG."""
    import logging

    def show_level() -> None:
        print(logging.getLevelName(logging.getLogger().getEffectiveLevel()))

    payload = PayloadBuilder().payload(show_level, (), {})
    result = subprocess.run(PythonEnv().command(), input=payload, capture_output=True,
                            cwd=tmp_path, env={"HQ_PYLOG": "debug"}, check=True)
    assert result.stdout == b"DEBUG\n"
