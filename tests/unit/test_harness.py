"""The test harness's own guards: errors in logs fail a test, a lost C module fails CI.

The first tests call the log check on fabricated logs; the last ones run pytest on small test
files (with this suite's conftest) to show what a user of the suite sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness import HqEnv, log_problems

TESTS = Path(__file__).resolve().parent.parent

SERVER_LOG = """\
2026-05-01T10:00:00Z INFO No online server found, starting a new server
2026-05-01T10:00:01Z ERROR Request SubmitJob failed
2026-05-01T10:00:01Z WARN Worker 1 missed its heartbeats
Exception in thread Thread-1 (serve):
Traceback (most recent call last):
  File "loop.py", line 10, in serve
    handle()
ZeroDivisionError: division by zero
2026-05-01T10:00:02.125Z ERROR Executor 1 failed
2026-05-01T10:00:03Z INFO Stopping server
"""


def test_log_problems_are_error_lines_and_whole_tracebacks() -> None:
    assert log_problems(SERVER_LOG) == [
        "2026-05-01T10:00:01Z ERROR Request SubmitJob failed",
        'Exception in thread Thread-1 (serve):\nTraceback (most recent call last):\n'
        '  File "loop.py", line 10, in serve\n    handle()\nZeroDivisionError: division by zero',
        "2026-05-01T10:00:02.125Z ERROR Executor 1 failed",
    ]


def test_texts_that_turn_exceptions_into_messages_are_problems() -> None:
    log = (
        "Error: internal server error, see the server log\n"
        "Internal error: KeyError: 3 (rerun with --debug for details, and please report it)\n"
        "a task printed the word ERROR\n"
    )
    assert len(log_problems(log)) == 2


def test_a_traceback_under_debug_belongs_to_its_error_line() -> None:
    log = (
        "2026-05-01T10:00:01.250Z ERROR Request SubmitJob failed\n"
        "Traceback (most recent call last):\n"
        '  File "rpc.py", line 180, in serve\n'
        "KeyError: 3\n"
        "2026-05-01T10:00:01.300Z INFO Worker 2 registered\n"
    )
    [problem] = log_problems(log)
    assert problem.splitlines()[0].endswith("Request SubmitJob failed")
    assert problem.splitlines()[-1] == "KeyError: 3"


def test_an_interrupted_start_is_not_a_problem() -> None:
    log = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nKeyboardInterrupt\n'
    assert log_problems(log) == []


def test_unexpected_errors_fail_with_the_offending_lines(tmp_path: Path) -> None:
    env = HqEnv(tmp_path)
    (env.logs / "server.log").write_text(SERVER_LOG)
    (env.logs / "worker1.log").write_text("2026-05-01T10:00:00Z INFO Worker 1 registered\n")
    with pytest.raises(pytest.fail.Exception) as failure:
        env.close_and_check()
    message = str(failure.value)
    assert "--- logs/server.log\n2026-05-01T10:00:01Z ERROR Request SubmitJob failed\n" in message
    assert "ZeroDivisionError: division by zero" in message
    assert "worker1.log" not in message
    assert "hq_env.expect_log(PATTERN)" in message


def test_expected_errors_pass(tmp_path: Path) -> None:
    env = HqEnv(tmp_path)
    (env.logs / "server.log").write_text(SERVER_LOG)
    env.expect_log("Request SubmitJob failed")
    env.expect_log("ZeroDivisionError")  # matches the whole traceback
    env.expect_log("Executor 1 failed")
    env.close_and_check()


def test_local_mode_logs_and_command_output_are_checked(tmp_path: Path) -> None:
    env = HqEnv(tmp_path)
    env.server_dir.mkdir()
    (env.server_dir / "local-worker.log").write_text("2026-05-01T10:00:00Z ERROR Executor 2 failed\n")
    env.run(["--version"])
    env.client_problems.append("`hq job list`: internal server error, see the server log")
    assert env.unexpected_problems() == [
        "--- hq-server/local-worker.log",
        "2026-05-01T10:00:00Z ERROR Executor 2 failed",
        "--- output of `hq` commands",
        "`hq job list`: internal server error, see the server log",
    ]


# --- through pytest, with this suite's conftest ------------------------------------------------


def run_pytest(tmp_path: Path, test_file: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(
        "import runpy\n"
        f"suite = runpy.run_path({str(TESTS / 'conftest.py')!r})\n"
        "globals().update((k, v) for k, v in suite.items() if not k.startswith('__'))\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    expect_log: allowed errors\n")
    (tmp_path / "test_meta.py").write_text(textwrap.dedent(test_file))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_server_error_fails_the_test_unless_it_is_expected(tmp_path: Path) -> None:
    result = run_pytest(
        tmp_path,
        """
        import pytest

        LINE = "2026-05-01T10:00:00Z ERROR Request SubmitJob failed\\n"

        def test_hidden(hq_env):
            (hq_env.logs / "server.log").write_text(LINE)

        @pytest.mark.expect_log("Request SubmitJob failed")
        def test_marked(hq_env):
            (hq_env.logs / "server.log").write_text(LINE)

        def test_announced(hq_env):
            hq_env.expect_log("SubmitJob")
            (hq_env.logs / "server.log").write_text(LINE)
        """,
    )
    assert result.returncode == 1, result.stdout
    assert "ERROR at teardown of test_hidden" in result.stdout
    assert "2026-05-01T10:00:00Z ERROR Request SubmitJob failed" in result.stdout
    assert "PASSED test_meta.py::test_marked" in result.stdout
    assert "PASSED test_meta.py::test_announced" in result.stdout


C_MODULE_TEST = """
import pytest

def test_needs_the_module():
    pytest.skip("C module not built: C launcher unavailable (simulated)")

def test_other_skip():
    pytest.skip("not this platform")
"""


def test_a_missing_c_module_skips_by_default(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, C_MODULE_TEST, HQSHM_REQUIRE_C_MODULE="")
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout


def test_a_missing_c_module_fails_when_required(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, C_MODULE_TEST, HQSHM_REQUIRE_C_MODULE="1")
    assert result.returncode == 1, result.stdout
    assert "FAILED test_meta.py::test_needs_the_module" in result.stdout
    assert "HQSHM_REQUIRE_C_MODULE=1, but this test was skipped: C module not built" in (
        result.stdout
    )
    assert "1 failed, 1 skipped" in result.stdout
