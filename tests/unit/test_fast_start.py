"""`hq server start` listens and publishes its access file before its heavy imports (issue 8,
item 7), pyzmq included (its sockets take over the bound ports later): a real `hq server
start` run in a child interpreter, stopped at the moment it publishes, reports what it had
imported by then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, os, sys
from hqshm.server import endpoints
publish = endpoints.Listeners.publish
def probe(self, server_dir):
    instance = publish(self, server_dir)
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)
endpoints.Listeners.publish = probe
from hqshm.cli.main import run
sys.exit(run(sys.argv[1:]))
"""

HEAVY = ("zmq", "numpy", "psutil", "hqshm.server.process", "hqshm.cli.render", "hqshm.link.responses",
         "hqshm.link.requests", "hqshm.server.journal.records", "hqshm.cluster.core", "msgpack")


def loaded_at_publish(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, "server", "start", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("journal", [False, True])
def test_the_access_file_is_written_before_the_heavy_imports(tmp_path: Path,
                                                             journal: bool) -> None:
    args = ["--server-dir", str(tmp_path / "sd")]
    if journal:  # a journal that does not exist yet: its UID is known (a fresh one)
        args += ["--journal", str(tmp_path / "journal")]
    loaded = loaded_at_publish(*args)
    assert "hqshm.server.endpoints" in loaded  # the probe did run at publish time
    assert not [name for name in HEAVY if name in loaded]
    assert (tmp_path / "sd" / "hq-current" / "access.json").exists()
