"""Server directory: defaults, instance numbering, ``hq-current`` and access-file lookup."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hqshm.link.serverdir import (
    STARTING_MARKER,
    NoRunningInstance,
    ServerDirUnreadable,
    ServerUnreachable,
    create_instance_dir,
    default_server_dir,
    find_access_file,
    find_access_file_waiting,
    link_current,
    mark_starting,
    resolve_server_dir,
    starting_pid,
    unlink_current,
    unmark_starting,
)

# --- defaults --------------------------------------------------------------------------------


def test_default_prefers_hq_server_dir_then_home_then_temp() -> None:
    assert default_server_dir({"HQ_SERVER_DIR": "/srv/hq", "HOME": "/home/u"}) == "/srv/hq"
    assert default_server_dir({"HOME": "/home/u"}) == "/home/u/.hq-server"
    assert default_server_dir({"TMPDIR": "/scratch"}) == "/scratch/.hq-server"
    assert default_server_dir({}) == "/tmp/.hq-server"


def test_resolve_makes_the_dir_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_server_dir("sd", {}) == tmp_path / "sd"
    assert resolve_server_dir("./a/../sd", {}) == tmp_path / "sd"
    assert resolve_server_dir(None, {"HOME": "rel"}) == tmp_path / "rel" / ".hq-server"
    assert resolve_server_dir(None, {"HQ_SERVER_DIR": "/x"}) == Path("/x")


# --- instance directories --------------------------------------------------------------------


def test_first_instance_creates_the_root_privately(tmp_path: Path) -> None:
    root = tmp_path / "a" / "root"
    instance = create_instance_dir(root)
    assert instance == root / "001"
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(instance).st_mode) == 0o700
    assert create_instance_dir(root) == root / "002"


def test_numbering_continues_after_the_largest_number(tmp_path: Path) -> None:
    for name in ("007", "136", "abc", "99x", "hq-current-ish"):
        (tmp_path / name).mkdir()
    (tmp_path / "500").write_text("a file, not a directory")
    assert create_instance_dir(tmp_path) == tmp_path / "137"


def test_numbers_past_999_keep_all_digits(tmp_path: Path) -> None:
    (tmp_path / "999").mkdir()
    assert create_instance_dir(tmp_path) == tmp_path / "1000"


def test_a_taken_number_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "001").mkdir()
    (tmp_path / "002").write_text("in the way")
    assert create_instance_dir(tmp_path) == tmp_path / "003"


def test_concurrent_starts_get_distinct_dirs(tmp_path: Path) -> None:
    made: list[Path] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        made.append(create_instance_dir(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(made) == [tmp_path / f"{n:03d}" for n in range(1, 9)]


# --- hq-current ------------------------------------------------------------------------------


def test_link_points_current_at_the_instance_and_replaces(tmp_path: Path) -> None:
    first, second = create_instance_dir(tmp_path), create_instance_dir(tmp_path)
    link_current(tmp_path, first)
    assert (tmp_path / "hq-current").resolve() == first
    link_current(tmp_path, second)
    assert (tmp_path / "hq-current").resolve() == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001", "002", "hq-current"]


def test_link_is_relative_so_the_root_can_move(tmp_path: Path) -> None:
    root = tmp_path / "root"
    link_current(root, create_instance_dir(root))
    moved = tmp_path / "moved"
    root.rename(moved)
    assert (moved / "hq-current").resolve() == moved / "001"


def test_unlink_removes_only_our_link(tmp_path: Path) -> None:
    first, second = create_instance_dir(tmp_path), create_instance_dir(tmp_path)
    link_current(tmp_path, second)
    unlink_current(tmp_path, first)  # a newer server owns the link now
    assert (tmp_path / "hq-current").resolve() == second
    unlink_current(tmp_path, second)
    assert not (tmp_path / "hq-current").is_symlink()
    assert second.is_dir()
    unlink_current(tmp_path, second)  # already gone: nothing to do


def test_unlink_leaves_a_non_link_alone(tmp_path: Path) -> None:
    (tmp_path / "hq-current").mkdir()
    unlink_current(tmp_path, tmp_path / "001")
    assert (tmp_path / "hq-current").is_dir()


# --- lookup ----------------------------------------------------------------------------------


def _access(directory: Path) -> Path:
    path = directory / "access.json"
    path.write_text("{}")
    return path


def test_lookup_follows_hq_current(tmp_path: Path) -> None:
    instance = create_instance_dir(tmp_path)
    access = _access(instance)
    link_current(tmp_path, instance)
    _access(tmp_path)  # a stray copy in the root loses to hq-current
    assert find_access_file(tmp_path) == str(tmp_path / "hq-current" / "access.json")
    assert Path(find_access_file(tmp_path)).resolve() == access


def test_lookup_accepts_an_instance_dir_or_a_copy(tmp_path: Path) -> None:
    instance = create_instance_dir(tmp_path)
    access = _access(instance)
    assert find_access_file(instance) == str(access)


def test_lookup_falls_back_when_hq_current_dangles(tmp_path: Path) -> None:
    instance = create_instance_dir(tmp_path)
    link_current(tmp_path, instance)
    instance.rmdir()
    with pytest.raises(NoRunningInstance):
        find_access_file(tmp_path)
    access = _access(tmp_path)
    assert find_access_file(tmp_path) == str(access)


def test_lookup_survives_a_link_loop(tmp_path: Path) -> None:
    (tmp_path / "hq-current").symlink_to("hq-current")
    access = _access(tmp_path)
    assert find_access_file(tmp_path) == str(access)


def test_no_instance_in_the_default_dir(tmp_path: Path) -> None:
    with pytest.raises(NoRunningInstance) as caught:
        find_access_file(tmp_path, default_dir=tmp_path)
    assert str(caught.value) == (
        f'No running instance of HQ found at "{tmp_path}".\n'
        "Try to start the server: `hq server start` or use a different server directory."
    )


def test_no_instance_in_another_dir_names_it_in_the_hint(tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    with pytest.raises(NoRunningInstance) as caught:
        find_access_file(sd, default_dir=tmp_path / ".hq-server")
    assert str(caught.value) == (
        f'No running instance of HQ found at "{sd}".\n'
        f"Try to start the server: `hq server start --server-dir {sd}` or use a different"
        " server directory."
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_unreadable_server_dir_is_a_one_line_error(tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    sd.mkdir()
    _access(sd)
    sd.chmod(0)
    try:
        with pytest.raises(ServerDirUnreadable) as caught:
            find_access_file(sd)
    finally:
        sd.chmod(0o700)
    assert str(caught.value) == f'Cannot read server directory "{sd}": Permission denied'


def test_os_errors_of_the_lookup_name_the_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same path as above, for runs as root (which bypasses directory permissions)."""

    def refuse(path: object) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "stat", refuse)
    with pytest.raises(ServerDirUnreadable) as caught:
        find_access_file(tmp_path)
    assert str(caught.value) == f'Cannot read server directory "{tmp_path}": Permission denied'


