"""Bad input at the command line (spec/cli.md §1.2, deployment.md §1): exit codes and texts.

Parse errors exit 2 with clap's texts, errors found later exit 1 with one clear message (in JSON
mode a `{"error": ...}` object on stdout), per-item misses exit 0, and nothing ever prints a
Python traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HqEnv
from server_helpers import (
    HqRun,
    assert_clean_failure,
    free_port,
    hq,
    hq_version,
    log_lines_removed,
    write_access,
)

from hqshm.cli.parser import build_parser


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HqEnv]:
    """One server for the tests that only need something to talk to (and change nothing)."""
    env = HqEnv(tmp_path_factory.mktemp("cli-errors"))
    try:
        env.start_server()
        yield env
    finally:
        env.close_and_check()


def _message_lines(result: HqRun) -> list[str]:
    return [line for line in log_lines_removed(result.output) if line.strip()]


# --- parse errors: exit 2 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--foo"],
        ["job", "list", "--foo"],
        ["job", "info", "--foo"],
        ["server", "--foo"],
        ["server", "start", "--foo"],
        ["worker", "list", "--foo"],
        ["submit", "--foo", "--", "true"],
        ["--output-mode=json", "job", "list", "--foo"],
    ],
    ids=lambda a: " ".join(a),
)
def test_unknown_flag_is_a_parse_error(hq_env: HqEnv, args: list[str]) -> None:
    result = hq(hq_env, args)
    assert_clean_failure(result, 2)
    assert "unexpected argument '--foo' found" in result.stderr
    assert result.stdout == ""


def test_missing_required_argument_names_it_as_clap_does(hq_env: HqEnv) -> None:
    result = hq(hq_env, ["server", "generate-access", "x.json"])
    assert_clean_failure(result, 2)
    assert "the following required arguments were not provided" in result.stderr
    assert "--client-port <CLIENT_PORT>" in result.stderr
    assert "--worker-port <WORKER_PORT>" in result.stderr
    result = hq(hq_env, ["server", "generate-access", "x.json", "--client-port", "4001"])
    assert_clean_failure(result, 2)
    assert "--worker-port <WORKER_PORT>" in result.stderr
    assert "--client-port <CLIENT_PORT>" not in result.stderr
    assert not (hq_env.work / "x.json").exists()
    for args in (["job", "info"], ["task", "info", "1"], ["worker", "stop"]):
        result = hq(hq_env, args)
        assert_clean_failure(result, 2)
        assert "the following required arguments were not provided" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--output-mode", "xml", "job", "list"],
        ["job", "list", "--output-mode=yaml"],
        ["--colors", "sometimes", "job", "list"],
        ["worker", "list", "--filter", "bogus"],
        ["worker", "start", "--on-server-lost", "maybe"],
        ["submit", "--pin", "tight", "--", "true"],
        ["server", "start", "--client-port", "port"],
    ],
    ids=lambda a: " ".join(a),
)
def test_invalid_value_is_a_parse_error(hq_env: HqEnv, args: list[str]) -> None:
    result = hq(hq_env, args)
    assert_clean_failure(result, 2)
    assert result.stderr.startswith("error: ")
    assert "For more information, try '--help'." in result.stderr
    assert not hq_env.server_dir.exists()


def test_invalid_output_mode_variable_is_refused(hq_env: HqEnv) -> None:
    result = hq(hq_env, ["job", "list"], env={"HQ_OUTPUT_MODE": "xml"})
    assert_clean_failure(result, 2)
    assert "xml" in result.stderr


def test_hq_alone_prints_usage_and_exits_2(hq_env: HqEnv) -> None:
    result = hq(hq_env, [])
    assert_clean_failure(result, 2)
    assert "Usage: hq" in result.stderr


def test_version_prints_hq_and_the_version(hq_env: HqEnv) -> None:
    version = hq_version(hq_env)
    assert version and " " not in version
    for flag in ("--version", "-V"):
        result = hq(hq_env, [flag])
        assert result.returncode == 0
        assert result.stdout == f"hq {version}\n"


def _command_paths() -> list[list[str]]:
    """Every command and subcommand of the installed parser."""
    import argparse

    paths: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        paths.append(prefix)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen: set[int] = set()
                for name, sub in action.choices.items():
                    if id(sub) not in seen:  # an alias (`alloc cat`) shares its command's help
                        seen.add(id(sub))
                        walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "hq")
def test_help_of_every_command(hq_env: HqEnv, path: list[str]) -> None:
    # `hq output-log DIR <subcommand>`: the directory comes before the subcommand.
    words = [*path[:1], "DIR", *path[1:]] if path[:1] == ["output-log"] and path[1:] else path
    for flag in ("--help", "-h"):
        result = hq(hq_env, [*words, flag])
        assert result.returncode == 0, result.output
        assert "usage" in result.stdout.lower()
        assert " ".join(["hq", *words]) in " ".join(result.stdout.split())
        assert "--help" in result.stdout
        assert "Traceback" not in result.output


def test_help_lists_the_p0_commands(hq_env: HqEnv) -> None:
    paths = {" ".join(p) for p in _command_paths()}
    for command in (
        "server start",
        "server stop",
        "server info",
        "worker start",
        "worker stop",
        "worker list",
        "worker info",
        "submit",
        "job list",
        "job info",
        "job cancel",
        "job wait",
        "task list",
        "task info",
    ):
        assert command in paths


# --- no server, a dead server, a broken server dir ------------------------------------------


def test_no_server_gives_the_exact_text(hq_env: HqEnv) -> None:
    result = hq(hq_env, ["job", "list"])
    assert_clean_failure(result, 1)
    assert result.stderr == (
        f'No running instance of HQ found at "{hq_env.server_dir}".\n'
        "Try to start the server: `hq server start` or use a different server directory.\n"
    )
    other = hq_env.root / "elsewhere"
    result = hq(hq_env, ["--server-dir", str(other), "worker", "list"])
    assert_clean_failure(result, 1)
    assert result.stderr == (
        f'No running instance of HQ found at "{other}".\n'
        f"Try to start the server: `hq server start --server-dir {other}` or use a different "
        "server directory.\n"
    )
    assert not other.exists()


def test_no_server_in_json_mode_is_an_error_object_on_stdout(hq_env: HqEnv) -> None:
    result = hq(hq_env, ["--output-mode=json", "job", "list"])
    assert_clean_failure(result, 1)
    assert json.loads(result.stdout) == {
        "error": (
            f'No running instance of HQ found at "{hq_env.server_dir}".\n'
            "Try to start the server: `hq server start` or use a different server directory."
        )
    }
    quiet = hq(hq_env, ["--output-mode=quiet", "job", "list"])
    assert_clean_failure(quiet, 1)
    assert quiet.stdout == "" and "No running instance of HQ found" in quiet.stderr


def test_dead_server_gives_the_exact_unreachable_text(hq_env: HqEnv) -> None:
    port = free_port()  # nobody listens there
    stale = hq_env.root / "stale"
    stale.mkdir()
    hq_env.command(
        [
            "server",
            "generate-access",
            str(stale / "access.json"),
            "--host",
            "127.0.0.1",
            "--client-port",
            str(port),
            "--worker-port",
            str(free_port()),
        ]
    )
    for args in (["job", "list"], ["submit", "--", "true"], ["server", "stop"]):
        result = hq(hq_env, ["--server-dir", str(stale), *args])
        assert_clean_failure(result, 1)
        assert (
            f"Access token found but HQ server 127.0.0.1:{port} is unreachable.\n"
            "Try to (re)start the server using `hq server start`"
        ) in result.stderr
    result = hq(hq_env, ["--output-mode=json", "--server-dir", str(stale), "job", "list"])
    assert_clean_failure(result, 1)
    assert "is unreachable" in json.loads(result.stdout)["error"]


# --- a server that is still starting: clients wait for it ------------------------------------


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen]:
    """A live process whose pid stands for a server that is still starting (slowly)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _starting(server_dir: Path, pid: int) -> None:
    server_dir.mkdir(parents=True, exist_ok=True)
    (server_dir / "hq-starting").write_text(f"{pid}\n")


def _client(hq_env: HqEnv, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*hq_env.hq, *args], cwd=hq_env.work, env=hq_env.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_client_waits_for_a_server_that_is_starting(
    hq_env: HqEnv, stand_in: subprocess.Popen
) -> None:
    """Issue 8, item 7: `hq submit` right after `hq server start` must not fail."""
    _starting(hq_env.server_dir, stand_in.pid)
    client = _client(hq_env, ["submit", "--", "true"])
    time.sleep(1.0)
    assert client.poll() is None, client.communicate()  # still waiting, not failed
    hq_env.start_server()  # takes the marker over, then removes it once published
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, (out, err)
    assert b"Job submitted successfully, job ID: 1" in out + err
    assert not (hq_env.server_dir / "hq-starting").exists()


def test_a_client_waits_while_a_restarting_servers_access_file_is_stale(
    hq_env: HqEnv, stand_in: subprocess.Popen
) -> None:
    hq_env.start_server()
    hq_env.kill_server()  # SIGKILL: hq-current still names the dead server
    _starting(hq_env.server_dir, stand_in.pid)
    client = _client(hq_env, ["job", "list"])
    time.sleep(1.0)
    assert client.poll() is None, client.communicate()
    hq_env.start_server()
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, (out, err)


def test_a_real_server_start_is_waited_for(hq_env: HqEnv) -> None:
    hq_env.start_server(wait=False)
    # As soon as the server process has said it is starting, a client succeeds.
    hq_env.wait_until(lambda: (hq_env.server_dir / "hq-starting").exists()
                      or (hq_env.server_dir / "hq-current").exists(), "the server to start")
    result = hq(hq_env, ["job", "list"])
    assert result.returncode == 0, result.output


