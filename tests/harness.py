"""Drive hqshm as a user does: real `hq` processes in a temporary server dir.

``HqEnv`` starts servers and workers in their own sessions, runs `hq` commands with stdout and
stderr merged (as HQ's own test harness does, since many messages are log lines), parses HQ's
tables, waits for states by polling, and at the end kills every process it started and checks
that nothing of them is left (processes or shared-memory segments) and that no server, node or
command reported an error the test did not ask for (``HqEnv.expect_log``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

DEFAULT_TIMEOUT = 20.0
# What makes a worker take a PBS or Slurm allocation as its group and time limit (deployment.md
# §4.5): kept out of every process a test starts, so that a suite run inside an allocation
# behaves as one outside it. A test that wants them passes them in its ``env``.
BATCH_VARIABLES = ("PBS_ENVIRONMENT", "PBS_JOBID", "SLURM_JOB_ID", "SLURM_JOBID")

# What a bug or an unplanned failure leaves in a server's or node's log: HQ's ERROR level
# (hqshm/cli/main.py writes `2024-05-01T10:00:00Z ERROR message`, with milliseconds under
# --debug), a Python traceback, and the texts that the CLI and the server's request handler print
# when they turn an exception into a message. The request handler keeps serving after a bug, so
# without this check a test passes through a server-side exception unless it reads the output.
LOG_PROBLEM = re.compile(
    r"^\S+Z ERROR |Traceback \(most recent call last\)|Internal error|internal server error"
    r"|^Exception (in thread|ignored)|^Fatal Python error"
)
# The same texts in the output of an `hq` command (its ERROR lines are a user's mistakes).
CLIENT_PROBLEM = re.compile(
    r"Traceback \(most recent call last\)|Internal error|internal server error"
)
TRACEBACK = "Traceback (most recent call last):"


def hq_executable() -> list[str]:
    """The installed `hq` next to this interpreter (the README installs it there)."""
    candidate = Path(sys.executable).parent / "hq"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("hq")
    if found:
        return [found]
    return [sys.executable, "-P", "-m", "hqshm.cli.main"]


class Table:
    """An HQ table split the way HQ's tests split it (spec/conformance.md "Parse")."""

    def __init__(self, rows: list[list[str]], header: list[str] | None) -> None:
        self.rows = rows
        self.header = header

    @staticmethod
    def parse(text: str) -> Table:
        rows: list[list[str]] = []
        header = None
        separators = 0
        for line in text.splitlines():
            if line.startswith("+-"):
                separators += 1
                # A header is the single row between the first two separators; in a vertical
                # table the second separator is the bottom border, after many rows.
                if separators == 2 and len(rows) == 1 and header is None:
                    header = rows.pop()
                continue
            if not line.startswith("|"):
                if rows or separators:
                    break
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if rows and cells and cells[0] == "" and any(cells[1:]):
                previous = rows[-1]
                for i, cell in enumerate(cells[1:], start=1):
                    if cell and i < len(previous):
                        previous[i] = f"{previous[i]}\n{cell}" if previous[i] else cell
                continue
            rows.append(cells)
        return Table(rows, header)

    def get(self, key: str) -> str:
        """Value of a row of a vertical table."""
        for row in self.rows:
            if row[0] == key:
                return row[1]
        raise KeyError(f"no row {key!r} in {self.rows}")

    def column(self, name: str) -> list[str]:
        assert self.header is not None, "not a horizontal table"
        index = self.header.index(name)
        return [row[index] for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)


def parse_tables(text: str) -> list[Table]:
    """Several tables printed back to back (e.g. `worker info 1-3`)."""
    chunks: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.startswith(("+", "|")):
            if chunks[-1]:
                chunks.append([])
            continue
        if line.startswith("+-") and chunks[-1] and chunks[-1][-1].startswith("+-") \
                and len(chunks[-1]) > 1:
            chunks.append([])  # a bottom border followed by the next table's top border
        chunks[-1].append(line)
    return [Table.parse("\n".join(c)) for c in chunks if c]


