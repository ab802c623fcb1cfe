"""``visualize_job``: a job's task graph as a DOT file, drawn by pydot (optional)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hqshm.api.errors import MissingPackageException
from hqshm.api.job import Job

if TYPE_CHECKING:
    from hqshm.api.tasks import Task


def visualize_job(job: Job, path: str | Path) -> None:
    """Write the graph to ``path``: tasks by label in task order, each after the tasks it
    depends on (depth first), with an edge from each dependency to its dependant."""
    try:
        import pydot
    except ImportError:
        raise MissingPackageException(package="pydot") from None

    graph = pydot.Dot("job", graph_type="digraph")
    added: set[int] = set()

    def add(task: Task) -> None:
        if task.task_id in added:
            return
        added.add(task.task_id)
        for dep in task.dependencies:
            add(dep)
        graph.add_node(pydot.Node(task.label))
        for dep in task.dependencies:
            graph.add_edge(pydot.Edge(dep.label, task.label))

    for task in job.tasks:
        add(task)
    graph.write(str(path), format="raw")
