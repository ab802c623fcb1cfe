"""What a submit request becomes: checked task ids, resolved programs, core groups; and back.

Pure: every check that can refuse a request runs here, before the job book changes anything,
and what comes out is the ``NewSubmit`` records the book applies. ``resubmit`` goes the other
way, from a job's tasks to a request that runs them again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hqshm.cluster.core import Group
from hqshm.cluster.firstuse import np
from hqshm.cluster.frozen import frozen, replace
from hqshm.cluster.ids import GroupId, JobId, TaskId, TaskKey, task_key, task_keys
from hqshm.errors import UserError
from hqshm.model import placeholders
from hqshm.model.program import ProgramSpec, Stdio
from hqshm.model.submission import (
    ArraySubmission,
    GraphSubmission,
    GraphTask,
    StdioDesc,
    TaskRef,
    TaskTemplate,
    invalid_dependencies,
    never_ready,
    template_key,
)
from hqshm.model.taskstates import TaskState
from hqshm.server.events import NewSubmit
from hqshm.server.jobs import (
    Job,
    JobNotFound,
    Submit,
    TaskDefinedTwice,
    TaskExists,
    compress_ranges,
    expand_ranges,
)

UNFINISHED = (TaskState.WAITING, TaskState.RUNNING)


@frozen
class ArrayPlan:
    """An array request, checked: its submit and what its `--after` tasks say."""

    submit: NewSubmit
    after: list[TaskKey]  # keys of the prerequisites that have not finished yet
    dead: bool  # a prerequisite failed, was canceled or aborted: the tasks can never run


@frozen
class GraphPlan:
    """A job file's tasks, checked: one submit per template, and what their deps say."""

    submits: list[NewSubmit]
    deps: dict[TaskKey, list[TaskKey]]  # key -> unfinished prerequisite keys
    dead: list[TaskId]  # task ids with a prerequisite that failed, was canceled or aborted


def plan_array(find_job: Callable[[JobId], Job | None], job: Job, req: ArraySubmission, gid: GroupId,
               server_uid: str) -> ArrayPlan:
    """An array-style submit into ``job`` (new or open): one template, many ids."""
    ids, entries = _task_ids(job, req)
    if len(ids) == 0:
        raise UserError("The submission contains no tasks.")
    after, dead, n_after = _prerequisites(find_job, job, req.after)
    program = _program(job.id, req.template, req.submit_dir, req.stream_dir, server_uid)
    submit = NewSubmit(gid, req.template, program, ids, entries, gid, True, {}, n_after,
                       tuple(after))
    return ArrayPlan(submit, after, dead)


def plan_graph(job: Job, req: GraphSubmission, first_gid: GroupId,
               server_uid: str) -> GraphPlan:
    """Individual tasks with dependencies (job files' [[task]]): one submit per template."""
    ids = [t.id for t in req.tasks]
    if not ids:
        raise UserError("No tasks defined")
    seen: set[TaskId] = set()
    for task_id in ids:
        if task_id in seen:
            raise TaskDefinedTwice(task_id=task_id)
        seen.add(task_id)
    # The job's own ids are searched, not gathered in a set: an open job may hold millions.
    found = job.index.find(np.array(ids, dtype=np.uint32))[0]
    if len(found):
        raise TaskExists(task_id=ids[int(found[0])], job_id=job.id)
    for task in req.tasks:
        for dep in task.deps:
            if dep not in seen and job.index.find_one(dep) is None:
                raise UserError(f"Invalid dependency on {dep}")
    # Prerequisites outside this submit were checked above; only those inside can form a cycle.
    inside = {t.id: tuple(d for d in t.deps if d in seen) for t in req.tasks}
    if stuck := never_ready(inside):
        raise UserError(invalid_dependencies(min(stuck)))
    by_template: dict[bytes, list[GraphTask]] = {}
    known: dict[int, tuple[TaskTemplate, bytes]] = {}
    for task in req.tasks:
        by_template.setdefault(_template_key(task.template, known), []).append(task)
    submits = []
    for gid, tasks in enumerate(by_template.values(), start=first_gid):
        tasks.sort(key=lambda t: t.id)
        group_ids = np.array([t.id for t in tasks], dtype=np.uint32)
        entries = [t.entry or b"" for t in tasks] if any(t.entry is not None
                                                         for t in tasks) else None
        template = tasks[0].template
        program = _program(job.id, template, req.submit_dir, req.stream_dir, server_uid)
        submits.append(NewSubmit(GroupId(gid), template, program, group_ids, entries, first_gid,
                                 False, {t.id: t.deps for t in tasks if t.deps}, 0))
    dead: set[TaskId] = set()
    deps: dict[TaskKey, list[TaskKey]] = {}
    for task in req.tasks:
        unfinished = []
        for dep in task.deps:
            if dep in seen:
                unfinished.append(task_key(job.id, dep))
                continue
            located = job.locate(dep)
            assert located is not None
            state = TaskState(int(located[0].table.state[located[1]]))
            if state in UNFINISHED:
                unfinished.append(task_key(job.id, dep))
            elif state != TaskState.FINISHED:
                dead.add(task.id)
        if unfinished:
            deps[task_key(job.id, task.id)] = unfinished
    return GraphPlan(submits, deps, sorted(dead))