def test_a_dead_starters_marker_fails_at_once(hq_env: HqEnv) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _starting(hq_env.server_dir, dead.pid)
    began = time.monotonic()
    result = hq(hq_env, ["job", "list"])
    assert_clean_failure(result, 1)
    assert "No running instance of HQ found" in result.stderr
    assert time.monotonic() - began < 4.0


def test_the_wait_for_a_starting_server_ends_after_a_few_seconds(
    hq_env: HqEnv, stand_in: subprocess.Popen
) -> None:
    _starting(hq_env.server_dir, stand_in.pid)
    began = time.monotonic()
    result = hq(hq_env, ["job", "list"])
    assert_clean_failure(result, 1)
    assert "No running instance of HQ found" in result.stderr
    assert 4.5 < time.monotonic() - began < 15.0


def _broken_dir(root: Path, kind: str) -> Path:
    """A server dir that cannot be used, in ways that stop root as well (tests run as root)."""
    server_dir = root / kind
    access = server_dir / "access.json"
    if kind == "file-as-dir":
        server_dir.write_text("not a directory")
        return server_dir
    server_dir.mkdir()
    if kind == "dir-as-access-file":
        access.mkdir()
    elif kind == "symlink-loop":
        access.symlink_to(access)
    elif kind == "fifo-as-access-file":
        os.mkfifo(access, 0o600)
    elif kind == "invalid-json":
        write_access(access, {}).write_text("{not json")
    elif kind == "wrong-schema":
        write_access(access, {"version": "1", "client": {"host": "h", "port": "x"}})
    elif kind == "hq-current-loop":
        (server_dir / "hq-current").symlink_to("hq-current")
    return server_dir


