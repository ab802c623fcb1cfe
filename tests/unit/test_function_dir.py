"""The warm tasks' directory (hqshm/node/executor.py): kept from task to task while each leaves
it as it was made, made anew after a task that changed it, without reading it per task."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import pytest

from hqshm.node.executor import Executor


def bare_executor(work_dir: pathlib.Path) -> Executor:
    executor = object.__new__(Executor)
    executor.node = type("Node", (), {"work_dir": str(work_dir), "stream_key": "k"})()
    executor.pid = os.getpid()
    executor.function_dir = None
    executor.function_dir_id = ()
    executor.function_dir_dated = False
    return executor


def test_a_directory_left_as_made_is_kept_without_reading_it(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executor = bare_executor(tmp_path)
    first = executor._function_dir()
    assert executor.function_dir_dated
    ino = os.lstat(first).st_ino

    def unread(_path: str) -> list[str]:
        raise AssertionError("the directory was read")

    monkeypatch.setattr(os, "listdir", unread)
    for _ in range(3):
        executor._keep_function_dir()
        assert executor._function_dir() == first and os.lstat(first).st_ino == ino


def left_file(path: str) -> None:
    pathlib.Path(path, "left").write_text("x")


def added_and_removed(path: str) -> None:
    pathlib.Path(path, "gone").write_text("x")
    os.unlink(os.path.join(path, "gone"))


def made_subdirectory(path: str) -> None:
    os.mkdir(os.path.join(path, "sub"))


def changed_mode(path: str) -> None:
    os.chmod(path, 0o755)


def replaced(path: str) -> None:
    os.rmdir(path)
    os.mkdir(path, 0o700)


@pytest.mark.parametrize("change", [left_file, added_and_removed, made_subdirectory,
                                    changed_mode, replaced])
def test_a_task_that_changed_it_at_once_leaves_the_next_a_fresh_one(
        tmp_path: pathlib.Path, change: Callable[[str], None]) -> None:
    """At once: within the file system's time granularity of the directory's making."""
    executor = bare_executor(tmp_path)
    path = executor._function_dir()
    change(path)
    executor._keep_function_dir()
    assert executor.function_dir is None
    fresh = executor._function_dir()
    assert os.listdir(fresh) == [] and os.lstat(fresh).st_mode & 0o7777 == 0o700


def test_where_its_times_cannot_be_set_it_is_read(tmp_path: pathlib.Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError("no")

    monkeypatch.setattr(os, "utime", refuse)
    executor = bare_executor(tmp_path)
    path = executor._function_dir()
    assert not executor.function_dir_dated
    executor._keep_function_dir()
    assert executor.function_dir == path
    left_file(path)
    executor._keep_function_dir()
    assert executor.function_dir is None