def core_group(job_id: JobId, submit: Submit) -> Group:
    """The core's side of a submit: its keys, request and program body."""
    template = submit.template
    keys = task_keys(job_id, submit.table.ids)
    return Group(
        gid=submit.gid,
        job_id=job_id,
        request=template.request,
        priority=template.priority,
        body=submit.program.encode(),
        keys=keys,
        crash_limit=template.crash_limit,
        retries=template.retries,
        entries=list(submit.entries) if submit.entries is not None else None,
    )


def _template_key(template: TaskTemplate, known: dict[int, tuple[TaskTemplate, bytes]]) -> bytes:
    """Tasks with equal templates share a core group (and are sent to nodes once). A packed
    submission's tasks share template objects: each is keyed once (``known``, by id)."""
    kept = known.get(id(template))
    if kept is None:
        kept = known[id(template)] = (template, template_key(template))
    return kept[1]


def _prerequisites(find_job: Callable[[JobId], Job | None], job: Job, refs: Sequence[TaskRef]
                   ) -> tuple[list[TaskKey], bool, int]:
    """Unfinished keys of `--after` tasks, whether one of them already failed, and how
    many tasks they name."""
    unfinished: list[TaskKey] = []
    dead = False
    named = 0
    for ref in refs:
        target = job if ref.job_id == job.id else find_job(ref.job_id)
        if target is None:
            raise JobNotFound(job_id=ref.job_id)
        wanted = expand_ranges(ref.tasks) if ref.tasks is not None else None
        for submit in target.submits:
            table = submit.table
            rows = np.arange(len(table)) if wanted is None else \
                np.nonzero(np.isin(table.ids, wanted))[0]
            states = table.state[rows]
            named += len(rows)
            dead |= bool(np.isin(states, (TaskState.FAILED, TaskState.CANCELED,
                                          TaskState.ABORTED)).any())
            pending = rows[np.isin(states, UNFINISHED)]
            unfinished.extend(task_keys(target.id, table.ids[pending]).tolist())
        if wanted is not None:
            known = np.concatenate([s.table.ids for s in target.submits]) \
                if target.submits else np.zeros(0, dtype=np.uint32)
            missing = np.setdiff1d(wanted, known)
            if len(missing):
                raise UserError(f"Invalid dependency on task {int(missing[0])} of job "
                                f"{target.id}: the job has no such task")
    return unfinished, dead, named


