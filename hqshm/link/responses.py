"""Server -> client responses of the client link, and the views they carry.

Views (``JobSummary``, ``TaskView``, ``WorkerView``...) are what the server shows of its state:
plain records, built by the server and rendered by the client, never live objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hqshm.link.requests import CLIENT_LINK
from hqshm.model.submission import Ranges, TaskTemplate
from hqshm.model.workerconfig import WorkerConfiguration


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ErrorResponse:
    TAG: ClassVar[int] = 100
    message: str


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ServerInfo:
    TAG: ClassVar[int] = 101
    server_uid: str
    client_host: str
    client_port: int
    worker_host: str
    worker_port: int
    version: str
    pid: int
    start_date: float
    journal_path: str | None = None


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class Ack:
    TAG: ClassVar[int] = 102


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class SubmitResponse:
    TAG: ClassVar[int] = 103
    job_id: int


@dataclass(frozen=True, slots=True)
class JobSummary:
    id: int
    name: str
    is_open: bool
    cancel_reason: str | None
    task_count: int
    counts: tuple[int, int, int, int, int, int]  # waiting running finished failed canceled aborted


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobListResponse:
    TAG: ClassVar[int] = 104
    jobs: tuple[JobSummary, ...]
    total: int  # all jobs the server knows, for the "use --all" footer


@dataclass(frozen=True, slots=True)
class SubmitView:
    """One submit of a job as `job info` shows it (paths after stage-1 resolution)."""

    template: TaskTemplate
    stdout: str | None  # resolved path text, None for none, "<Stream>" when streamed
    stderr: str | None
    cwd: str
    ids: Ranges
    is_array: bool = True


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
@dataclass(frozen=True, slots=True)
class JobInfoResponse:
    TAG: ClassVar[int] = 105
    jobs: tuple[JobDetail, ...]
    missing: tuple[int, ...]


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class CancelJobsResponse:
    TAG: ClassVar[int] = 106
    canceled: tuple[tuple[int, int, int], ...]  # job id, tasks canceled, tasks already finished
    already_finished: tuple[int, ...]
    missing: tuple[int, ...]


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class WaitJobsResponse:
    TAG: ClassVar[int] = 107
    jobs: tuple[JobSummary, ...]
    missing: tuple[int, ...] = ()


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobProgressResponse:
    TAG: ClassVar[int] = 108
    jobs: tuple[JobSummary, ...]


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskListResponse:
    TAG: ClassVar[int] = 109
    jobs: tuple[tuple[int, tuple[TaskView, ...]], ...]
    missing_jobs: tuple[int, ...] = ()


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskInfoResponse:
    TAG: ClassVar[int] = 110
    job_id: int | None  # None: the job was not found
    tasks: tuple[TaskView, ...]
    submits: tuple[SubmitView, ...]
    missing_tasks: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
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
@dataclass(frozen=True, slots=True)
class WorkerListResponse:
    TAG: ClassVar[int] = 111
    workers: tuple[WorkerView, ...]
    missing: tuple[int, ...] = ()


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class StopWorkersResponse:
    TAG: ClassVar[int] = 112
    # (worker id, outcome) with outcome "stopped" | "already-stopped" | "not-found"
    results: tuple[tuple[int, str], ...]


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class Notification:
    """Sent to a waiting client before its WaitJobsResponse, once per task notification."""

    TAG: ClassVar[int] = 118
    job_id: int
    task_id: int
    worker_id: int
    message: bytes


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class CloseJobsResponse:
    TAG: ClassVar[int] = 113
    # (job id, outcome) with outcome "closed" | "already-closed" | "not-found"
    results: tuple[tuple[int, str], ...]


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ForgetJobsResponse:
    TAG: ClassVar[int] = 114
    forgotten: int
    ignored: int


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobSummaryResponse:
    TAG: ClassVar[int] = 115
    counts: tuple[tuple[str, int], ...]  # job state word -> number of jobs


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskIdsResponse:
    TAG: ClassVar[int] = 116
    jobs: tuple[tuple[int, Ranges], ...]
    missing: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ExplainVariant:
    """Why one resource variant of a task can or cannot run on one worker."""

    items: tuple[tuple[str, str, int, int], ...]  # (kind, name, worker amount, request amount)
    runnable: bool


@dataclass(frozen=True, slots=True)
class ExplainWorker:
    worker_id: int
    variants: tuple[ExplainVariant, ...]
    remaining_time: float | None = None
    group_size: int = 0


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskExplainResponse:
    TAG: ClassVar[int] = 117
    job_id: int
    task_id: int
    n_deps: int
    n_waiting_deps: int
    workers: tuple[ExplainWorker, ...]
    min_times: tuple[float, ...] = ()  # per variant
    n_nodes: tuple[int, ...] = ()  # per variant


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JournalRecords:
    """Raw journal records (hqshm.server.journal.records), and where to read on."""

    TAG: ClassVar[int] = 140
    records: tuple[bytes, ...]
    offset: int
    generation: int
    restarted: bool  # the records start again from the beginning of a compacted journal


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JournalPruned:
    TAG: ClassVar[int] = 141
    size_before: int
    size_after: int
