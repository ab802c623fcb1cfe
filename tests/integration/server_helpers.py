"""Helpers of the server, security and CLI-error tests: access files, raw hq runs, probes.

They sit beside the harness (which belongs to the suite as a whole) and only use its public
parts: ``HqEnv.spawn``/``run``/``wait_until``, so every process still dies with the env.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import HqEnv, Table

HOSTNAME = socket.gethostname()
SERVER_INFO_KEYS = [
    "Server UID",
    "Client host",
    "Client port",
    "Worker host",
    "Worker port",
    "Version",
    "Pid",
    "Start date",
    "Journal path",
]
JSON_SERVER_KEYS = {
    "client_host",
    "client_port",
    "journal_path",
    "pid",
    "server_dir",
    "server_uid",
    "start_date",
    "version",
    "worker_host",
    "worker_port",
}
UID_RE = re.compile(r"[A-Za-z0-9]{6}")
UTC_DATE_RE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
ANSI = "\x1b["


@dataclass(frozen=True)
class HqRun:
    """A finished `hq` command with its streams kept apart."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def hq(hq_env: HqEnv, args: list[str], **kwargs: Any) -> HqRun:
    proc = hq_env.run(args, **kwargs)
    return HqRun(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def hq_version(env: HqEnv) -> str:
    result = hq(env, ["--version"])
    assert result.returncode == 0, result.output
    assert result.stdout.startswith("hq "), result.stdout
    return result.stdout.strip()[3:]


def assert_clean_failure(result: HqRun, code: int | None = None) -> None:
    """A failure a user may see: non-zero (or the given) exit, no traceback, no internal error."""
    if code is None:
        assert result.returncode != 0, result.output
    else:
        assert result.returncode == code, f"exit {result.returncode}:\n{result.output}"
    assert "Traceback" not in result.output, result.output
    assert "Internal error" not in result.output, result.output


def log_lines_removed(text: str) -> list[str]:
    """Lines of ``text`` that are not log lines (`<timestamp>Z LEVEL ...`)."""
    return [
        line
        for line in text.splitlines()
        if not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z [A-Z]+ ", line)
    ]


def json_in_log(text: str) -> Any:
    """The one pretty-printed JSON value of a log that also holds log lines."""
    return json.loads("\n".join(log_lines_removed(text)))


# --- server dirs and access files ---------------------------------------------------------------


def access_path(server_dir: Path) -> Path:
    return server_dir / "hq-current" / "access.json"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_access(path: Path, document: dict[str, Any]) -> Path:
    """Write an access file by hand (owner-only, as a user copying one would)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(document, file, indent=2)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def instance_names(server_dir: Path) -> list[str]:
    return sorted(p.name for p in server_dir.iterdir() if p.is_dir() and not p.is_symlink())


def check_endpoint(value: Any) -> None:
    assert isinstance(value, dict) and set(value) == {"host", "port", "secret_key"}, value
    assert isinstance(value["host"], str) and value["host"]
    assert isinstance(value["port"], int) and not isinstance(value["port"], bool)
    assert value["secret_key"] is None or isinstance(value["secret_key"], str)


def check_access_schema(document: Any, part: str = "full", *, keys: bool = True) -> None:
    """HQ's exact schema (spec/deployment.md §2.1); ``keys`` requires non-null secrets."""
    expected = {
        "full": {"version", "server_uid", "client", "worker"},
        "client": {"version", "client"},
        "worker": {"version", "worker"},
    }[part]
    assert isinstance(document, dict) and set(document) == expected, document
    assert isinstance(document["version"], str) and document["version"]
    if part == "full":
        assert isinstance(document["server_uid"], str)
        assert UID_RE.fullmatch(document["server_uid"]), document["server_uid"]
    for endpoint in ("client", "worker"):
        if endpoint in document:
            check_endpoint(document[endpoint])
            if keys:
                assert isinstance(document[endpoint]["secret_key"], str)
                assert re.fullmatch(r"[0-9a-f]{64}", document[endpoint]["secret_key"])


def with_secret(document: dict[str, Any], endpoint: str, secret: str | None) -> dict[str, Any]:
    """A copy of an access record whose ``endpoint`` holds ``secret`` instead."""
    forged = json.loads(json.dumps(document))
    forged[endpoint]["secret_key"] = secret
    return forged


def random_secret() -> str:
    return secrets.token_bytes(32).hex()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


# --- servers outside the env's default dir --------------------------------------------------------


def spawn_server(
    env: HqEnv, name: str, args: list[str], extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`hq ARGS` as a long-running server logged as ``name`` (killed by the env at the end)."""
    return env.spawn(name, args, env=extra_env)


def wait_for_access_file(
    env: HqEnv, server_dir: Path, proc: subprocess.Popen, name: str
) -> dict[str, Any]:
    def published() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{env.log(name)}")
        return access_path(server_dir).exists()

    env.wait_until(published, f"{name} to publish its access file")
    return read_json(access_path(server_dir))


def wait_for_server_at(env: HqEnv, server_dir: Path, proc: subprocess.Popen, name: str) -> None:
    wait_for_access_file(env, server_dir, proc, name)
    env.wait_until(
        lambda: hq(env, ["--server-dir", str(server_dir), "server", "info"]).returncode == 0,
        f"{name} to answer",
    )


def wait_for_log(env: HqEnv, name: str, text: str) -> None:
    env.wait_until(lambda: text in env.log(name), f"{text!r} in the log of {name}")


def vertical(text: str) -> Table:
    """A vertical (key/value) table.

    ``Table.parse`` takes the row above the second ``+-`` line for a header, which for a
    vertical table is the bottom border: it would drop the last row (`Journal path`).
    """
    table = Table.parse(text)
    if table.header is not None:
        table = Table([*table.rows, table.header], None)
    return table


def server_table(env: HqEnv, name: str = "server") -> Table:
    """The info table a server printed at start (waits until it is complete)."""

    def printed() -> Table | None:
        table = vertical(env.log(name))
        return table if any(row[0] == "Journal path" for row in table.rows) else None

    return env.wait_until(printed, f"the info table of {name}")


def wait_exit(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    return proc.wait(timeout=timeout)


# --- raw peers ----------------------------------------------------------------------------------


def send_raw(host: str, port: int, payload: bytes, *, read: bool = True) -> bytes:
    """Connect, send ``payload``, read what comes back until the peer closes or goes quiet."""
    with socket.create_connection((host, port), timeout=5.0) as sock:
        received = b""
        try:
            sock.sendall(payload)
            if read:
                sock.settimeout(0.5)
                while len(received) < 1 << 16:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
        except (TimeoutError, ConnectionError):
            pass
        return received


def zmtp_greeting(mechanism: bytes, *, as_server: bool = False) -> bytes:
    """A ZMTP 3.0 greeting (RFC 23): what a ZeroMQ peer sends first."""
    return (
        b"\xff"
        + b"\x00" * 8
        + b"\x7f"
        + b"\x03\x00"
        + mechanism.ljust(20, b"\x00")
        + (b"\x01" if as_server else b"\x00")
        + b"\x00" * 31
    )
