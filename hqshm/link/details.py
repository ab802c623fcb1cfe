"""Detailed views of the client link: jobs with their submits, tasks, workers, explanations.

Apart from hqshm/link/responses.py so that the commands that need none of them (`hq submit`,
`hq job list`) do not import the submission and worker models they carry.
"""

from __future__ import annotations

from typing import ClassVar

from hqshm.cluster.frozen import frozen
from hqshm.link.requests import CLIENT_LINK
from hqshm.link.responses import JobSummary
from hqshm.model.selection import Ranges
from hqshm.model.submission import TaskTemplate
from hqshm.model.workerconfig import WorkerConfiguration


@frozen
class SubmitView:
    """One submit of a job as `job info` shows it (paths after stage-1 resolution)."""

    template: TaskTemplate
    stdout: str | None  # resolved path text, None for none, "<Stream>" when streamed
    stderr: str | None
    cwd: str
    ids: Ranges
    is_array: bool = True


@frozen
class TaskView:
    id: int
    state: str
    instance: int
    worker_ids: tuple[int, ...]
    hostnames: tuple[str, ...]
    started_at: float | None
    ended_at: float | None
    error: str
    cwd: str | None = None  # fully resolved once started
    stdout: str | None = None
    stderr: str | None = None
    stdout_kind: str = "file"
    stderr_kind: str = "file"
    submit_index: int = 0
    deps: tuple[int, ...] = ()


@frozen
class JobDetail:
    summary: JobSummary
    max_fails: int | None
    submitted_at: float
    finished_at: float | None
    submit_dir: str
    submits: tuple[SubmitView, ...]
    task_ids: Ranges
    workers: tuple[str, ...]  # hostnames of workers that ran tasks, by worker id
    n_workers: int
    failed: tuple[TaskView, ...]  # first failed tasks (CLI shows 5)
    n_failed: int
    tasks: tuple[TaskView, ...] = ()  # all tasks, only when asked (JSON)
    batches: int = 1  # requests that added tasks (a job file is one, with several submits)


@CLIENT_LINK.message
@frozen
class JobInfoResponse:
    TAG: ClassVar[int] = 105
    jobs: tuple[JobDetail, ...]
    missing: tuple[int, ...]


@CLIENT_LINK.message
@frozen
class TaskListResponse:
    TAG: ClassVar[int] = 109
    jobs: tuple[tuple[int, tuple[TaskView, ...]], ...]
    missing_jobs: tuple[int, ...] = ()


@CLIENT_LINK.message
@frozen
class TaskInfoResponse:
    TAG: ClassVar[int] = 110
    job_id: int | None  # None: the job was not found
    tasks: tuple[TaskView, ...]
    submits: tuple[SubmitView, ...]
    missing_tasks: tuple[int, ...] = ()


@frozen
class WorkerView:
    id: int
    state: str
    config: WorkerConfiguration
    started_at: float
    ended_at: float | None
    assigned_tasks: int = 0
    running_tasks: int = 0
    last_task: tuple[int, int, float] | None = None  # job, task, time
    multinode: str = ""  # "main" | "secondary" while it holds a multi-node task


@CLIENT_LINK.message
@frozen
class WorkerListResponse:
    TAG: ClassVar[int] = 111
    workers: tuple[WorkerView, ...]
    missing: tuple[int, ...] = ()


@frozen
class ExplainVariant:
    """Why one resource variant of a task can or cannot run on one worker."""

    items: tuple[tuple[str, str, int, int], ...]  # (kind, name, worker amount, request amount)
    runnable: bool


@frozen
class ExplainWorker:
    worker_id: int
    variants: tuple[ExplainVariant, ...]
    remaining_time: float | None = None
    group_size: int = 0


@CLIENT_LINK.message
@frozen
class TaskExplainResponse:
    TAG: ClassVar[int] = 117
    job_id: int
    task_id: int
    n_deps: int
    n_waiting_deps: int
    workers: tuple[ExplainWorker, ...]
    min_times: tuple[float, ...] = ()  # per variant
    n_nodes: tuple[int, ...] = ()  # per variant
