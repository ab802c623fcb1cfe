"""`hq server`: start, info, stop, instance dirs, access files and output modes.

What a user sees (spec/cli.md §3, deployment.md §1-3, output.md §3.1, §4.1, §5): the info table,
the numbered instance dirs and `hq-current`, the access file, exit codes and the exact texts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from harness import HqEnv, strip_ansi
from server_helpers import (
    ANSI,
    HOSTNAME,
    JSON_SERVER_KEYS,
    SERVER_INFO_KEYS,
    UID_RE,
    UTC_DATE_RE,
    access_path,
    assert_clean_failure,
    check_access_schema,
    free_port,
    hq,
    hq_version,
    instance_names,
    json_in_log,
    log_lines_removed,
    mode_of,
    read_json,
    server_table,
    spawn_server,
    vertical,
    wait_exit,
    wait_for_access_file,
    wait_for_log,
    wait_for_server_at,
)


def test_start_prints_info_table_with_server_directory_first(hq_env: HqEnv) -> None:
    hq_env.start_server()
    table = server_table(hq_env)
    assert [row[0] for row in table.rows] == ["Server directory", *SERVER_INFO_KEYS]
    assert table.get("Server directory") == str(hq_env.server_dir)
    assert UID_RE.fullmatch(table.get("Server UID"))
    assert table.get("Client host") == HOSTNAME
    assert table.get("Worker host") == HOSTNAME
    assert table.get("Version") == hq_version(hq_env)
    assert table.get("Pid") == str(hq_env.server.pid)
    assert "No online server found, starting a new server" in hq_env.log("server")


def test_server_info_has_nine_rows_matching_the_running_server(hq_env: HqEnv) -> None:
    hq_env.start_server()
    table = vertical(hq_env.command(["server", "info"]))
    assert table.header is None
    assert len(table) == 9
    assert [row[0] for row in table.rows] == SERVER_INFO_KEYS
    assert table.get("Pid") == str(hq_env.server.pid)
    assert UID_RE.fullmatch(table.get("Server UID"))
    assert table.get("Client host") == HOSTNAME
    assert table.get("Worker host") == HOSTNAME
    assert UTC_DATE_RE.fullmatch(table.get("Start date"))
    assert table.get("Journal path") == ""
    record = read_json(access_path(hq_env.server_dir))
    assert table.get("Server UID") == record["server_uid"]
    assert table.get("Client port") == str(record["client"]["port"])
    assert table.get("Worker port") == str(record["worker"]["port"])
    start = server_table(hq_env)
    assert start.rows[1:] == table.rows


def test_host_and_ports_given_at_start_are_shown_and_published(hq_env: HqEnv) -> None:
    client_port, worker_port = free_port(), free_port()
    server = hq_env.start_server(
        ["--host", "abcd123", "--client-port", str(client_port), "--worker-port", str(worker_port)],
        wait=False,
    )
    table = server_table(hq_env)
    assert table.get("Client host") == "abcd123"
    assert table.get("Worker host") == "abcd123"
    assert table.get("Client port") == str(client_port)
    assert table.get("Worker port") == str(worker_port)
    record = wait_for_access_file(hq_env, hq_env.server_dir, server, "server")
    assert (record["client"]["host"], record["client"]["port"]) == ("abcd123", client_port)
    assert (record["worker"]["host"], record["worker"]["port"]) == ("abcd123", worker_port)
    # Clients cannot reach `abcd123`, so stop it the other documented way.
    server.send_signal(signal.SIGINT)
    assert wait_exit(server) == 0


def test_instances_are_numbered_and_hq_current_follows_the_newest(hq_env: HqEnv) -> None:
    for expected in ("001", "002"):
        hq_env.start_server()
        assert os.readlink(hq_env.server_dir / "hq-current") in (
            expected,
            str(hq_env.server_dir / expected),
        )
        assert (hq_env.server_dir / "hq-current").resolve() == hq_env.server_dir / expected
        hq_env.command(["server", "stop"])
        assert wait_exit(hq_env.server) == 0
    assert instance_names(hq_env.server_dir) == ["001", "002"]


def test_next_instance_is_one_past_the_largest_number(hq_env: HqEnv) -> None:
    hq_env.server_dir.mkdir()
    for name in ("003", "136", "abc", "99x"):
        (hq_env.server_dir / name).mkdir()
    (hq_env.server_dir / "500").write_text("a file, not an instance")
    hq_env.start_server()
    assert (hq_env.server_dir / "hq-current").resolve() == hq_env.server_dir / "137"
    assert (hq_env.server_dir / "137" / "access.json").is_file()


def test_access_file_is_owner_read_only_with_hq_schema(hq_env: HqEnv) -> None:
    hq_env.start_server()
    path = access_path(hq_env.server_dir)
    assert mode_of(path) == 0o400
    record = read_json(path)
    check_access_schema(record)
    assert record["version"] == hq_version(hq_env)
    assert record["client"]["secret_key"] != record["worker"]["secret_key"]
    assert record["client"]["port"] != record["worker"]["port"]
    assert (record["client"]["host"], record["worker"]["host"]) == (HOSTNAME, HOSTNAME)


def test_server_stop_exits_zero_and_removes_only_hq_current(hq_env: HqEnv) -> None:
    hq_env.start_server()
    instance = (hq_env.server_dir / "hq-current").resolve()
    result = hq(hq_env, ["server", "stop"])
    assert result.returncode == 0, result.output
    assert "Stopping server" in result.output
    assert wait_exit(hq_env.server) == 0
    assert not os.path.lexists(hq_env.server_dir / "hq-current")
    assert (instance / "access.json").is_file()
    assert "Stopping server" in hq_env.log("server")


def test_sigint_stops_the_server_like_server_stop(hq_env: HqEnv) -> None:
    hq_env.start_server()
    instance = (hq_env.server_dir / "hq-current").resolve()
    hq_env.server.send_signal(signal.SIGINT)
    assert wait_exit(hq_env.server) == 0
    assert not os.path.lexists(hq_env.server_dir / "hq-current")
    assert (instance / "access.json").is_file()
    result = hq(hq_env, ["server", "info"])
    assert_clean_failure(result, 1)
    assert "No running instance of HQ found" in result.output


def test_server_stop_stops_connected_workers(hq_env: HqEnv) -> None:
    hq_env.start_server()
    worker = hq_env.start_worker()
    hq_env.command(["server", "stop"])
    assert wait_exit(hq_env.server) == 0
    assert wait_exit(worker) == 1


def test_second_start_on_a_live_dir_fails_and_the_first_keeps_serving(hq_env: HqEnv) -> None:
    hq_env.start_server()
    result = hq(hq_env, ["server", "start"])
    assert_clean_failure(result, 1)
    d = hq_env.server_dir
    assert (
        f"Server at {d} is already online, please stop it first using "
        f"`hq server stop --server-dir {d}`"
    ) in result.output
    assert hq_env.server.poll() is None
    assert instance_names(hq_env.server_dir) == ["001"]
    assert vertical(hq_env.command(["server", "info"])).get("Pid") == str(hq_env.server.pid)


def test_stale_hq_current_of_a_killed_server_is_replaced(hq_env: HqEnv) -> None:
    hq_env.start_server()
    old = read_json(access_path(hq_env.server_dir))
    hq_env.kill_server()
    assert (hq_env.server_dir / "hq-current").resolve() == hq_env.server_dir / "001"
    result = hq(hq_env, ["job", "list"])
    assert_clean_failure(result, 1)
    assert (
        f"Access token found but HQ server {old['client']['host']}:{old['client']['port']} "
        "is unreachable.\nTry to (re)start the server using `hq server start`"
    ) in result.output
    hq_env.start_server()
    assert (hq_env.server_dir / "hq-current").resolve() == hq_env.server_dir / "002"
    new = read_json(access_path(hq_env.server_dir))
    assert new["server_uid"] != old["server_uid"]
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "true"])
    assert hq_env.job_states() == {1: "FINISHED"}


def test_hq_server_dir_environment_variable_selects_the_dir(hq_env: HqEnv) -> None:
    chosen = hq_env.root / "from-env"
    server = spawn_server(hq_env, "envserver", ["server", "start"], {"HQ_SERVER_DIR": str(chosen)})
    wait_for_server_at(hq_env, chosen, server, "envserver")
    assert server_table(hq_env, "envserver").get("Server directory") == str(chosen)
    table = vertical(hq_env.command(["server", "info"], env={"HQ_SERVER_DIR": str(chosen)}))
    assert table.get("Pid") == str(server.pid)
    assert not hq_env.server_dir.exists()


def test_server_dir_option_wins_over_the_variable_in_any_position(hq_env: HqEnv) -> None:
    chosen = hq_env.root / "from-flag"
    server = spawn_server(hq_env, "flagserver", ["server", "start", "--server-dir", str(chosen)])
    wait_for_server_at(hq_env, chosen, server, "flagserver")
    assert not hq_env.server_dir.exists()  # HQ_SERVER_DIR (the env's dir) was not used
    pid = str(server.pid)
    for args in (
        ["--server-dir", str(chosen), "server", "info"],
        ["server", "info", "--server-dir", str(chosen)],
        ["server", "--server-dir", str(chosen), "info"],
        [f"--server-dir={chosen}", "server", "info"],
    ):
        assert vertical(hq_env.command(args)).get("Pid") == pid, args
    for args in (
        ["--output-mode=json", "--server-dir", str(chosen), "server", "info"],
        ["server", "--output-mode=json", "info", "--server-dir", str(chosen)],
        ["server", "info", "--output-mode", "json", "--server-dir", str(chosen)],
    ):
        result = hq(hq_env, args)
        assert result.returncode == 0, result.output
        assert json.loads(result.stdout)["pid"] == server.pid, args
    result = hq(hq_env, ["server", "info"])  # without the option: the env's empty dir
    assert_clean_failure(result, 1)
    assert f'No running instance of HQ found at "{hq_env.server_dir}"' in result.output


def test_relative_server_dir_is_made_absolute(hq_env: HqEnv) -> None:
    server = spawn_server(hq_env, "relserver", ["server", "start", "--server-dir", "rel"])
    absolute = hq_env.work / "rel"
    wait_for_server_at(hq_env, absolute, server, "relserver")
    assert server_table(hq_env, "relserver").get("Server directory") == str(absolute)
    table = vertical(hq_env.command(["--server-dir", "rel", "server", "info"]))
    assert table.get("Pid") == str(server.pid)


# --- output modes ---------------------------------------------------------------------------


def test_json_server_info_has_exactly_hq_keys(hq_env: HqEnv) -> None:
    hq_env.start_server()
    data = hq_env.json(["server", "info"])
    assert set(data) == JSON_SERVER_KEYS
    table = vertical(hq_env.command(["server", "info"]))
    assert data["server_dir"] is None
    assert data["journal_path"] is None
    assert data["pid"] == hq_env.server.pid
    assert data["server_uid"] == table.get("Server UID")
    assert data["client_host"] == data["worker_host"] == HOSTNAME
    assert isinstance(data["client_port"], int)
    assert str(data["client_port"]) == table.get("Client port")
    assert str(data["worker_port"]) == table.get("Worker port")
    assert data["version"] == hq_version(hq_env)
    assert data["start_date"].endswith("Z") and data["start_date"][:4].isdigit()
    raw = hq(hq_env, ["--output-mode=json", "server", "info"])
    assert list(json.loads(raw.stdout)) == sorted(JSON_SERVER_KEYS)
    assert raw.stdout.startswith('{\n  "client_host": ')


def test_json_server_start_prints_the_record_with_the_server_dir(hq_env: HqEnv) -> None:
    hq_env.start_server(["--output-mode=json"])
    data = json_in_log(hq_env.log("server"))
    assert set(data) == JSON_SERVER_KEYS
    assert data["server_dir"] == str(hq_env.server_dir)
    assert data["pid"] == hq_env.server.pid
    assert data["server_uid"] == read_json(access_path(hq_env.server_dir))["server_uid"]


def test_hq_output_mode_variable_selects_json(hq_env: HqEnv) -> None:
    hq_env.start_server()
    result = hq(hq_env, ["server", "info"], env={"HQ_OUTPUT_MODE": "json"})
    assert result.returncode == 0, result.output
    data = json.loads(result.stdout)
    assert data["pid"] == hq_env.server.pid
    # The option wins over the variable.
    table = vertical(
        hq(hq_env, ["--output-mode=cli", "server", "info"], env={"HQ_OUTPUT_MODE": "json"}).stdout
    )
    assert table.get("Pid") == str(hq_env.server.pid)


def test_quiet_server_start_prints_only_the_server_dir(hq_env: HqEnv) -> None:
    hq_env.start_server(["--output-mode=quiet"])
    wait_for_log(hq_env, "server", str(hq_env.server_dir))
    assert log_lines_removed(hq_env.log("server")) == [str(hq_env.server_dir)]
    assert hq(hq_env, ["--output-mode=quiet", "server", "info"]).stdout == ""


def test_no_colours_when_piped_or_never_and_colours_when_always(hq_env: HqEnv) -> None:
    hq_env.start_server()
    plain = hq(hq_env, ["server", "info"])
    never = hq(hq_env, ["--colors", "never", "server", "info"])
    always = hq(hq_env, ["--colors", "always", "server", "info"])
    assert ANSI not in plain.output
    assert ANSI not in never.output
    assert ANSI in always.stdout
    assert vertical(strip_ansi(always.stdout)).rows == vertical(plain.stdout).rows
    assert ANSI not in hq_env.log("server")
    failed = hq(hq_env, ["--colors=never", "job", "info", "1-x"])
    assert failed.returncode != 0 and ANSI not in failed.output


# --- hq server wait -------------------------------------------------------------------------


def test_server_wait_times_out_without_a_server(hq_env: HqEnv) -> None:
    started = time.monotonic()
    result = hq(hq_env, ["server", "wait", "--timeout", "2s"])
    elapsed = time.monotonic() - started
    assert_clean_failure(result, 1)
    assert "Waiting for server to become available (timeout: 2s)..." in result.output
    assert (
        f"Timeout after 2s: Could not connect to server at `{hq_env.server_dir}`. "
        "Make sure that the server is running."
    ) in result.output
    # It waited for its 2 s timeout and then gave up, rather than waiting on: a sanity bound.
    assert 2.0 <= elapsed < 15.0


def test_server_wait_succeeds_with_a_running_server(hq_env: HqEnv) -> None:
    hq_env.start_server()
    result = hq(hq_env, ["server", "wait", "--timeout", "10s"])
    assert result.returncode == 0, result.output
    assert "Successfully connected to server" in result.output
    assert result.stdout == ""


def test_server_wait_returns_once_a_server_appears(hq_env: HqEnv) -> None:
    waiter = subprocess.Popen(
        [*hq_env.hq, "server", "wait", "--timeout", "60s"],
        env=hq_env.env(),
        cwd=hq_env.work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_log_of(waiter)
        assert waiter.poll() is None  # still waiting: there is no server yet
        hq_env.start_server()
        assert waiter.wait(timeout=20) == 0
        assert b"Successfully connected to server" in waiter.stdout.read()
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        waiter.stdout.close()


def wait_for_log_of(proc: subprocess.Popen) -> None:
    """Block until ``proc`` printed its first line (the "Waiting for server" log)."""
    line = proc.stdout.readline()
    assert b"Waiting for server to become available" in line, line


# --- generate-access and --access-file ------------------------------------------------------


def test_generate_access_writes_full_client_and_worker_files(hq_env: HqEnv) -> None:
    work = hq_env.work
    result = hq(
        hq_env,
        [
            "server",
            "generate-access",
            "full.json",
            "--client-port",
            "4001",
            "--worker-port",
            "4002",
            "--host",
            "h1",
            "--worker-host",
            "wh",
            "--client-file",
            "client.json",
            "--worker-file",
            "worker.json",
        ],
    )
    assert result.returncode == 0, result.output
    for name in ("full.json", "client.json", "worker.json"):
        assert f"Storing access file as '{name}'" in result.output
        assert mode_of(work / name) == 0o400
    full, client, worker = (
        read_json(work / n) for n in ("full.json", "client.json", "worker.json")
    )
    check_access_schema(full)
    check_access_schema(client, "client")
    check_access_schema(worker, "worker")
    assert full["client"] == {
        "host": "h1",
        "port": 4001,
        "secret_key": full["client"]["secret_key"],
    }
    assert full["worker"] == {
        "host": "wh",
        "port": 4002,
        "secret_key": full["worker"]["secret_key"],
    }
    assert client == {"version": full["version"], "client": full["client"]}
    assert worker == {"version": full["version"], "worker": full["worker"]}
    assert full["client"]["secret_key"] != full["worker"]["secret_key"]


def test_generate_access_defaults_to_the_hostname_and_fresh_secrets(hq_env: HqEnv) -> None:
    hq_env.command(
        [
            "server",
            "generate-access",
            "a.json",
            "--client-port",
            "4001",
            "--worker-port",
            "4002",
            "--client-host",
            "ch",
        ]
    )
    hq_env.command(
        ["server", "generate-access", "b.json", "--client-port", "4001", "--worker-port", "4002"]
    )
    a, b = read_json(hq_env.work / "a.json"), read_json(hq_env.work / "b.json")
    assert (a["client"]["host"], a["worker"]["host"]) == ("ch", HOSTNAME)
    assert (b["client"]["host"], b["worker"]["host"]) == (HOSTNAME, HOSTNAME)
    assert a["server_uid"] != b["server_uid"]
    assert a["client"]["secret_key"] != b["client"]["secret_key"]


def test_generate_access_never_overwrites_a_file(hq_env: HqEnv) -> None:
    existing = hq_env.work / "access.json"
    existing.write_text("mine")
    for args in (
        ["access.json"],
        ["other.json", "--client-file", "access.json"],
        ["other2.json", "--worker-file", "access.json"],
    ):
        result = hq(
            hq_env,
            ["server", "generate-access", *args, "--client-port", "4001", "--worker-port", "4002"],
        )
        assert_clean_failure(result, 1)
        assert "access.json" in result.output
        assert existing.read_text() == "mine"


def test_server_with_access_file_publishes_an_identical_record(hq_env: HqEnv) -> None:
    path = hq_env.work / "myaccess.json"
    hq_env.command(
        [
            "server",
            "generate-access",
            str(path),
            "--client-port",
            str(free_port()),
            "--worker-port",
            str(free_port()),
        ]
    )
    hq_env.start_server(["--access-file", str(path)])
    given = read_json(path)
    assert read_json(access_path(hq_env.server_dir)) == given
    table = vertical(hq_env.command(["server", "info"]))
    assert table.get("Server UID") == given["server_uid"]
    assert table.get("Client port") == str(given["client"]["port"])
    assert table.get("Worker port") == str(given["worker"]["port"])
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "true"])
    assert hq_env.job_states() == {1: "FINISHED"}


def test_client_only_and_worker_only_files_each_grant_their_part(hq_env: HqEnv) -> None:
    full = hq_env.work / "full.json"
    client_dir, worker_dir = hq_env.root / "client-side", hq_env.root / "worker-side"
    (client_dir / "hq-current").mkdir(parents=True)
    worker_dir.mkdir()
    hq_env.command(
        [
            "server",
            "generate-access",
            str(full),
            "--client-port",
            str(free_port()),
            "--worker-port",
            str(free_port()),
            "--client-file",
            str(client_dir / "hq-current" / "access.json"),
            "--worker-file",
            str(worker_dir / "access.json"),
        ]
    )
    hq_env.start_server(["--access-file", str(full)])
    client = ["--server-dir", str(client_dir)]
    # The worker gets only the worker file, passed as a server dir holding `access.json`.
    hq_env.start_worker(args=["--server-dir", str(worker_dir)])
    out = hq_env.command([*client, "submit", "--wait", "--", "bash", "-c", "echo hi"])
    assert "Job submitted successfully, job ID: 1" in out
    assert (hq_env.work / "job-1" / "0.stdout").read_text() == "hi\n"
    table = hq_env.command([*client, "job", "list", "--all"], as_table=True)
    assert table.column("State") == ["FINISHED"]


def test_partial_files_do_not_grant_the_other_part(hq_env: HqEnv) -> None:
    full = hq_env.work / "full.json"
    client_dir, worker_dir = hq_env.root / "client-side", hq_env.root / "worker-side"
    client_dir.mkdir()
    worker_dir.mkdir()
    hq_env.command(
        [
            "server",
            "generate-access",
            str(full),
            "--client-port",
            str(free_port()),
            "--worker-port",
            str(free_port()),
            "--client-file",
            str(client_dir / "access.json"),
            "--worker-file",
            str(worker_dir / "access.json"),
        ]
    )
    hq_env.start_server(["--access-file", str(full)])
    result = hq(hq_env, ["--server-dir", str(worker_dir), "job", "list"])
    assert_clean_failure(result, 1)
    assert "no client credentials" in result.output
    result = hq(
        hq_env,
        ["worker", "start", "--cpus=1", "--detect-resources=none", "--server-dir", str(client_dir)],
        timeout=30,
    )
    assert_clean_failure(result, 1)
    assert "no worker credentials" in result.output
    assert hq_env.worker_states() == {}


def test_server_start_with_missing_or_partial_access_file_fails_cleanly(hq_env: HqEnv) -> None:
    hq_env.command(
        [
            "server",
            "generate-access",
            "full.json",
            "--client-port",
            "4001",
            "--worker-port",
            "4002",
            "--client-file",
            "client.json",
        ]
    )
    for path in ("missing.json", "client.json"):
        result = hq(hq_env, ["server", "start", "--access-file", path])
        assert_clean_failure(result, 1)
        assert path in result.output
    assert not os.path.lexists(hq_env.server_dir / "hq-current")


def test_server_start_in_a_file_reports_the_dir(hq_env: HqEnv) -> None:
    blocker = hq_env.root / "a-file"
    blocker.write_text("")
    for server_dir in (blocker, blocker / "below"):
        result = hq(hq_env, ["server", "start", "--server-dir", str(server_dir)])
        assert_clean_failure(result, 1)
        assert str(server_dir) in result.output
    assert blocker.read_text() == ""
