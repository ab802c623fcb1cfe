"""Client -> server requests of the client link, and the link's codec.

Same codec as the node link (``hqshm.cluster.codec``), its own protocol number. The server
answers every request with exactly one response of hqshm/link/responses.py (or
``ErrorResponse``); ``WaitJobsRequest`` is answered when the jobs are done, so a waiting client
costs the server nothing while it waits.
"""

from __future__ import annotations

from typing import ClassVar

from hqshm.cluster.codec import Registry
from hqshm.cluster.frozen import frozen
from hqshm.cluster.ids import JobId, TaskId
from hqshm.model import limits
from hqshm.model.selection import Ranges, check_id, check_selection

CLIENT_PROTOCOL = 3  # 3: entries packed, requests within a decode budget (2: submissions)
CLIENT_LINK = Registry("client", CLIENT_PROTOCOL)


@frozen
class Selector:
    """``all``, ``last`` or explicit ids (ranges), as given on the command line."""

    kind: str  # "all" | "last" | "ids"
    ranges: Ranges = ()

    def __post_init__(self) -> None:
        limits.check_choice("selector", self.kind, ("all", "last", "ids"))
        check_selection(self.ranges)


@CLIENT_LINK.message
@frozen
class ServerInfoRequest:
    TAG: ClassVar[int] = 1


@CLIENT_LINK.message
@frozen
class StopServerRequest:
    TAG: ClassVar[int] = 2


@CLIENT_LINK.message
@frozen
class OpenJobRequest:
    TAG: ClassVar[int] = 15
    name: str
    max_fails: int | None = None

    def __post_init__(self) -> None:
        limits.check_text("the job name", self.name)
        if self.max_fails is not None:
            limits.check_int("max fails", self.max_fails, 0, limits.U32_MAX)


@CLIENT_LINK.message
@frozen
class CloseJobsRequest:
    TAG: ClassVar[int] = 16
    selector: Selector


@CLIENT_LINK.message
@frozen
class ForgetJobsRequest:
    TAG: ClassVar[int] = 17
    selector: Selector
    states: tuple[str, ...] = ("finished", "failed", "aborted", "canceled")

    def __post_init__(self) -> None:
        limits.check_states(self.states)


@CLIENT_LINK.message
@frozen
class JobSummaryRequest:
    TAG: ClassVar[int] = 18


@CLIENT_LINK.message
@frozen
class TaskIdsRequest:
    TAG: ClassVar[int] = 19
    selector: Selector
    states: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        limits.check_task_states(self.states)


@CLIENT_LINK.message
@frozen
class TaskExplainRequest:
    TAG: ClassVar[int] = 20
    job: Selector  # a single id or last
    task_id: TaskId

    def __post_init__(self) -> None:
        check_id("a task id", self.task_id)


@CLIENT_LINK.message
@frozen
class ResubmitRequest:
    """Beyond HQ (older releases had it): a new job of a job's tasks in the given states."""

    TAG: ClassVar[int] = 21
    job_id: JobId
    states: tuple[str, ...] = ("failed", "canceled")

    def __post_init__(self) -> None:
        check_id("a job id", self.job_id)
        limits.check_task_states(self.states)


@CLIENT_LINK.message
@frozen
class JobListRequest:
    """Jobs by id; ``limit`` > 0 asks for a page: at most that many, of ids after ``after``."""

    TAG: ClassVar[int] = 4
    states: tuple[str, ...] = ()  # empty = default listing
    all: bool = False
    after: int = 0
    limit: int = 0  # 0: every job listed

    def __post_init__(self) -> None:
        limits.check_states(self.states)
        check_id("a job id", self.after)
        check_id("a page size", self.limit)


@CLIENT_LINK.message
@frozen
class JobInfoRequest:
    TAG: ClassVar[int] = 5
    selector: Selector
    include_tasks: bool = False


@CLIENT_LINK.message
@frozen
class CancelJobsRequest:
    TAG: ClassVar[int] = 6
    selector: Selector
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.reason is not None:
            limits.check_text("the cancel reason", self.reason)


@CLIENT_LINK.message
@frozen
class WaitJobsRequest:
    TAG: ClassVar[int] = 7
    selector: Selector
    without_close: bool = False
    notifications: bool = False  # also send each Notification of these jobs while waiting


@CLIENT_LINK.message
@frozen
class JobProgressRequest:
    TAG: ClassVar[int] = 8
    selector: Selector


@CLIENT_LINK.message
@frozen
class TaskListRequest:
    TAG: ClassVar[int] = 9
    jobs: Selector
    tasks: Ranges | None = None
    states: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_selection(self.tasks)
        limits.check_task_states(self.states)


@CLIENT_LINK.message
@frozen
class TaskInfoRequest:
    TAG: ClassVar[int] = 10
    job: Selector  # a single id or last
    tasks: Ranges

    def __post_init__(self) -> None:
        check_selection(self.tasks)


@CLIENT_LINK.message
@frozen
class WorkerListRequest:
    TAG: ClassVar[int] = 11
    include_offline: bool = False
    include_online: bool = True


@CLIENT_LINK.message
@frozen
class WorkerInfoRequest:
    TAG: ClassVar[int] = 12
    selector: Selector


@CLIENT_LINK.message
@frozen
class StopWorkersRequest:
    TAG: ClassVar[int] = 13
    selector: Selector


@CLIENT_LINK.message
@frozen
class JournalReadRequest:
    """Records of the server's journal from ``offset`` on (`hq journal replay|stream`).

    ``offset`` 0 means the start; ``generation`` is the one of the previous answer (a
    compaction rewrites the file, and offsets of the old one mean nothing in the new one).
    """

    TAG: ClassVar[int] = 40
    offset: int
    generation: int

    def __post_init__(self) -> None:
        if self.offset < 0 or self.generation < 0:
            raise ValueError("journal offset and generation must not be negative")


@CLIENT_LINK.message
@frozen
class JournalFlushRequest:
    TAG: ClassVar[int] = 41


@CLIENT_LINK.message
@frozen
class JournalPruneRequest:
    TAG: ClassVar[int] = 42


MAX_RESULT_IDS = 10_000  # task ids of one TaskResultsRequest


@CLIENT_LINK.message
@frozen
class TaskResultsRequest:
    """Function tasks' results (hqshm/server/results.py): what is known of each now; the
    client asks again for those still pending."""

    TAG: ClassVar[int] = 22
    job_id: JobId
    task_ids: tuple[TaskId, ...]

    def __post_init__(self) -> None:
        check_id("a job id", self.job_id)
        if len(self.task_ids) > MAX_RESULT_IDS:
            raise limits.LimitError(message=f"at most {MAX_RESULT_IDS} task ids per request")
        for task_id in self.task_ids:
            check_id("a task id", task_id)
