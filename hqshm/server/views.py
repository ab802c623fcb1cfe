"""Jobs and tasks as clients see them: the read side of the job book.

Pure functions of the book's state; nothing here changes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hqshm.cluster.firstuse import np
from hqshm.cluster.ids import TaskId, WorkerId
from hqshm.link.details import JobDetail, SubmitView, TaskView
from hqshm.model import placeholders
from hqshm.model.program import Stdio
from hqshm.model.selection import Ranges
from hqshm.model.taskstates import TaskState
from hqshm.server.jobbook import JobBook
from hqshm.server.jobs import Job, Submit, compress_ranges

MAX_FAILED_SHOWN = 5
JOB_STATES = ("RUNNING", "WAITING", "FINISHED", "FAILED", "ABORTED", "CANCELED")
_STATE_NAMES = {state.value: state.name for state in TaskState}


def task_view(book: JobBook, job: Job, submit: Submit, row: int, index: int) -> TaskView:
    return task_views(book, job, submit, [row], index)[0]


def task_views(book: JobBook, job: Job, submit: Submit, rows: Sequence[int],
               index: int) -> list[TaskView]:
    """Views of these rows of one submit. The columns are read once for all of them: element
    by element, numpy's scalars and the enum took most of a 100,000-task list's time."""
    table = submit.table
    at = np.asarray(rows, dtype=np.intp)
    states, workers = table.state[at].tolist(), table.worker[at].tolist()
    started_at, ended_at = table.started[at].tolist(), table.ended[at].tolist()
    ids, instances = table.ids[at].tolist(), table.instance[at].tolist()
    program = submit.program
    templates = placeholders.SubmitPaths(program.cwd, _template_path(program.stdout),
                                         _template_path(program.stderr))
    hostnames: dict[WorkerId, str] = {}
    views = []
    for i, row in enumerate(at.tolist()):
        wid = WorkerId(workers[i])
        started, ended = started_at[i], ended_at[i]
        task_id = TaskId(ids[i])
        nodes = submit.nodes.get(row) or ((wid,) if wid else ())
        cwd = stdout = stderr = None
        if not math.isnan(started) or wid:
            paths = placeholders.resolve_at_start(
                templates, task_id=task_id, instance_id=instances[i], job_id=job.id,
                submit_dir=job.submit_dir, server_uid=book.server_uid)
            cwd, stdout, stderr = paths.cwd, paths.stdout, paths.stderr
        for w in nodes:
            if w not in hostnames:
                hostnames[w] = book.workers.hostname(w)
        state = states[i]
        views.append(TaskView(
            id=task_id,
            state=_STATE_NAMES[state],
            instance=instances[i],
            worker_ids=nodes,
            hostnames=tuple(hostnames[w] for w in nodes),
            started_at=None if math.isnan(started) else started,
            ended_at=None if math.isnan(ended) or state == TaskState.WAITING else ended,
            error=table.errors.get(row, ""),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdout_kind=program.stdout.kind,
            stderr_kind=program.stderr.kind,
            submit_index=index,
            deps=submit.deps.get(task_id, ()),
        ))
    return views


def submit_view(submit: Submit) -> SubmitView:
    program = submit.program
    return SubmitView(
        template=submit.template,
        stdout=_display_path(program.stdout),
        stderr=_display_path(program.stderr),
        cwd=program.cwd,
        ids=compress_ranges(submit.table.ids),
        is_array=submit.is_array,
    )


def detail(book: JobBook, job: Job, include_tasks: bool) -> JobDetail:
    failed: list[TaskView] = []
    n_failed = 0
    tasks: list[TaskView] = []
    for index, submit in enumerate(job.submits):
        table = submit.table
        rows = np.nonzero(table.state == TaskState.FAILED)[0]
        n_failed += len(rows)
        failed.extend(task_views(book, job, submit,
                                 rows[: max(0, MAX_FAILED_SHOWN - len(failed))].tolist(), index))
        if include_tasks:
            tasks.extend(task_views(book, job, submit, range(len(table)), index))
    all_ids = np.sort(np.concatenate([s.table.ids for s in job.submits])) if job.submits \
        else np.zeros(0, dtype=np.uint32)
    worker_ids = sorted(job.worker_ids)
    return JobDetail(
        summary=job.summary(),
        max_fails=job.max_fails,
        submitted_at=job.submitted_at,
        finished_at=job.finished_at if job.completed else None,
        submit_dir=job.submit_dir,
        submits=tuple(submit_view(s) for s in job.submits),
        task_ids=compress_ranges(all_ids),
        workers=tuple(book.workers.hostname(w) for w in worker_ids[:2]),
        n_workers=len(worker_ids),
        failed=tuple(failed),
        n_failed=n_failed,
        tasks=tuple(tasks),
        batches=len({s.batch for s in job.submits}),
    )


def summary(book: JobBook) -> dict[str, int]:
    """How many jobs are in each state (`hq job summary`)."""
    counts = dict.fromkeys(JOB_STATES, 0)
    for job in book.jobs.everything():
        state = job.state
        counts[state] = counts.get(state, 0) + 1
    return counts


def task_ids(job: Job, states: set[TaskState] | None) -> Ranges:
    parts = []
    for submit in job.submits:
        table = submit.table
        rows = np.arange(len(table)) if states is None else table.rows_in_states(states)
        parts.append(table.ids[rows])
    ids = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint32)
    return compress_ranges(ids)


def _template_path(stdio: Stdio) -> str | None:
    return stdio.path if stdio.kind == Stdio.FILE else None


def _display_path(stdio: Stdio) -> str | None:
    if stdio.kind == Stdio.FILE:
        return stdio.path
    if stdio.kind == Stdio.STREAM:
        return "<Stream>"
    return None
