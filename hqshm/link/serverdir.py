"""The server directory (spec/deployment.md §1): numbered instance dirs and ``hq-current``.

Each ``hq server start`` gets its own ``<root>/<NNN>``, which stays after the server exits;
``<root>/hq-current`` points at the running one. Lookups accept the root, an instance dir or any
directory holding a copied ``access.json``, because nodes on another file system get the file
by hand.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

from hqshm.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

# Paths are strings here (os.path): pathlib and what it imports (urllib.parse, ipaddress, fnmatch)
# were 6 ms of every client command, which only reads the directory. Any path-like is accepted.
StrPath: TypeAlias = "str | os.PathLike[str]"

CURRENT_LINK: Final = "hq-current"
ACCESS_FILE: Final = "access.json"
# Written by `hq server start` (its pid) before anything else, removed once ``hq-current`` is
# published: a client that finds no server yet waits while this names a live process.
STARTING_MARKER: Final = "hq-starting"
STARTING_WAIT: Final = 5.0  # seconds a client waits for a starting server
_STARTING_POLL: Final = 0.02
_INSTANCE_NAME = re.compile(r"[0-9]+")
_MAX_CREATE_ATTEMPTS: Final = 1000


class NoRunningInstance(UserError):  # spec/deployment.md §1
    template = (
        'No running instance of HQ found at "{dir}".\n'
        "Try to start the server: `hq server start{dir_arg}` or use a different server directory."
    )

    def __init__(self, server_dir: StrPath, *, is_default: bool) -> None:
        super().__init__(
            dir=server_dir, dir_arg="" if is_default else f" --server-dir {server_dir}"
        )


class ServerUnreachable(UserError):  # spec/deployment.md §1
    template = (
        "Access token found but HQ server {host}:{port} is unreachable.\n"
        "Try to (re)start the server using `hq server start`"
    )


class ServerDirUnreadable(UserError):
    template = 'Cannot read server directory "{dir}": {reason}'


class ServerDirUnusable(UserError):
    template = 'Cannot create a server instance in "{dir}": {reason}'


def default_server_dir(env: Mapping[str, str]) -> str:
    """HQ's default: ``HQ_SERVER_DIR``, else ``$HOME/.hq-server``, else the temp dir's."""
    if env.get("HQ_SERVER_DIR"):
        return env["HQ_SERVER_DIR"]
    base = env.get("HOME") or env.get("TMPDIR") or "/tmp"
    return os.path.join(base, ".hq-server")


def server_dir_path(arg: str | None, env: Mapping[str, str]) -> str:
    """The server dir to use, made absolute (the spec's ``--server-dir`` rule)."""
    return os.path.abspath(arg or default_server_dir(env))


def resolve_server_dir(arg: str | None, env: Mapping[str, str]) -> Path:
    """``server_dir_path`` as a ``Path``, for the commands and the API that build on it."""
    from pathlib import Path

    return Path(server_dir_path(arg, env))


def create_instance_dir(root: StrPath) -> Path:
    """Create ``<root>/<NNN>``, one past the largest numeric name; safe against a racing start."""
    from pathlib import Path  # the server's, which joins paths onto it

    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        number = 1 + max(
            (
                int(entry.name)
                for entry in os.scandir(root)
                if _INSTANCE_NAME.fullmatch(entry.name) and entry.is_dir()
            ),
            default=0,
        )
    except FileExistsError:  # mkdir's answer when the root is a file
        raise ServerDirUnusable(dir=root, reason=os.strerror(errno.ENOTDIR)) from None
    except OSError as error:
        raise ServerDirUnusable(dir=root, reason=_reason(error)) from None
    for _ in range(_MAX_CREATE_ATTEMPTS):
        instance = Path(root, f"{number:03d}")
        try:
            instance.mkdir(mode=0o700)
        except FileExistsError:
            number += 1
            continue
        except OSError as error:
            raise ServerDirUnusable(dir=root, reason=_reason(error)) from None
        return instance
    raise ServerDirUnusable(dir=root, reason="no free instance number")


def link_current(root: StrPath, instance: StrPath) -> None:
    """Point ``<root>/hq-current`` at ``instance`` atomically (a reader never sees it missing).

    The link is relative when the instance lives in the root, so that the root can be reached
    through another mount point (or moved) without breaking it.
    """
    parent, name = os.path.split(os.path.normpath(instance))
    target = name if parent == os.path.normpath(root) else os.path.abspath(instance)
    temporary = os.path.join(root, f".{CURRENT_LINK}.{os.urandom(8).hex()}")
    os.symlink(target, temporary)
    try:
        os.replace(temporary, os.path.join(root, CURRENT_LINK))
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def unlink_current(root: StrPath, instance: StrPath) -> None:
    """Remove ``<root>/hq-current`` if it still points at ``instance`` (a newer server keeps it).

    Between the check and the removal another server could replace the link; the window is a
    few microseconds and closing it needs a lock that HQ does not use either.
    """
    target = current_target(root)
    if target is None:  # missing, or not a link: nothing of ours to remove
        return
    if os.path.realpath(os.path.join(root, target)) == os.path.realpath(instance):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, CURRENT_LINK))


