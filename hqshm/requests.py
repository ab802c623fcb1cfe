"""Client <-> server messages: one request type per command, one response type per answer.

Same codec as the node link (``cluster.codec``), its own protocol number. The server answers
every request with exactly one response (or ``ErrorResponse``); ``WaitJobs`` is answered when the
jobs are done, so a waiting client costs the server nothing while it waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from cluster.codec import Registry
from cluster.resources import ResourceDescriptor, ResourceRequest

CLIENT_PROTOCOL = 1
CLIENT_LINK = Registry("client", CLIENT_PROTOCOL)

Ranges = tuple[tuple[int, int, int], ...]  # (start, end inclusive, step)


@dataclass(frozen=True, slots=True)
class Selector:
    """``all``, ``last`` or explicit ids (ranges), as given on the command line."""

    kind: str  # "all" | "last" | "ids"
    ranges: Ranges = ()


# --- shared records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StdioDesc:
    kind: str  # "file" | "none" | "stream"
    path: str = ""
    rm_if_finished: bool = False


@dataclass(frozen=True, slots=True)
class TaskTemplate:
    """What a user asked to run, before the server resolves placeholders."""

    args: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    cwd: str
    stdout: StdioDesc
    stderr: StdioDesc
    request: ResourceRequest
    priority: int = 0
    time_limit: float | None = None
    crash_limit: int = 5  # 0 = unlimited, -1 = never-restart
    pin: str = "none"
    task_dir: bool = False
    stdin: bytes = field(default=b"", repr=False)
    retries: int = 0  # beyond HQ: re-run a task that exits non-zero up to this many times


@dataclass(frozen=True, slots=True)
class WorkerConfiguration:
    """A worker's settings, as it reported them when it registered (worker info rows)."""

    hostname: str
    work_dir: str
    heartbeat: float
    idle_timeout: float | None
    time_limit: float | None
    on_server_lost: str
    group: str
    pid: int
    listen_address: str
    resources: ResourceDescriptor
    manager: str = "None"  # "None" | "PBS" | "SLURM"
    manager_job_id: str | None = None
    overview_interval: float | None = None
    min_utilization: float = 0.0


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class WorkerConfigBlob:
    """Wrapper so the node can send its configuration as the opaque ``info`` of registration."""

    TAG: ClassVar[int] = 90
    config: WorkerConfiguration


# --- requests ---------------------------------------------------------------------------------


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ServerInfoRequest:
    TAG: ClassVar[int] = 1


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class StopServerRequest:
    TAG: ClassVar[int] = 2


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class SubmitRequest:
    TAG: ClassVar[int] = 3
    name: str
    max_fails: int | None
    submit_dir: str
    template: TaskTemplate
    ids: Ranges  # explicit task ids; with entries, selects which entries become tasks
    entries: tuple[bytes, ...] | None = None  # raw: --each-line passes bytes (HQ_ENTRY)
    job_id: int | None = None  # submit into an open job
    stream_dir: str | None = None  # --stream DIR (placeholders unresolved)
    after: tuple[TaskRef, ...] = ()  # beyond HQ: start only once these tasks finished
    # Job files' [array] pairs ids[i] with entries[i] and keeps the ids as given; `hq submit`
    # selects entries by index and numbers them on from the open job's tasks.
    entries_by_position: bool = False


@dataclass(frozen=True, slots=True)
class TaskRef:
    """Tasks of an earlier job: all of them (``tasks`` None) or the given ids."""

    job_id: int
    tasks: Ranges | None = None


@dataclass(frozen=True, slots=True)
class GraphTask:
    """One task of a job file: its own template, explicit id, dependencies and entry."""

    id: int
    template: TaskTemplate
    deps: tuple[int, ...] = ()
    entry: bytes | None = None


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class SubmitGraphRequest:
    """Individual tasks with dependencies between them (`hq job submit-file` with [[task]])."""

    TAG: ClassVar[int] = 14
    name: str
    max_fails: int | None
    submit_dir: str
    tasks: tuple[GraphTask, ...]
    job_id: int | None = None
    stream_dir: str | None = None


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class OpenJobRequest:
    TAG: ClassVar[int] = 15
    name: str
    max_fails: int | None = None


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class CloseJobsRequest:
    TAG: ClassVar[int] = 16
    selector: Selector


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ForgetJobsRequest:
    TAG: ClassVar[int] = 17
    selector: Selector
    states: tuple[str, ...] = ("finished", "failed", "aborted", "canceled")


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobSummaryRequest:
    TAG: ClassVar[int] = 18


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskIdsRequest:
    TAG: ClassVar[int] = 19
    selector: Selector
    states: tuple[str, ...] = ()


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskExplainRequest:
    TAG: ClassVar[int] = 20
    job: Selector  # a single id or last
    task_id: int


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ResubmitRequest:
    """Beyond HQ (older releases had it): a new job of a job's tasks in the given states."""

    TAG: ClassVar[int] = 21
    job_id: int
    states: tuple[str, ...] = ("failed", "canceled")


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobListRequest:
    TAG: ClassVar[int] = 4
    states: tuple[str, ...] = ()  # empty = default listing
    all: bool = False


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobInfoRequest:
    TAG: ClassVar[int] = 5
    selector: Selector
    include_tasks: bool = False


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class CancelJobsRequest:
    TAG: ClassVar[int] = 6
    selector: Selector
    reason: str | None = None


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class WaitJobsRequest:
    TAG: ClassVar[int] = 7
    selector: Selector
    without_close: bool = False
    notifications: bool = False  # also send each Notification of these jobs while waiting


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobProgressRequest:
    TAG: ClassVar[int] = 8
    selector: Selector


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskListRequest:
    TAG: ClassVar[int] = 9
    jobs: Selector
    tasks: Ranges | None = None
    states: tuple[str, ...] = ()


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskInfoRequest:
    TAG: ClassVar[int] = 10
    job: Selector  # a single id or last
    tasks: Ranges


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class WorkerListRequest:
    TAG: ClassVar[int] = 11
    include_offline: bool = False
    include_online: bool = True


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class WorkerInfoRequest:
    TAG: ClassVar[int] = 12
    selector: Selector


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class StopWorkersRequest:
    TAG: ClassVar[int] = 13
    selector: Selector


# --- responses --------------------------------------------------------------------------------


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