def _task_ids(job: Job, req: ArraySubmission) -> tuple[np.ndarray, list[bytes] | None]:
    explicit = expand_ranges(req.ids) if req.ids else None
    if explicit is not None and len(explicit) > 1:
        order = np.argsort(explicit, kind="stable")
        explicit = explicit[order]
        dup = np.nonzero(np.diff(explicit.astype(np.int64)) == 0)[0]
        if len(dup):
            raise TaskDefinedTwice(task_id=int(explicit[dup[0]]))
    last = job.index.last_id()
    first_free = 0 if last is None else last + 1
    entries: list[bytes] | None = None
    if req.entries is not None and req.entries_by_position:
        given = expand_ranges(req.ids)
        if explicit is None or len(given) != len(req.entries):
            raise UserError("Items 'ids' and 'entries' does not match")
        order = np.argsort(given, kind="stable")
        ids = given[order]
        entries = [req.entries[i] for i in order.tolist()]
    elif req.entries is not None:
        n = len(req.entries)
        if explicit is not None:
            ids = explicit[explicit < n]
            entries = [req.entries[i] for i in ids.tolist()]
            if job.submits:
                ids = ids + np.uint32(first_free)
        else:
            ids = np.arange(first_free, first_free + n, dtype=np.uint32)
            entries = list(req.entries)
    elif explicit is not None:
        ids = explicit
    else:
        ids = np.array([first_free], dtype=np.uint32)
    # One search, not one per submit (an open job may have thousands); named as before: the
    # smallest clashing id of the earliest submit.
    found, submit, _rows = job.index.find(ids)
    if len(found):
        raise TaskExists(task_id=int(ids[found[np.argmin(submit)]]), job_id=job.id)
    return ids, entries


def _program(job_id: JobId, t: TaskTemplate, submit_dir: str, stream_dir: str | None,
             server_uid: str) -> ProgramSpec:
    paths = placeholders.resolve_at_submit(
        t.cwd,
        _stdio_path(t.stdout),
        _stdio_path(t.stderr),
        stream_dir,
        job_id=job_id,
        submit_dir=submit_dir,
        server_uid=server_uid,
    )
    return ProgramSpec(
        args=t.args,
        env=t.env,
        cwd=paths.cwd,
        stdout=_stdio(t.stdout, paths.stdout),
        stderr=_stdio(t.stderr, paths.stderr),
        job_id=job_id,
        submit_dir=submit_dir,
        server_uid=server_uid,
        stdin=t.stdin,
        task_dir=t.task_dir,
        pin=t.pin,
        time_limit=t.time_limit,
        stream_dir=paths.stream or "",
    )


def _stdio_path(desc: StdioDesc) -> str | None:
    return desc.path if desc.kind == Stdio.FILE else None


def _stdio(desc: StdioDesc, resolved: str | None) -> Stdio:
    if desc.kind == Stdio.FILE:
        return Stdio(Stdio.FILE, resolved or desc.path, desc.rm_if_finished)
    return Stdio(desc.kind, "", desc.rm_if_finished)


def resubmit(job: Job, states: set[TaskState], submit_dir: str
             ) -> ArraySubmission | GraphSubmission:
    """The tasks of a job in these states, as a new submit of the same programs.

    Array submits keep their template and ids; job-file tasks keep their own template and
    the dependencies among the tasks that are submitted again.
    """
    arrays: list[ArraySubmission] = []
    graph: list[GraphTask] = []
    for submit in job.submits:
        rows = submit.table.rows_in_states(states)
        if not len(rows):
            continue
        ids = submit.table.ids[rows]
        entries = None if submit.entries is None else tuple(
            submit.entries[r] for r in rows.tolist())
        if submit.is_array:
            arrays.append(ArraySubmission(job.name, job.max_fails, submit_dir,
                                          submit.template, compress_ranges(ids), entries))
        else:
            for i, task_id in enumerate(ids.tolist()):
                graph.append(GraphTask(task_id, submit.template, submit.deps.get(task_id, ()),
                                       entries[i] if entries else None))
    if not arrays and not graph:
        raise UserError(f"Job {job.id} has no tasks in the given states")
    if graph or len(arrays) > 1:
        chosen = {t.id for t in graph}
        for request in arrays:
            rows = expand_ranges(request.ids).tolist()
            chosen.update(rows)
            for i, task_id in enumerate(rows):
                graph.append(GraphTask(task_id, request.template, (),
                                       request.entries[i] if request.entries else None))
        graph = [replace(t, deps=tuple(d for d in t.deps if d in chosen))
                 for t in graph]
        return GraphSubmission(job.name, job.max_fails, submit_dir, tuple(graph))
    request = arrays[0]
    if request.entries is not None:
        # The rows' entries, in the order of their (sorted) ids: pair them by position.
        return replace(request, entries_by_position=True)
    return request
