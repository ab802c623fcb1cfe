"""What the Python API shows its user: FailedJobsException's text and visualize_job's DOT."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from hqshm.api.errors import FailedJobsException, FailedTaskContext, MissingPackageException
from hqshm.api.job import Job
from hqshm.api.visualization import visualize_job


def foo_bar_baz() -> None:
    pass


def test_failed_jobs_text_names_tasks_by_label_and_lists_their_files() -> None:
    job = Job()
    job.program(["ok"])
    job.function(foo_bar_baz)
    failed = {
        1: {1: FailedTaskContext(error="Boom\n", cwd="/w", stdout="/w/1.stdout", stderr=None)},
        2: {0: FailedTaskContext(error="Program terminated with exit code 1.", cwd=None,
                                 stdout=None, stderr=None)},
    }
    text = str(FailedJobsException(failed, {1: job}))
    assert text == (
        "The following tasks of job `1` have failed:\n"
        "Task foo_bar_baz/1 (id=1):\nBoom\n"
        "You can find more information here:\n"
        "Working directory: /w\n"
        "Stdout: /w/1.stdout\n"
        "\n"
        "The following tasks of job `2` have failed:\n"
        "Task 0 (id=0):\nProgram terminated with exit code 1."
    )


def test_failed_jobs_text_lists_five_tasks_of_a_job() -> None:
    job = Job()
    for _ in range(8):
        job.program(["x"])
    context = FailedTaskContext(error="e", cwd=None, stdout=None, stderr=None)
    exception = FailedJobsException({1: dict.fromkeys(range(8), context)}, {1: job})
    text = str(exception)
    assert [f"(id={i})" in text for i in range(8)] == [True] * 5 + [False] * 3
    assert text.endswith("... and 3 more failed task(s)")
    assert exception.failed_tasks[1][7] is context and exception.job_map == {1: job}


def diamond() -> Job:
    job = Job()
    a = job.program(["a"], name="a")
    b1 = job.program(["b"], name="b1", deps=[a])
    b2 = job.program(["b"], name="b2", deps=[a])
    c1 = job.program(["c"], name="c1", deps=[b1])
    c2 = job.program(["c"], name="c2", deps=[b2])
    job.program(["d"], name="d", deps=[c1, c2])
    return job


def test_visualize_job_writes_hqs_dot(tmp_path: Path) -> None:
    pytest.importorskip("pydot")
    visualize_job(diamond(), tmp_path / "graph.dot")
    assert (tmp_path / "graph.dot").read_text() == (
        "digraph job {\na;\nb1;\na -> b1;\nb2;\na -> b2;\nc1;\nb1 -> c1;\nc2;\nb2 -> c2;\n"
        "d;\nc1 -> d;\nc2 -> d;\n}\n"
    )


def test_visualize_job_adds_dependencies_first(tmp_path: Path) -> None:
    """A task whose dependency list was edited to name a later task still comes after it."""
    pytest.importorskip("pydot")
    job = Job()
    a = job.program(["a"], name="a")
    b = job.program(["b"], name="b")
    a.dependencies.append(b)
    visualize_job(job, tmp_path / "graph.dot")
    assert (tmp_path / "graph.dot").read_text() == "digraph job {\nb;\na;\nb -> a;\n}\n"


def test_visualize_job_without_pydot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pydot(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pydot":
            raise ImportError("No module named 'pydot'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydot)
    with pytest.raises(MissingPackageException) as info:
        visualize_job(diamond(), tmp_path / "graph.dot")
    assert str(info.value) == (
        "Unable to import `pydot`. You have to install the `pydot` package.")
