"""Steps shared by the open-job, job-management and `--after`/resubmit tests.

Tasks in these tests are held by a *gate*: they wait for a file to appear, so a test decides
when they end instead of guessing durations. Everything else reads what a user reads.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

from harness import HqEnv

LOG_PREFIX = re.compile(r"^\S+ (INFO|WARN|ERROR|DEBUG) ", re.MULTILINE)


def gated(gate: str, then: str = "true") -> list[str]:
    """A bash command that waits until the file GATE exists, then runs THEN."""
    return ["bash", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; {then}"]


def open_gate(env: HqEnv, gate: str) -> None:
    (env.work / gate).touch()


def messages(output: str) -> list[str]:
    """The log lines of an output without their timestamp and level."""
    return [LOG_PREFIX.sub("", line) for line in output.splitlines() if LOG_PREFIX.match(line)]


def open_job(env: HqEnv, *args: str) -> int:
    out = env.command(["job", "open", *args])
    match = re.fullmatch(r"Job (\d+) is open\.\n", out)
    assert match, out
    return int(match.group(1))


def job_list_rows(env: HqEnv, *args: str) -> list[list[str]]:
    """Rows of `hq job list ARGS` as [ID, Name, State, Tasks]."""
    return env.command(["job", "list", *args], as_table=True).rows


def submit_file(env: HqEnv, toml: str, *args: str) -> str:
    path = env.work / "job.toml"
    path.write_text(textwrap.dedent(toml))
    return env.command(["job", "submit-file", str(path), *args])


@contextlib.contextmanager
def background(env: HqEnv, args: list[str]) -> Iterator[subprocess.Popen]:
    """`hq ARGS` in the background (for commands that block), output captured; killed at exit."""
    proc = subprocess.Popen(
        [*env.hq, *args],
        cwd=env.work,
        env=env.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def still_running(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def finish(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[int, str]:
    """Exit code and output of a background `hq`; kills it if it outlives TIMEOUT."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"`hq` still running after {timeout} s:\n{out.decode()}") from None
    return proc.returncode, out.decode("utf-8", "replace")


def stamp(path: str) -> str:
    """Shell that appends a high-resolution time stamp to PATH."""
    return f"date +%s.%N >> {path}"


def stamps(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []
