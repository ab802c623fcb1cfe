"""Client -> server requests of the client link, and the link's codec.

Same codec as the node link (``hqshm.cluster.codec``), its own protocol number. The server
answers every request with exactly one response of hqshm/link/responses.py (or
``ErrorResponse``); ``WaitJobsRequest`` is answered when the jobs are done, so a waiting client
costs the server nothing while it waits.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from hqshm.cluster.codec import Registry
from hqshm.cluster.ids import JobId, TaskId
from hqshm.model import limits
from hqshm.model.submission import (
    ArraySubmission,
    GraphSubmission,
    Ranges,
    check_id,
    check_selection,
)

CLIENT_PROTOCOL = 3  # 3: entries packed, requests within a decode budget (2: submissions)
CLIENT_LINK = Registry("client", CLIENT_PROTOCOL)


@dataclass(frozen=True, slots=True)
class Selector:
    """``all``, ``last`` or explicit ids (ranges), as given on the command line."""

    kind: str  # "all" | "last" | "ids"
    ranges: Ranges = ()

    def __post_init__(self) -> None:
        limits.check_choice("selector", self.kind, ("all", "last", "ids"))
        check_selection(self.ranges)


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ServerInfoRequest:
    TAG: ClassVar[int] = 1


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class StopServerRequest:
    TAG: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class PackedBytes:
    """Many byte strings as two fields: their sizes (u32, little-endian) and their bytes one
    after another. One value on the wire however many there are, so that millions of
    `--each-line` entries stay within the server's decode budget."""

    sizes: bytes
    data: bytes

    @classmethod
    def of(cls, items: Sequence[bytes]) -> PackedBytes:
        sizes = array.array("I", [len(item) for item in items])
        if sys.byteorder == "big":
            sizes.byteswap()
        return cls(sizes.tobytes(), b"".join(items))

    def unpack(self, limit: int) -> tuple[bytes, ...]:
        """The byte strings, at most ``limit`` of them; LimitError if the fields disagree."""
        if len(self.sizes) % 4:
            raise limits.LimitError("packed entry sizes are not whole u32 values")
        limits.check_count("entries", len(self.sizes) // 4, limit)
        sizes = array.array("I")
        sizes.frombytes(self.sizes)
        if sys.byteorder == "big":
            sizes.byteswap()
        if sum(sizes) != len(self.data):
            raise limits.LimitError("packed entry sizes do not add up to their data")
        items = []
        view = memoryview(self.data)
        at = 0
        for size in sizes:
            items.append(bytes(view[at : at + size]))
            at += size
        return tuple(items)


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """An array submit; its entries travel packed in ``entries`` (``submission.entries`` is
    None on the wire); ``of`` and ``unpacked`` convert."""

    TAG: ClassVar[int] = 3
    submission: ArraySubmission
    entries: PackedBytes | None = None

    @classmethod
    def of(cls, submission: ArraySubmission) -> SubmitRequest:
        if submission.entries is None:
            return cls(submission)
        return cls(replace(submission, entries=None), PackedBytes.of(submission.entries))

    def unpacked(self) -> ArraySubmission:
        if self.entries is None:
            return self.submission
        return replace(self.submission, entries=self.entries.unpack(limits.MAX_ENTRIES))


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

    def __post_init__(self) -> None:
        limits.check_text("the job name", self.name)
        if self.max_fails is not None:
            limits.check_int("max fails", self.max_fails, 0, limits.U32_MAX)


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

    def __post_init__(self) -> None:
        limits.check_states(self.states)


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

    def __post_init__(self) -> None:
        limits.check_task_states(self.states)


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskExplainRequest:
    TAG: ClassVar[int] = 20
    job: Selector  # a single id or last
    task_id: TaskId

    def __post_init__(self) -> None:
        check_id("a task id", self.task_id)


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class ResubmitRequest:
    """Beyond HQ (older releases had it): a new job of a job's tasks in the given states."""

    TAG: ClassVar[int] = 21
    job_id: JobId
    states: tuple[str, ...] = ("failed", "canceled")

    def __post_init__(self) -> None:
        check_id("a job id", self.job_id)
        limits.check_task_states(self.states)


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JobListRequest:
    TAG: ClassVar[int] = 4
    states: tuple[str, ...] = ()  # empty = default listing
    all: bool = False

    def __post_init__(self) -> None:
        limits.check_states(self.states)


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

    def __post_init__(self) -> None:
        if self.reason is not None:
            limits.check_text("the cancel reason", self.reason)


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
        check_selection(self.tasks)
        limits.check_task_states(self.states)


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class TaskInfoRequest:
    TAG: ClassVar[int] = 10
    job: Selector  # a single id or last
    tasks: Ranges

    def __post_init__(self) -> None:
        check_selection(self.tasks)


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


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
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
@dataclass(frozen=True, slots=True)
class JournalFlushRequest:
    TAG: ClassVar[int] = 41


@CLIENT_LINK.message
@dataclass(frozen=True, slots=True)
class JournalPruneRequest:
    TAG: ClassVar[int] = 42
