"""`hq task notify` from inside tasks, and `hq submit --wait|--progress --on-notify`
(spec/cli.md §5.3 and §7, jobs.md §6 and §13)."""

from __future__ import annotations

import os
import subprocess

import pytest
from harness import HqEnv

NOTE_LOG = "notes"
RECORD = f"bash -c 'echo \"$HQ_JOB_ID $HQ_TASK_ID $HQ_WORKER_ID $0\" >> {NOTE_LOG}'"


def notes(env: HqEnv) -> list[str]:
    path = env.work / NOTE_LOG
    return sorted(path.read_text().splitlines()) if path.exists() else []


def test_wait_runs_the_callback_for_every_notification(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.command(["submit", "--array", "1-3", "--wait", "--on-notify", RECORD, "--",
                    "bash", "-c", '$HQ task notify "hello $HQ_TASK_ID"; sleep 0.2'])
    assert notes(hq_env) == ["1 1 1 hello 1", "1 2 1 hello 2", "1 3 1 hello 3"]


def test_progress_runs_the_callback_too_and_keeps_the_order_of_a_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    hq_env.command(["submit", "--progress", "--on-notify", RECORD, "--", "bash", "-c",
                    "$HQ task notify one; sleep 0.7; $HQ task notify two"])
    assert (hq_env.work / NOTE_LOG).read_text().splitlines() == ["1 0 1 one", "1 0 1 two"]


def test_a_failing_callback_only_warns(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    out = hq_env.command(["submit", "--wait", "--on-notify", "false", "--", "bash", "-c",
                          "$HQ task notify x"])
    assert "exited with code 1" in out
    assert hq_env.job_states() == {1: "FINISHED"}


def test_tasks_get_an_access_key(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "bash", "-c", "echo $HQ_ACCESS_KEY"])
    key = (hq_env.work / "job-1" / "0.stdout").read_text().strip()
    assert key.startswith("@") and ":" in key


def test_a_task_cannot_notify_for_a_task_not_running_on_its_worker(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "bash", "-c",
                    "HQ_TASK_ID=99 $HQ task notify spoof 2> err; echo $? > rc"])
    assert (hq_env.work / "rc").read_text().strip() == "1"
    assert "not running on this worker" in (hq_env.work / "err").read_text()


@pytest.mark.parametrize(
    ("key", "message", "expected"),
    [
        (None, "x", "HQ_ACCESS_KEY variable not found. Are you running this command inside a "
                    "task?"),
        ("wrong", "x", "Value of HQ_ACCESS_KEY has a wrong format"),
        ("@node:token", "a" * 1025, "Notify message limit exceeded, message len: 1025, "
                                    "limit: 1024"),
    ],
)
def test_notify_errors_outside_a_task(hq_env: HqEnv, key: str | None, message: str,
                                      expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HQ_ACCESS_KEY"}
    if key is not None:
        env.update(HQ_ACCESS_KEY=key, HQ_JOB_ID="1", HQ_TASK_ID="0", HQ_INSTANCE_ID="0")
    result = subprocess.run([*hq_env.hq, "task", "notify", message], env=env,
                            capture_output=True, text=True, cwd=hq_env.work)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_on_notify_needs_wait_or_progress(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.command(["submit", "--on-notify", "echo", "--", "true"],
                   expect_fail="--on-notify needs --wait or --progress")


def test_hostile_datagrams_to_a_nodes_notification_socket_are_refused(hq_env: HqEnv) -> None:
    """The socket is in the abstract namespace, so any local user can write to it (its name
    shows in /proc/net/unix). A token of non-ASCII text made the constant-time comparison raise,
    which ended the node; such datagrams are now answered as invalid, and the node serves on."""
    import socket

    import msgpack

    from hqshm.model.notification import decode_answer, parse_key

    hq_env.start_server()
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "bash", "-c", "echo $HQ_ACCESS_KEY"])
    name, token = parse_key((hq_env.work / "job-1" / "0.stdout").read_text().strip())
    hostile = [
        msgpack.packb(["é" * 32, 1, 0, 0, b"x"]),  # non-ASCII: the comparison raised
        msgpack.packb([token + "\udcff", 1, 0, 0, b"x"], unicode_errors="surrogatepass"),
        msgpack.packb(["a" * 10_000, 1, 0, 0, b"x"]),
        msgpack.packb([token, -1, 0, 0, b"x"]),
        msgpack.packb([token, 2**64 - 1, 0, 0, b"x"]),
        msgpack.packb([token, 1, 0, 2**40, b"x"]),
        b"\xc1 not msgpack",
    ]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0hqshm-test-hostile-" + str(os.getpid()))
        sock.settimeout(10)
        for datagram in hostile:
            sock.sendto(datagram, "\0" + name)
            assert decode_answer(sock.recv(4096)) in ("invalid notification",
                                                     "wrong access key"), datagram
        sock.sendto(msgpack.packb(["0" * 32, 1, 0, 0, b"x"]), "\0" + name)  # a wrong guess
        assert decode_answer(sock.recv(4096)) == "wrong access key"
    hq_env.command(["submit", "--wait", "--", "true"])  # the node still serves
    assert hq_env.job_states() == {1: "FINISHED", 2: "FINISHED"}
