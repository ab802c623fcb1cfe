"""Server directory: defaults, instance numbering, ``hq-current`` and access-file lookup."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from hqshm.link.serverdir import (
    NoRunningInstance,
    ServerDirUnreadable,
    ServerUnreachable,
    create_instance_dir,
    default_server_dir,
    find_access_file,
    link_current,
    resolve_server_dir,
    unlink_current,
)

# --- defaults --------------------------------------------------------------------------------


def test_default_prefers_hq_server_dir_then_home_then_temp() -> None:
    assert default_server_dir({"HQ_SERVER_DIR": "/srv/hq", "HOME": "/home/u"}) == Path("/srv/hq")
    assert default_server_dir({"HOME": "/home/u"}) == Path("/home/u/.hq-server")
    assert default_server_dir({"TMPDIR": "/scratch"}) == Path("/scratch/.hq-server")
    assert default_server_dir({}) == Path("/tmp/.hq-server")


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
    assert find_access_file(tmp_path) == tmp_path / "hq-current" / "access.json"
    assert find_access_file(tmp_path).resolve() == access


def test_lookup_accepts_an_instance_dir_or_a_copy(tmp_path: Path) -> None:
    instance = create_instance_dir(tmp_path)
    access = _access(instance)
    assert find_access_file(instance) == access


def test_lookup_falls_back_when_hq_current_dangles(tmp_path: Path) -> None:
    instance = create_instance_dir(tmp_path)
    link_current(tmp_path, instance)
    instance.rmdir()
    with pytest.raises(NoRunningInstance):
        find_access_file(tmp_path)
    access = _access(tmp_path)
    assert find_access_file(tmp_path) == access


def test_lookup_survives_a_link_loop(tmp_path: Path) -> None:
    (tmp_path / "hq-current").symlink_to("hq-current")
    access = _access(tmp_path)
    assert find_access_file(tmp_path) == access


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
