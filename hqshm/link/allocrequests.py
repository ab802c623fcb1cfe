"""The client link's `hq alloc` requests and the views the server answers them with.

Apart from hqshm/link/requests.py so that only `hq alloc` imports them. Every field is checked
when decoded: a queue's parameters by ``QueueParams`` itself, ids and texts by their bounds.
"""

from __future__ import annotations

from typing import ClassVar

from hqshm.cluster.frozen import frozen
from hqshm.cluster.resources import ResourceDescriptor
from hqshm.link.requests import CLIENT_LINK
from hqshm.model import limits
from hqshm.model.allocqueue import QueueParams

ALLOC_FILTERS = ("queued", "running", "finished", "failed")


def _check_queue(queue_id: int) -> None:
    limits.check_int("a queue id", queue_id, 0, limits.U32_MAX)


@CLIENT_LINK.message
@frozen
class AllocAddRequest:
    """`hq alloc add`; with ``dry_run`` a trial allocation is submitted and canceled first."""

    TAG: ClassVar[int] = 50
    params: QueueParams
    dry_run: bool = True


@CLIENT_LINK.message
@frozen
class AllocDryRunRequest:
    TAG: ClassVar[int] = 51
    params: QueueParams


@CLIENT_LINK.message
@frozen
class AllocListRequest:
    TAG: ClassVar[int] = 52


@CLIENT_LINK.message
@frozen
class AllocInfoRequest:
    TAG: ClassVar[int] = 53
    queue_id: int
    filter: str | None = None

    def __post_init__(self) -> None:
        _check_queue(self.queue_id)
        if self.filter is not None:
            limits.check_choice("filter", self.filter, ALLOC_FILTERS)


@CLIENT_LINK.message
@frozen
class AllocQueueRequest:
    """`hq alloc pause|resume|remove [--force]` of one queue."""

    TAG: ClassVar[int] = 54
    action: str  # "pause" | "resume" | "remove"
    queue_id: int
    force: bool = False

    def __post_init__(self) -> None:
        limits.check_choice("action", self.action, ("pause", "resume", "remove"))
        _check_queue(self.queue_id)


@CLIENT_LINK.message
@frozen
class AllocLogRequest:
    """Where an allocation's stdout/stderr file is (the client reads it: same file system)."""

    TAG: ClassVar[int] = 55
    allocation_id: str
    channel: str

    def __post_init__(self) -> None:
        limits.check_text("an allocation id", self.allocation_id, 256)
        limits.check_choice("channel", self.channel, ("stdout", "stderr"))


@frozen
class QueueView:
    id: int
    params: QueueParams
    state: str  # "active" | "paused"
    resources: ResourceDescriptor | None  # declared or learned
    reason: str  # why its last tick submitted nothing ("" when it submitted)
    auto_paused: bool
    retry_at: float | None  # an automatically paused queue tries again then
    next_submit_at: float | None  # rate limited until then
    failed_submissions: int
    failed_allocations: int
    last_failure: str


@frozen
class AllocationView:
    id: str
    queue_id: int
    state: str  # queued | running | finished | failed
    workdir: str
    target_workers: int
    queued_at: float
    started_at: float | None
    ended_at: float | None
    end_reason: str = ""


@CLIENT_LINK.message
@frozen
class AllocQueueCreated:
    TAG: ClassVar[int] = 150
    queue_id: int


@CLIENT_LINK.message
@frozen
class AllocQueuesResponse:
    TAG: ClassVar[int] = 151
    queues: tuple[QueueView, ...]


@CLIENT_LINK.message
@frozen
class AllocInfoResponse:
    TAG: ClassVar[int] = 152
    queue: QueueView
    allocations: tuple[AllocationView, ...]


@CLIENT_LINK.message
@frozen
class AllocPathResponse:
    TAG: ClassVar[int] = 153
    path: str
