"""mypy on the pure cores: a job id passed where a worker id belongs fails the suite.

``cluster/`` is installed as ``hqshm.cluster`` (a package-dir mapping), and the test environment
holds an editable install whose import hook mypy does not read; so mypy runs in a tree of links
shaped like the installed package: ``hqshm/`` links every entry of the repository's ``hqshm/``,
and ``hqshm/cluster`` links ``cluster/``. Every ``hqshm`` import resolves inside that tree, so
types are checked across the packages, and nothing of ``hqshm`` is skipped as missing (the
mix-up probe below fails if it were). Errors name the repository's files. The configuration is
``[tool.mypy]`` of pyproject.toml; the cache is the repository's ``.mypy_cache``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The pure cores, as paths of the repository; their imports are checked with them.
CORES = [
    "cluster/ids.py",
    "cluster/core.py",
    "cluster/reactor.py",
    "cluster/scheduler.py",
    "cluster/utilization.py",
    "cluster/protocol.py",
    "cluster/codec.py",
    "hqshm/model/tasktable.py",
    "hqshm/server/events.py",
    "hqshm/server/jobbook.py",
    "hqshm/server/jobs.py",
    "hqshm/server/submits.py",
    "hqshm/server/views.py",
    "hqshm/server/workers.py",
    "hqshm/server/explain.py",
    "hqshm/model/allocqueue.py",
    "hqshm/server/autoalloc/script.py",
    "hqshm/server/autoalloc/parsers.py",
    "hqshm/server/autoalloc/state.py",
    "hqshm/server/autoalloc/demand.py",
    "hqshm/server/autoalloc/planner.py",
    "hqshm/server/autoalloc/reconcile.py",
    "hqshm/node/allocator.py",
    "hqshm/node/core.py",
    "hqshm/node/batchsystem.py",
]

# A module that mixes ids up on purpose, across two packages: mypy must refuse it.
MIX_UP = '''
from hqshm.cluster.ids import JobId
from hqshm.server.workers import WorkerBook


def hostname_of_job(book: WorkerBook, job: JobId) -> str:
    return book.hostname(job)
'''


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The installed package's shape, in links to the repository."""
    package = tmp_path / "hqshm"
    package.mkdir()
    for entry in (REPO / "hqshm").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "cluster").symlink_to(REPO / "cluster")
    return tmp_path


def mypy(tree: Path, files: list[str]) -> tuple[int, str]:
    """mypy's exit status and its report, paths as they are in the repository."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(REPO / ".mypy_cache"), "--no-error-summary", *files],
        cwd=tree, capture_output=True, text=True, timeout=300,
    )
    report = re.sub(r"^hqshm/cluster/", "cluster/", result.stdout + result.stderr, flags=re.M)
    return result.returncode, report


def in_tree(path: str) -> str:
    return re.sub(r"^cluster/", "hqshm/cluster/", path)


def test_the_cores_type_check(tree: Path) -> None:
    status, report = mypy(tree, [in_tree(path) for path in CORES])
    assert status == 0, f"mypy found errors in the cores:\n{report}"


def test_an_id_mix_up_is_a_type_error(tree: Path) -> None:
    (tree / "hqshm" / "mixup.py").write_text(MIX_UP)
    status, report = mypy(tree, ["hqshm/mixup.py"])
    assert status == 1, report
    assert re.fullmatch(
        r'hqshm/mixup\.py:\d+: error: Argument 1 to "hostname" of "WorkerBook" has '
        r'incompatible type "JobId"; expected "WorkerId"  \[arg-type\]\n', report
    ), report