def current_target(root: StrPath) -> str | None:
    """What ``<root>/hq-current`` points at, as written (None: no such link)."""
    try:
        return os.readlink(os.path.join(root, CURRENT_LINK))
    except OSError:
        return None


def find_access_file(server_dir: StrPath, *, default_dir: StrPath | None = None) -> str:
    """The access file for ``server_dir``: that of ``hq-current`` if it resolves, else its own.

    ``default_dir`` is the directory used without ``--server-dir``; when ``server_dir`` is
    another one, the "no running instance" hint names it, as HQ does.
    """
    current = os.path.join(server_dir, CURRENT_LINK)
    directory = current if _is_dir(current, server_dir) else os.fspath(server_dir)
    access = os.path.join(directory, ACCESS_FILE)
    try:
        os.stat(access)
    except (FileNotFoundError, NotADirectoryError):
        is_default = default_dir is None or os.path.abspath(server_dir) == os.path.abspath(
            default_dir
        )
        raise NoRunningInstance(server_dir, is_default=is_default) from None
    except OSError as error:
        raise ServerDirUnreadable(dir=directory, reason=_reason(error)) from None
    return access


def _is_dir(path: str, server_dir: StrPath) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        if error.errno == errno.ELOOP:
            return False
        raise ServerDirUnreadable(dir=server_dir, reason=_reason(error)) from None


def _reason(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno is not None else str(error)


# --- a server that is starting -----------------------------------------------------------------


def mark_starting(root: StrPath) -> None:
    """Say that this process is starting a server in ``root`` (best effort: a root that cannot
    hold the marker fails the start later, with the instance dir's error)."""
    temporary = os.path.join(root, f".{STARTING_MARKER}.{os.urandom(8).hex()}")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        with open(temporary, "w") as marker:
            marker.write(f"{os.getpid()}\n")
        os.replace(temporary, os.path.join(root, STARTING_MARKER))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def unmark_starting(root: StrPath) -> None:
    """Remove the marker if it is this process's (a server started meanwhile keeps its own)."""
    marker = os.path.join(root, STARTING_MARKER)
    if _marker_pid(marker) == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(marker)


def starting_pid(root: StrPath) -> int | None:
    """The pid of another live process that is starting a server in ``root``, if any."""
    pid = _marker_pid(os.path.join(root, STARTING_MARKER))
    if pid is None or pid == os.getpid() or not _alive(pid):
        return None
    return pid


def wait_while_starting(root: StrPath, deadline: float) -> bool:
    """Sleep a moment if a server is starting in ``root`` and ``deadline`` (monotonic) is not
    past; False when there is nothing to wait for."""
    if time.monotonic() >= deadline or starting_pid(root) is None:
        return False
    time.sleep(_STARTING_POLL)
    return True


def find_access_file_waiting(server_dir: StrPath, *, default_dir: StrPath | None = None,
                             wait: float = STARTING_WAIT) -> str:
    """``find_access_file``, but a server that is still starting gets up to ``wait`` seconds
    to publish its access file; without one starting, "no running instance" comes at once."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return find_access_file(server_dir, default_dir=default_dir)
        except NoRunningInstance:
            if not wait_while_starting(server_dir, deadline):
                raise


def _marker_pid(marker: str) -> int | None:
    try:
        with open(marker) as file:
            text = file.read()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.strip().isdigit() else None


def _alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (one that died without cleaning up)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
