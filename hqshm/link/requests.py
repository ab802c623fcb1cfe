"""Client -> server requests of the client link, and the link's codec.

Same codec as the node link (``hqshm.cluster.codec``), its own protocol number. The server
answers every request with exactly one response of hqshm/link/responses.py (or
``ErrorResponse``); ``WaitJobsRequest`` is answered when the jobs are done, so a waiting client
costs the server nothing while it waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hqshm.cluster.codec import Registry
from hqshm.cluster.ids import JobId, TaskId
from hqshm.model.submission import ArraySubmission, GraphSubmission, Ranges, check_ranges

CLIENT_PROTOCOL = 2  # 2: a submit carries the job model's submission
CLIENT_LINK = Registry("client", CLIENT_PROTOCOL)


@dataclass(frozen=True, slots=True)
class Selector:
    """``all``, ``last`` or explicit ids (ranges), as given on the command line."""

    kind: str  # "all" | "last" | "ids"
    ranges: Ranges = ()

    def __post_init__(self) -> None:
        check_ranges(self.ranges)


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
    submission: ArraySubmission


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class SubmitGraphRequest:
    """Individual tasks with dependencies between them (`hq job submit-file` with [[task]])."""

    TAG: ClassVar[int] = 14
    submission: GraphSubmission


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
    task_id: TaskId


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ResubmitRequest:
    """Beyond HQ (older releases had it): a new job of a job's tasks in the given states."""

    TAG: ClassVar[int] = 21
    job_id: JobId
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

    def __post_init__(self) -> None:
        check_ranges(self.tasks)


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskInfoRequest:
    TAG: ClassVar[int] = 10
    job: Selector  # a single id or last
    tasks: Ranges

    def __post_init__(self) -> None:
        check_ranges(self.tasks)


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
