"""Sending a submission: every client (`hq submit`, job files, the API) submits through here.

The server refuses any request with more than ``limits.MAX_REQUEST_VALUES`` values (arrays and
maps together; cluster/codec.py), which bounds what a forged request costs it to decode. Large
submissions are shaped to stay below that: ``--each-line`` entries travel packed as one bytes
field (SubmitRequest.entries), and a job file of many tasks goes in parts into a job opened for
it, each part's dependencies on earlier parts, and the job closed at the end. A part refused
midway cancels the job, so no half-submitted job file is left running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from hqshm.cluster.frozen import replace
from hqshm.cluster.ids import JobId
from hqshm.errors import HqError
from hqshm.link.client import ClientConnection
from hqshm.link.requests import CancelJobsRequest, CloseJobsRequest, OpenJobRequest, Selector
from hqshm.link.responses import CancelJobsResponse, CloseJobsResponse, SubmitResponse
from hqshm.link.submitrequests import SubmitGraphRequest, SubmitRequest
from hqshm.model import limits
from hqshm.model.submission import ArraySubmission, GraphSubmission, GraphTask, template_key

# Values one part of a job file may hold, by ``_values``' estimate: well under the server's
# budget, so that an estimate off by half still fits, and each part decodes in a few ms.
PART_VALUES = limits.MAX_REQUEST_VALUES // 4
PACKED_TASK_VALUES = 6  # a packed task: its array, id, template index, deps' array, entry


def submit(conn: ClientConnection, submission: ArraySubmission | GraphSubmission,
           timeout: float | None = None) -> JobId:
    """Submit; returns the job's id."""
    if isinstance(submission, ArraySubmission):
        return JobId(conn.request(SubmitRequest.of(submission), SubmitResponse,
                                  timeout=timeout).job_id)
    by_template: dict[int, bytes] = {}  # tasks of the API's builds share template objects
    keys = {}
    for task in submission.tasks:
        key = by_template.get(id(task.template))
        if key is None:
            key = by_template[id(task.template)] = template_key(task.template)
        keys[id(task)] = key
    parts = list(graph_parts(submission.tasks, keys=keys))
    if len(parts) == 1:
        return JobId(conn.request(SubmitGraphRequest(_packed(submission, keys)),
                                  SubmitResponse, timeout=timeout).job_id)
    return _submit_in_parts(conn, submission, parts, timeout, keys)


def _packed(submission: GraphSubmission, keys: dict[int, bytes]) -> GraphSubmission:
    """Each distinct template once (``GraphSubmission.packed_form``)."""
    return submission.packed_form([keys[id(task)] for task in submission.tasks])


def _submit_in_parts(conn: ClientConnection, submission: GraphSubmission,
                     parts: list[tuple[GraphTask, ...]], timeout: float | None,
                     keys: dict[int, bytes]) -> JobId:
    job_id = submission.job_id
    opened = job_id is None
    if job_id is None:
        job_id = JobId(conn.request(OpenJobRequest(submission.name, submission.max_fails),
                                    SubmitResponse, timeout=timeout).job_id)
    selector = Selector("ids", ((job_id, job_id, 1),))
    try:
        for part in parts:
            request = _packed(replace(submission, tasks=part, job_id=job_id), keys)
            conn.request(SubmitGraphRequest(request), SubmitResponse, timeout=timeout)
    except BaseException:  # a refused part, a lost server, Ctrl-C
        if opened:  # the parts sent so far must not run as if they were the whole file
            with contextlib.suppress(HqError):  # the first error is the one to report
                conn.request(CancelJobsRequest(selector, "the rest of the job file was refused"),
                             CancelJobsResponse, timeout=timeout)
                conn.request(CloseJobsRequest(selector), CloseJobsResponse, timeout=timeout)
        raise
    if opened:
        conn.request(CloseJobsRequest(selector), CloseJobsResponse, timeout=timeout)
    return job_id


def graph_parts(tasks: Sequence[GraphTask], budget: int = PART_VALUES,
                keys: Mapping[int, bytes] | None = None) -> Iterator[tuple[GraphTask, ...]]:
    """The tasks in parts of at most ``budget`` estimated values, every task after the tasks
    it depends on (an earlier part or its own), in the file's order where deps allow.
    With ``keys`` (task's id() -> its template's key) the parts travel packed: a template
    costs its values once a part, a task a few more."""
    part: list[GraphTask] = []
    used = 0
    seen: set[bytes] = set()
    for task in _prerequisites_first(tasks):
        if keys is None:
            cost = _values(task)
        else:
            key = keys[id(task)]
            cost = PACKED_TASK_VALUES + len(task.deps)
            if key not in seen:
                cost += _values(task)
        if part and used + cost > budget:
            yield tuple(part)
            part, used = [], 0
            seen = set()
            if keys is not None:
                cost = PACKED_TASK_VALUES + len(task.deps) + _values(task)
        if keys is not None:
            seen.add(keys[id(task)])
        part.append(task)
        used += cost
    if part:
        yield tuple(part)


def _values(task: GraphTask) -> int:
    """An upper estimate of the values a task's encoding holds (about 50 for a small one)."""
    t = task.template
    variants = len(t.request.variants)
    entries = sum(len(v.entries) for v in t.request.variants)
    return 60 + len(t.args) + 2 * len(t.env) + len(task.deps) + 8 * variants + 4 * entries


def _prerequisites_first(tasks: Sequence[GraphTask]) -> list[GraphTask]:
    """Kahn's order, stable: a task as soon as its dependencies in ``tasks`` are placed.
    Dependencies outside ``tasks`` (none in a checked job file) do not hold anything back;
    tasks in a cycle (refused before this) come last, as they are."""
    by_id = {task.id: task for task in tasks}
    waiting = {task.id: sum(1 for d in set(task.deps) if d in by_id) for task in tasks}
    dependants: dict[int, list[int]] = {}
    for task in tasks:
        for dep in set(task.deps):
            if dep in by_id:
                dependants.setdefault(dep, []).append(task.id)
    order: list[GraphTask] = []
    placed: set[int] = set()
    for task in tasks:
        stack = [task.id] if waiting[task.id] == 0 and task.id not in placed else []
        while stack:
            current = stack.pop()
            if current in placed:
                continue
            placed.add(current)
            order.append(by_id[current])
            for dependant in reversed(dependants.get(current, ())):
                waiting[dependant] -= 1
                if waiting[dependant] == 0:
                    stack.append(dependant)
    order += [task for task in tasks if task.id not in placed]
    return order
