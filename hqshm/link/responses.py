"""Server -> client responses of the client link, and the views they carry.

Views (``JobSummary`` here, the detailed ones in hqshm/link/details.py) are what the server shows
of its state: plain records, built by the server and rendered by the client, never live objects.
"""

from __future__ import annotations

from typing import ClassVar

from hqshm.cluster.frozen import frozen
from hqshm.link.requests import CLIENT_LINK
from hqshm.model.selection import Ranges


@CLIENT_LINK.message
@frozen
class ErrorResponse:
    TAG: ClassVar[int] = 100
    message: str


@CLIENT_LINK.message
@frozen
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
@frozen
class Ack:
    TAG: ClassVar[int] = 102


@CLIENT_LINK.message
@frozen
class SubmitResponse:
    TAG: ClassVar[int] = 103
    job_id: int


@frozen
class JobSummary:
    id: int
    name: str
    is_open: bool
    cancel_reason: str | None
    task_count: int
    counts: tuple[int, int, int, int, int, int]  # waiting running finished failed canceled aborted


@CLIENT_LINK.message
@frozen
class JobListResponse:
    TAG: ClassVar[int] = 104
    jobs: tuple[JobSummary, ...]
    total: int  # all jobs the server knows, for the "use --all" footer


@CLIENT_LINK.message
@frozen
class CancelJobsResponse:
    TAG: ClassVar[int] = 106
    canceled: tuple[tuple[int, int, int], ...]  # job id, tasks canceled, tasks already finished
    already_finished: tuple[int, ...]
    missing: tuple[int, ...]


@CLIENT_LINK.message
@frozen
class WaitJobsResponse:
    TAG: ClassVar[int] = 107
    jobs: tuple[JobSummary, ...]
    missing: tuple[int, ...] = ()


@CLIENT_LINK.message
@frozen
class JobProgressResponse:
    TAG: ClassVar[int] = 108
    jobs: tuple[JobSummary, ...]


@CLIENT_LINK.message
@frozen
class StopWorkersResponse:
    TAG: ClassVar[int] = 112
    # (worker id, outcome) with outcome "stopped" | "already-stopped" | "not-found"
    results: tuple[tuple[int, str], ...]


@CLIENT_LINK.message
@frozen
class Notification:
    """Sent to a waiting client before its WaitJobsResponse, once per task notification."""

    TAG: ClassVar[int] = 118
    job_id: int
    task_id: int
    worker_id: int
    message: bytes


@CLIENT_LINK.message
@frozen
class CloseJobsResponse:
    TAG: ClassVar[int] = 113
    # (job id, outcome) with outcome "closed" | "already-closed" | "not-found"
    results: tuple[tuple[int, str], ...]


@CLIENT_LINK.message
@frozen
class ForgetJobsResponse:
    TAG: ClassVar[int] = 114
    forgotten: int
    ignored: int


@CLIENT_LINK.message
@frozen
class JobSummaryResponse:
    TAG: ClassVar[int] = 115
    counts: tuple[tuple[str, int], ...]  # job state word -> number of jobs


@CLIENT_LINK.message
@frozen
class TaskIdsResponse:
    TAG: ClassVar[int] = 116
    jobs: tuple[tuple[int, Ranges], ...]
    missing: tuple[int, ...] = ()


@CLIENT_LINK.message
@frozen
class JournalRecords:
    """Raw journal records (hqshm.server.journal.records), and where to read on."""

    TAG: ClassVar[int] = 140
    records: tuple[bytes, ...]
    offset: int
    generation: int
    restarted: bool  # the records start again from the beginning of a compacted journal


@CLIENT_LINK.message
@frozen
class JournalPruned:
    TAG: ClassVar[int] = 141
    size_before: int
    size_after: int


class ResultStatus:
    """What a ``TaskResultsResponse`` says of one task."""

    PENDING = 0  # not ended yet
    VALUE = 1  # blob: the returned value (hqshm/taskresult.py)
    EXCEPTION = 2  # blob: the exception it raised; error: the task's error (traceback)
    FAILED = 3  # failed without an exception to give (a program, a crash): error
    CANCELED = 4  # canceled or aborted: error says which
    NONE = 5  # finished without a result (returned None, or a program task)
    TOO_LARGE = 6  # size: bytes of the result, above the job's max_result_size (error: it)
    DROPPED = 7  # the server's result store was full: error
    UNPICKLABLE = 8  # the value could not be pickled: error
    LATER = 9  # not in this answer (its size budget): ask again
    UNKNOWN = 10  # no such job or task: error
    LOST = 11  # ended before the server restarted: results are not in the journal
    NOT_FETCHED = 12  # kept on its worker, which is gone or could not send it: error says
    NOT_KEPT = 13  # its worker's result space was full when it ended: error says


@CLIENT_LINK.message
@frozen
class TaskResultsResponse:
    TAG: ClassVar[int] = 119
    # (task id, ResultStatus, size, blob, error text), in the order asked
    items: tuple[tuple[int, int, int, bytes, str], ...]
