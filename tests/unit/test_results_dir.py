"""A node's result directory on tmpfs: locked for the node's life, swept once abandoned."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from hqshm.node import loop
from hqshm.node.loop import ABANDONED_AFTER, RESULTS_PREFIX, _remove_abandoned

OLD = time.time() - 2 * ABANDONED_AFTER


def _dir(parent: Path, name: str, mtime: float = OLD) -> Path:
    path = parent / name
    path.mkdir()
    (path / "1.0.result").write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_only_old_unlocked_result_directories_of_this_user_go(tmp_path: Path) -> None:
    abandoned = _dir(tmp_path, f"{RESULTS_PREFIX}abc")
    young = _dir(tmp_path, f"{RESULTS_PREFIX}young", mtime=time.time())
    locked = _dir(tmp_path, f"{RESULTS_PREFIX}live")
    older_version = _dir(tmp_path, "hqshm-results-x1y2z3")  # unlocked by design: kept
    other = _dir(tmp_path, "unrelated")
    target = _dir(tmp_path, "target")
    (tmp_path / f"{RESULTS_PREFIX}link").symlink_to(target)
    (tmp_path / f"{RESULTS_PREFIX}file").write_text("not a directory")
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a live node (or its executor) holds it
    try:
        assert _remove_abandoned(str(tmp_path)) == 1
    finally:
        os.close(fd)
    assert not abandoned.exists()
    for kept in (young, locked, older_version, other, target, target / "1.0.result"):
        assert kept.exists(), kept
    assert (tmp_path / f"{RESULTS_PREFIX}link").is_symlink()
    assert (tmp_path / f"{RESULTS_PREFIX}file").is_file()
    # Once its holder is gone, the locked one goes too.
    assert _remove_abandoned(str(tmp_path)) == 1 and not locked.exists()


def test_a_new_result_directory_is_locked_until_its_holder_ends(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # the node: make the directory, say where, then wait to be killed
        path = loop._results_dir(str(tmp_path / "unused"))
        (tmp_path / "where").write_text(path)
        time.sleep(60)
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "where").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        path = Path((tmp_path / "where").read_text())
        assert path.name.startswith(RESULTS_PREFIX)
        os.utime(path, (OLD, OLD))
        _remove_abandoned(str(path.parent))  # /dev/shm: others' abandoned ones may go
        assert path.exists()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert _remove_abandoned(str(path.parent)) >= 1
    assert not path.exists()