@pytest.mark.parametrize(
    "kind",
    [
        "file-as-dir",
        "dir-as-access-file",
        "symlink-loop",
        "fifo-as-access-file",
        "invalid-json",
        "wrong-schema",
        "hq-current-loop",
    ],
)
def test_unusable_server_dir_gives_a_clear_error(hq_env: HqEnv, kind: str) -> None:
    server_dir = _broken_dir(hq_env.root, kind)
    for args in (
        ["job", "list"],
        ["server", "info"],
        ["worker", "start", "--cpus=1", "--detect-resources=none"],
    ):
        result = hq(hq_env, ["--server-dir", str(server_dir), *args], timeout=30)
        assert_clean_failure(result, 1)
        lines = _message_lines(result)
        assert 1 <= len(lines) <= 2, result.output
        assert str(server_dir) in lines[0]
    result = hq(hq_env, ["--output-mode=json", "--server-dir", str(server_dir), "job", "list"])
    assert_clean_failure(result, 1)
    assert str(server_dir) in json.loads(result.stdout)["error"]


# --- errors found after parsing, with a server ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["job", "info", "1-x"], "1-x"),
        (["job", "info", "3-1"], "3-1"),
        (["job", "info", "1,,2"], "1,,2"),
        (["job", "cancel", "abc"], "abc"),
        (["job", "wait", "1-x"], "1-x"),
        (["task", "list", "x"], "x"),
        (["task", "info", "1", "1-x"], "1-x"),
        (["worker", "info", "1-"], "1-"),
        (["worker", "stop", "1:2"], "1:2"),
        (["submit", "--array", "5-1", "--", "true"], "5-1"),
        (["submit", "--array", "1-3,2-4", "--", "true"], "Ranges overlap"),
        (["submit", "--array", "1-3:0", "--", "true"], "1-3:0"),
        (["submit", "--array", "1-x", "--", "true"], "1-x"),
        (["submit", "--array", "-1", "--", "true"], "-1"),
        (["submit", "--array", "", "--", "true"], "expected a number"),
        (["submit", "--cpus", "foo", "--", "true"], "foo"),
        (["submit", "--time-limit", "xyz", "--", "true"], "Could not parse PBS walltime"),
        (["submit", "--crash-limit", "0", "--", "true"], "Crash limit cannot be 0"),
        (["submit", "--name", "a\tb", "--", "true"], "name cannot have a newline or a tab"),
        (["server", "wait", "--timeout", "soon"], "Could not parse PBS walltime"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_malformed_value_gives_one_line_and_no_traceback(
    live: HqEnv, args: list[str], text: str
) -> None:
    result = hq(live, args)
    assert_clean_failure(result)
    lines = _message_lines(result)
    assert len(lines) == 1, result.output
    assert text in lines[0]
    assert "Job submitted successfully" not in result.output
    in_json = hq(live, ["--output-mode=json", *args])
    assert in_json.returncode == result.returncode
    if result.returncode == 2:  # a value parser's error: clap's text on stderr in every mode
        assert in_json.stdout == "" and text in in_json.stderr
    else:
        data = json.loads(in_json.stdout)
        assert list(data) == ["error"] and text in data["error"]


def test_overlapping_array_is_refused_with_hq_text(live: HqEnv) -> None:
    result = hq(live, ["submit", "--array", "1-3,2-4", "--", "true"])
    assert_clean_failure(result, 1)
    assert _message_lines(result) == ["Ranges overlap"]


def test_missing_job_is_logged_and_exits_zero(live: HqEnv) -> None:
    result = hq(live, ["job", "info", "99"])
    assert result.returncode == 0, result.output
    assert "Job 99 not found" in result.output
    assert "Traceback" not in result.output
    data = json.loads(hq(live, ["--output-mode=json", "job", "info", "99"]).stdout)
    assert data == []


def test_json_mode_error_on_stdout_with_a_server(live: HqEnv) -> None:
    result = hq(live, ["--output-mode=json", "job", "info", "1-x"])
    assert_clean_failure(result, 1)
    assert list(json.loads(result.stdout)) == ["error"]
    assert result.stdout.startswith('{\n  "error": ')


def test_live_server_survived_every_bad_input(live: HqEnv) -> None:
    assert live.server is not None and live.server.poll() is None
    assert "Traceback" not in live.log("server")
    assert live.unexpected_problems() == []
    assert live.command(["server", "info"])
