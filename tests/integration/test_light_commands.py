"""`hq submit`, `hq job list` and `hq job info` against a real server import neither pyzmq nor
`logging` (nor numpy, psutil): each is a command a workflow manager may run once per step, and
those imports were most of its 190 ms (issue 9, item 2). A child interpreter runs the real entry
point and then reports what it had imported. With ``HQSHM_PYZMQ=1`` the same commands still
work, on pyzmq."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import HqEnv, hq_executable

# The test environment's editable install imports pathlib (and urllib.parse, ipaddress) at
# start-up; the probe forgets them, so that an import of ours shows up again.
PROBE = """
import json, sys
for name in ("pathlib", "urllib.parse", "ipaddress", "fnmatch"):
    sys.modules.pop(name, None)
from hqshm.cli.main import run
code = run(sys.argv[1:])
print(json.dumps(sorted(sys.modules)), flush=True)
sys.exit(code)
"""

HEAVY = ("zmq", "logging", "numpy", "psutil", "msgpack_numpy", "hqshm.server", "hqshm.node",
         "dataclasses", "inspect", "pathlib")
# What only commands that draw tables import (`hq submit` prints one line).
TABLES = ("hqshm.cli.layouts", "hqshm.cli.formats")


def _imported(hq_env: HqEnv, *args: str, env: dict[str, str] | None = None
              ) -> tuple[str, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60, cwd=hq_env.work, env=hq_env.env(env))
    assert done.returncode == 0, done.stdout + done.stderr
    *output, modules = done.stdout.splitlines()
    return "\n".join(output), set(json.loads(modules))


@pytest.mark.parametrize("args", [("submit", "--", "true"), ("job", "list"),
                                  ("job", "info", "1")])
def test_client_commands_import_no_heavy_module(hq_env: HqEnv, args: tuple[str, ...]) -> None:
    hq_env.start_server()
    hq_env.command(["submit", "--", "true"])
    output, loaded = _imported(hq_env, *args)
    assert output
    heavy = [name for name in loaded for prefix in HEAVY
             if name == prefix or name.startswith(prefix + ".")]
    assert not heavy
    if args[0] == "submit":
        assert not loaded & set(TABLES)


def test_a_command_that_logs_sets_logging_up_on_its_first_message(hq_env: HqEnv) -> None:
    hq_env.start_server()
    done = subprocess.run([*hq_env.hq, "job", "info", "7"], capture_output=True, text=True,
                          timeout=60, env=hq_env.env())
    assert done.returncode == 0
    assert done.stderr.endswith(" ERROR Job 7 not found\n")
    assert done.stderr.startswith("20")  # the timestamp of HQ's log line


def test_the_same_commands_work_on_pyzmq(hq_env: HqEnv) -> None:
    hq_env.start_server()
    forced = {"HQSHM_PYZMQ": "1"}
    output, loaded = _imported(hq_env, "submit", "--", "true", env=forced)
    assert output == "Job submitted successfully, job ID: 1"
    assert "zmq" in loaded
    output, _ = _imported(hq_env, "job", "info", "1", env=forced)
    assert "WAITING" in output


WORKER_PROBE = """
import json, sys
import hqshm.node.loop as loop

def registered(self, *args):
    print(json.dumps(sorted(sys.modules)), flush=True)
    raise KeyboardInterrupt  # the node shuts down as on Ctrl-C

loop.Node._registered = registered
from hqshm.cli.main import run
sys.exit(run(sys.argv[1:]))
"""


def test_a_worker_registers_before_it_imports_the_clients_modules(hq_env: HqEnv) -> None:
    """`hq worker start` talks to the server through the node's socket: the client's
    connection, its requests and the views it prints once registered come after."""
    hq_env.start_server()
    done = subprocess.run([sys.executable, "-c", WORKER_PROBE, "worker", "start", "--cpus", "1"],
                          capture_output=True, text=True, timeout=60, cwd=hq_env.work,
                          env=hq_env.env())
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "hqshm.node.loop" in loaded
    early = {"hqshm.link.client", "hqshm.link.requests", "hqshm.link.details",
             "hqshm.cli.layouts", "hqshm.cli.resourceview"}
    assert not loaded & early


SERVER_PROBE = """
import sys
from hqshm.cluster import firstuse

first_use = firstuse._FirstUseImport.__getattr__

def reported(self, name):
    if self.__name__ == "numpy" and not firstuse.loaded(self):
        # Seen in sys.modules already: a module imported numpy itself, not through cluster/firstuse.py.
        print(f"numpy imported (it was already: {'numpy' in sys.modules})", flush=True)
    return first_use(self, name)

firstuse._FirstUseImport.__getattr__ = reported
from hqshm.cli.main import run
sys.exit(run(sys.argv[1:]))
"""


def test_a_server_serves_before_it_imports_numpy_and_imports_it_when_idle(
        hq_env: HqEnv) -> None:
    """numpy's import is as long as the rest of the server's: the server answers without it
    (issue 9, item 3), then imports it while nothing is asked of it, so a job need not wait."""
    hq_env.hq = [sys.executable, "-c", SERVER_PROBE]
    try:
        hq_env.start_server()
    finally:
        hq_env.hq = hq_executable()
    hq_env.wait_until(lambda: "numpy imported" in hq_env.log("server"), "numpy's import")
    log = hq_env.log("server")
    assert log.index("Server directory") < log.index("numpy imported")  # the table on ready
    assert log.count("numpy imported") == 1
    assert "numpy imported (it was already: False)" in log
    hq_env.start_worker()
    hq_env.command(["submit", "--wait", "--", "true"])


def test_executors_carry_neither_pyzmq_nor_openssl(hq_env: HqEnv) -> None:
    """Executors are forked before the node imports pyzmq, and nothing of the runtime loads
    OpenSSL: each would count again in every executor's memory (issue 9, item 4)."""
    import psutil

    hq_env.start_server()
    worker = hq_env.start_worker(cpus=2)
    hq_env.command(["submit", "--wait", "--array=1-4", "--", "true"])
    node = psutil.Process(worker.pid)
    executors = node.children()
    assert len(executors) == 2
    for process in (node, *executors):
        libraries = {Path(m.path).name for m in process.memory_maps() if m.path}
        assert not [name for name in libraries if name.startswith("libcrypto")], process
    for executor in executors:
        libraries = {Path(m.path).name for m in executor.memory_maps() if m.path}
        assert not [name for name in libraries if "zmq" in name], libraries


CRASHING_WORKER = """
import sys
import hqshm.node.loop as loop

def registered(self, *args):
    raise OSError(9, "Bad file descriptor")  # a bug in the node's loop, as one was seen once

loop.Node._registered = registered
from hqshm.cli.main import run
sys.exit(run(sys.argv[1:]))
"""


@pytest.mark.expect_log("Internal error|Unexpected error|Traceback|OSError")
def test_a_node_that_crashes_logs_its_traceback(hq_env: HqEnv) -> None:
    """Without --debug an `hq` command says an internal error in one line; a server or node
    that ends so also logs the traceback, since its log is what is left to find the bug."""
    hq_env.start_server()
    done = subprocess.run([sys.executable, "-c", CRASHING_WORKER, "worker", "start", "--cpus",
                           "1"], capture_output=True, text=True, timeout=60, cwd=hq_env.work,
                          env=hq_env.env())
    assert done.returncode == 1
    assert "Internal error: OSError: [Errno 9] Bad file descriptor" in done.stderr
    assert " ERROR Unexpected error\nTraceback (most recent call last):" in done.stderr
    assert ', in registered\n' in done.stderr  # the frame that raised
