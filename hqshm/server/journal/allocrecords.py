"""Journal records of automatic allocation: queues (created, removed, paused, learned worker
resources, the id counter) and their allocations (queued, state changes).

New tags of the one journal registry: an older server skips them as unknown records, and a
journal without them restores with no queues, so the format stays compatible both ways.
"""

from __future__ import annotations

from typing import ClassVar

from hqshm.cluster.frozen import frozen
from hqshm.cluster.resources import ResourceDescriptor
from hqshm.model.allocqueue import QueueParams
from hqshm.server.journal.records import JOURNAL


@JOURNAL.message
@frozen
class QueueCreatedRecord:
    TAG: ClassVar[int] = 50
    queue_id: int
    params: QueueParams
    at: float


@JOURNAL.message
@frozen
class QueueRemovedRecord:
    TAG: ClassVar[int] = 51
    queue_id: int
    at: float


@JOURNAL.message
@frozen
class QueueStateRecord:
    TAG: ClassVar[int] = 52
    queue_id: int
    paused: bool
    auto: bool
    at: float


@JOURNAL.message
@frozen
class QueueResourcesRecord:
    TAG: ClassVar[int] = 53
    queue_id: int
    resources: ResourceDescriptor


@JOURNAL.message
@frozen
class AllocQueuedRecord:
    TAG: ClassVar[int] = 54
    queue_id: int
    allocation_id: str
    counter: int
    workers: int
    workdir: str
    at: float


@JOURNAL.message
@frozen
class AllocStateRecord:
    TAG: ClassVar[int] = 55
    queue_id: int
    allocation_id: str
    state: str
    at: float


@JOURNAL.message
@frozen
class AllocCountersRecord:
    TAG: ClassVar[int] = 56
    next_queue_id: int