def test_unreachable_text() -> None:
    assert str(ServerUnreachable(host="login1", port=6789)) == (
        "Access token found but HQ server login1:6789 is unreachable.\n"
        "Try to (re)start the server using `hq server start`"
    )


# --- a server that is starting ----------------------------------------------------------------


@pytest.fixture
def other_process() -> Iterator[int]:
    """The pid of a live process that is not this one (standing in for a starting server)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _marker(root: Path, pid: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / STARTING_MARKER).write_text(f"{pid}\n")


def test_marker_holds_our_pid_and_only_we_remove_it(tmp_path: Path, other_process: int) -> None:
    root = tmp_path / "new-root"
    mark_starting(root)
    assert (root / STARTING_MARKER).read_text() == f"{os.getpid()}\n"
    assert starting_pid(root) is None  # our own start never makes us wait
    unmark_starting(root)
    assert not (root / STARTING_MARKER).exists()
    _marker(root, other_process)
    unmark_starting(root)  # another server's marker stays
    assert starting_pid(root) == other_process


def test_a_marker_that_cannot_be_written_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "a-file"
    root.write_text("in the way")
    mark_starting(root)  # the start itself reports the unusable dir later
    unmark_starting(root)
    assert root.read_text() == "in the way"


def test_markers_of_dead_or_garbled_processes_are_ignored(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    _marker(tmp_path, proc.pid)
    assert starting_pid(tmp_path) is None
    (tmp_path / STARTING_MARKER).write_text("not a pid")
    assert starting_pid(tmp_path) is None


def test_lookup_waits_for_a_starting_server_to_publish(tmp_path: Path,
                                                       other_process: int) -> None:
    _marker(tmp_path, other_process)

    def publish() -> None:
        time.sleep(0.3)
        instance = create_instance_dir(tmp_path)
        _access(instance)
        link_current(tmp_path, instance)
        (tmp_path / STARTING_MARKER).unlink()

    publisher = threading.Thread(target=publish)
    publisher.start()
    began = time.monotonic()
    try:
        found = find_access_file_waiting(tmp_path, wait=5.0)
    finally:
        publisher.join()
    assert found == str(tmp_path / "hq-current" / "access.json")
    assert 0.2 < time.monotonic() - began < 4.0


def test_lookup_gives_up_after_the_wait(tmp_path: Path, other_process: int) -> None:
    _marker(tmp_path, other_process)
    began = time.monotonic()
    with pytest.raises(NoRunningInstance):
        find_access_file_waiting(tmp_path, wait=0.3)
    assert 0.3 <= time.monotonic() - began < 3.0


def test_lookup_stops_waiting_when_the_starting_server_dies(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "0.3"])
    _marker(tmp_path, proc.pid)
    began = time.monotonic()
    try:
        with pytest.raises(NoRunningInstance):
            find_access_file_waiting(tmp_path, wait=10.0)
    finally:
        proc.wait()
    assert time.monotonic() - began < 5.0


def test_without_a_starting_server_no_instance_fails_at_once(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(NoRunningInstance):
        find_access_file_waiting(tmp_path / "never-started", wait=10.0)
    with pytest.raises(NoRunningInstance):
        find_access_file_waiting(tmp_path, wait=10.0)  # the dir exists, nothing starts there
    assert time.monotonic() - began < 1.0