class HqEnv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.server_dir = root / "hq-server"
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.workers: dict[int, subprocess.Popen] = {}
        self.server: subprocess.Popen | None = None
        self.next_worker = 1
        self.hq = hq_executable()
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.expected_problems: list[re.Pattern[str]] = []
        self.client_problems: list[str] = []

    # --- environment ----------------------------------------------------------------------

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        for name in BATCH_VARIABLES:
            env.pop(name, None)
        env["HQ_SERVER_DIR"] = str(self.server_dir)
        env.pop("HQ_OUTPUT_MODE", None)
        env.pop("HQ_DEBUG", None)
        if extra:
            env.update(extra)
        return env

    # --- commands -------------------------------------------------------------------------

    def command(self, args: Sequence[str], *, expect_fail: str | None = None,
                cwd: Path | str | None = None, env: dict[str, str] | None = None,
                as_table: bool = False, stdin: bytes | None = None,
                timeout: float = 60.0, ignore_stderr: bool = False) -> Any:
        """Run `hq ARGS`; output is stdout+stderr (or stdout only with ignore_stderr)."""
        proc = subprocess.run(
            [*self.hq, *args],
            cwd=cwd or self.work,
            env=self.env(env),
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if ignore_stderr else subprocess.STDOUT,
            timeout=timeout,
        )
        output = proc.stdout.decode("utf-8", "replace")
        self._note_client_problems(args, output)
        if expect_fail is not None:
            assert proc.returncode != 0, f"`hq {' '.join(args)}` should fail:\n{output}"
            assert expect_fail in output, f"{expect_fail!r} not in:\n{output}"
            return output
        assert proc.returncode == 0, (
            f"`hq {' '.join(args)}` exited with {proc.returncode}:\n{output}")
        if as_table:
            return Table.parse(output)
        return output

    def run(self, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run `hq ARGS` and return the completed process, whatever its exit code."""
        proc = subprocess.run([*self.hq, *args], cwd=kwargs.pop("cwd", self.work),
                              env=self.env(kwargs.pop("env", None)),
                              capture_output=True,
                              timeout=kwargs.pop("timeout", 60.0), **kwargs)
        for stream in (proc.stdout, proc.stderr):
            if isinstance(stream, bytes):
                stream = stream.decode("utf-8", "replace")
            self._note_client_problems(args, stream or "")
        return proc

    def _note_client_problems(self, args: Sequence[str], output: str) -> None:
        if CLIENT_PROBLEM.search(output):
            self.client_problems += [f"`hq {' '.join(args)}`: {line}"
                                     for line in output.splitlines() if CLIENT_PROBLEM.search(line)]

    def json(self, args: Sequence[str], **kwargs: Any) -> Any:
        return json.loads(self.command(["--output-mode=json", *args], ignore_stderr=True,
                                       **kwargs))

    # --- processes ------------------------------------------------------------------------

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the env
        proc = subprocess.Popen([*self.hq, *args], cwd=cwd or self.work, env=self.env(env),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.processes.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def start_server(self, args: Sequence[str] = (), wait: bool = True) -> subprocess.Popen:
        self.server = self.spawn("server", ["server", "start", *args])
        if wait:
            self.wait_until(self._server_up, "the server to start",
                            check=lambda: self._alive_or_fail("server", self.server))
        return self.server

    def _server_up(self) -> bool:
        if not (self.server_dir / "hq-current" / "access.json").exists():
            return False
        return self.run(["server", "info"]).returncode == 0

    def start_worker(self, cpus: int | str | None = 1, *, hostname: str | None = None,
                     args: Sequence[str] = (), wait: bool = True,
                     env: dict[str, str] | None = None,
                     on_server_lost: str = "stop") -> subprocess.Popen:
        index = self.next_worker
        self.next_worker += 1
        hostname = hostname or f"worker{index}"
        full = ["worker", "start", "--detect-resources=none", f"--hostname={hostname}",
                f"--work-dir={self.root / f'worker{index}'}",
                f"--on-server-lost={on_server_lost}"]
        if cpus is not None:
            full.append(f"--cpus={cpus}")
        full += list(args)
        proc = self.spawn(f"worker{index}", full, env=env)
        self.workers[index] = proc
        if wait:
            self.wait_until(lambda: hostname in self._worker_hostnames(),
                            f"worker {hostname} to connect",
                            check=lambda: self._alive_or_fail(f"worker{index}", proc))
        return proc

    def _worker_hostnames(self) -> list[str]:
        result = self.run(["worker", "list"])
        if result.returncode != 0:
            return []
        table = Table.parse(result.stdout.decode())
        return table.column("Hostname") if table.header else []

    def _alive_or_fail(self, name: str, proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.workers[index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=10)

    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        assert self.server is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.server.pid, sig)
        self.server.wait(timeout=10)

    # --- waiting --------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], Any], what: str,
                   timeout: float = DEFAULT_TIMEOUT, check: Callable[[], None] | None = None,
                   interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(interval)

    def job_states(self) -> dict[int, str]:
        table = self.command(["job", "list", "--all"], as_table=True)
        return {int(row[0].lstrip("*")): row[2] for row in table.rows}

    def wait_for_job_state(self, job_ids: int | Sequence[int], states: str | Sequence[str],
                           timeout: float = DEFAULT_TIMEOUT) -> None:
        ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
        wanted = {states} if isinstance(states, str) else set(states)

        def done() -> bool:
            current = self.job_states()
            return all(current.get(i) in wanted for i in ids)

        self.wait_until(done, f"jobs {ids} to reach {wanted}", timeout)

    def worker_states(self) -> dict[int, str]:
        table = self.command(["worker", "list", "--all"], as_table=True)
        return {int(row[0]): row[1] for row in table.rows}

    def wait_for_worker_state(self, worker_id: int, state: str,
                              timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_until(lambda: self.worker_states().get(worker_id) == state,
                        f"worker {worker_id} to be {state}", timeout)

    def task_states(self, job_id: int) -> dict[int, str]:
        data = self.json(["task", "list", str(job_id)])
        return {t["id"]: t["state"] for t in data.get(str(job_id), [])}

    def wait_for_tasks(self, job_id: int, state: str, count: int | None = None,
                       timeout: float = DEFAULT_TIMEOUT) -> dict[int, str]:
        def done() -> dict[int, str] | None:
            states = self.task_states(job_id)
            n = sum(1 for s in states.values() if s == state)
            if (count is None and states and n == len(states)) or (count is not None
                                                                   and n >= count):
                return states
            return None

        return self.wait_until(done, f"tasks of job {job_id} to be {state}", timeout)

    # --- errors in logs ---------------------------------------------------------------------

    def expect_log(self, pattern: str) -> None:
        """Allow the errors that match the regex ``pattern`` (searched in the offending line, or
        in a whole traceback): a test that makes a server or node fail on purpose says so."""
        self.expected_problems.append(re.compile(pattern))

    def log_files(self) -> list[Path]:
        """The logs of every process this env spawned and of those `hq local start` started."""
        return sorted(self.logs.glob("*.log")) + sorted(self.server_dir.glob("local-*.log"))

    def unexpected_problems(self) -> list[str]:
        """Errors in the logs and in the output of `hq` commands that no expect_log allows,
        grouped under the name of their log."""
        report = []
        for path in self.log_files():
            found = [p for p in log_problems(path.read_text(errors="replace"))
                     if not self._expected(p)]
            if found:
                report.append(f"--- {path.relative_to(self.root)}")
                report += found
        found = [p for p in self.client_problems if not self._expected(p)]
        if found:
            report.append("--- output of `hq` commands")
            report += found
        return report

    def _expected(self, problem: str) -> bool:
        return any(pattern.search(problem) for pattern in self.expected_problems)

    # --- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything we started: SIGINT, a grace period, then SIGKILL of the group."""
        for _name, proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 5.0
        for _name, proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _name, proc in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def close_and_check(self) -> None:
        """close(), then fail if a process of this env is left or an error was not expected."""
        try:
            self.close()
        finally:
            leftovers = self.leftover_processes()
            problems = self.unexpected_problems()
        report = []
        if leftovers:
            report += ["processes left behind:", *leftovers]
        if problems:
            report += ["errors that the test did not expect (allow one that it provokes with "
                       "hq_env.expect_log(PATTERN) or @pytest.mark.expect_log(PATTERN)):",
                       *problems]
        if report:
            pytest.fail("\n".join(report), pytrace=False)

    def leftover_processes(self, grace: float = 5.0) -> list[str]:
        """Processes whose command line mentions this env's directory (tasks, workers...).

        A SIGKILLed executor or task dies asynchronously, after close() has returned, so the
        check allows a grace period before calling a process left behind.
        """
        deadline = time.monotonic() + grace
        while (found := self._processes_of_env()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def _processes_of_env(self) -> list[str]:
        return [f"{pid}: {cmd}" for pid, cmd in processes_mentioning(str(self.root)).items()]


def log_problems(text: str) -> list[str]:
    """The errors of a log (LOG_PROBLEM): each offending line, a traceback with its frames.

    A traceback that ends in KeyboardInterrupt is left out: close() stops processes with SIGINT,
    and one that arrives while a process starts interrupts an import.
    """
    lines = text.splitlines()
    problems = []
    i = 0
    while i < len(lines):
        block = [lines[i]]
        i += 1
        if not LOG_PROBLEM.search(block[0]):
            continue
        if TRACEBACK not in block[0] and i < len(lines) and TRACEBACK in lines[i]:
            block.append(lines[i])  # the traceback that an error line or "Exception in" leads
            i += 1
        if TRACEBACK in block[-1]:
            while i < len(lines) and lines[i][:1].isspace():  # the frames
                block.append(lines[i])
                i += 1
            if i < len(lines):  # the exception
                block.append(lines[i])
                i += 1
            if block[-1].startswith("KeyboardInterrupt"):
                continue
        problems.append("\n".join(block))
    return problems


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an exited child can no longer run)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_pid_exit(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def processes_mentioning(marker: str) -> dict[int, str]:
    """Live processes (not this one) whose command line contains `marker`: pid -> command line.

    Tests pass their private directory, which every process they start carries in its arguments.
    """
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and pid_alive(int(entry)):
            found[int(entry)] = cmd
    return found


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
