"""`hq task explain`: whether a waiting task could run on each worker, and why not.

Pure: reads the core's workers and the job, writes nothing. Per worker and per resource
variant it checks what spec/jobs.md §14 lists: the remaining lifetime against the time request,
the worker group's size against a multi-node request, and each requested resource's total on
the worker against the requested amount.
"""

from __future__ import annotations

from hqshm.cluster.core import Core
from hqshm.cluster.ids import TaskId
from hqshm.errors import UserError
from hqshm.link.details import ExplainVariant, ExplainWorker, TaskExplainResponse
from hqshm.model.taskstates import TaskState
from hqshm.server.jobs import Job

# Amount used for `all` in explanations: HQ shows the whole pool is needed, any amount > 0 fits.
ALL = 0


def explain_task(core: Core, job: Job, task_id: TaskId, now: float) -> TaskExplainResponse:
    found = job.locate(task_id)
    if found is None:
        raise UserError("Task not found")
    submit, row = found
    if TaskState(int(submit.table.state[row])) not in (TaskState.WAITING, TaskState.RUNNING):
        raise UserError("Explain command works only for tasks in WAITING or RUNNING state")
    deps = submit.deps.get(task_id, ())
    waiting = 0
    for dep in deps:
        located = job.locate(dep)
        if located is None or TaskState(int(located[0].table.state[located[1]])) \
                != TaskState.FINISHED:
            waiting += 1
    # `--after` prerequisites hold the whole group; the core counts the unfinished ones.
    group = core.groups.get(submit.gid)
    waiting += group.barrier if group is not None else 0
    variants = submit.template.request.variants
    group_sizes: dict[str, int] = {}
    for worker in core.workers.values():
        group_sizes[worker.group] = group_sizes.get(worker.group, 0) + 1
    workers = []
    for wid in sorted(core.workers):
        worker = core.workers[wid]
        remaining = worker.remaining(now)
        explained = []
        for variant in variants:
            items: list[tuple[str, str, int, int]] = []
            runnable = True
            if variant.min_time > 0:
                items.append(("Time", "time", -1 if remaining is None else int(remaining * 1e3),
                              int(variant.min_time * 1e3)))
                runnable &= remaining is None or remaining >= variant.min_time
            if variant.n_nodes:
                size = group_sizes.get(worker.group, 0)
                items.append(("WorkerGroup", "nodes", size, variant.n_nodes))
                runnable &= size >= variant.n_nodes
            else:
                for entry in variant.entries:
                    total = worker.totals.get(entry.name, 0)
                    amount = ALL if entry.all else entry.amount
                    items.append(("Resources", entry.name, total, amount))
                    runnable &= total > 0 if entry.all else total >= entry.amount
            explained.append(ExplainVariant(tuple(items), runnable))
        workers.append(ExplainWorker(wid, tuple(explained), remaining,
                                     group_sizes.get(worker.group, 0)))
    return TaskExplainResponse(
        job_id=job.id,
        task_id=task_id,
        n_deps=len(deps) + submit.after,
        n_waiting_deps=waiting,
        workers=tuple(workers),
        min_times=tuple(v.min_time for v in variants),
        n_nodes=tuple(v.n_nodes for v in variants),
    )
