"""Messages between the server and its nodes, and their codec.

One message type per direction of the link; every message is a frozen, slotted dataclass with a
``TAG``. Tasks are identified by a ``TaskKey`` (job id in the upper 32 bits, the job's task id in
the lower 32) so batches are flat integers; a task's program travels once per node and group as
an opaque ``body`` that the product defines and the node runtime interprets.

Ordering that matters:
- ``DefineGroup`` always precedes the first ``ComputeTasks`` of that group on a link.
- A node reports a task at most once as started and exactly once as ended (finished/failed),
  unless the server retracted or canceled it first; ends of canceled tasks may still arrive and
  are ignored by the server.
- ``TasksRetracted`` lists only tasks that had not started; those will never start on that node.
- ``ForgetGroups`` names groups the server dropped; a later ``DefineGroup`` of such a gid
  defines it anew before any ``ComputeTasks`` of it.
- ``FetchResult`` asks for one part of a result the node holds (reported with
  ``RESULT_HELD``); the node answers each with one ``ResultPart``, in the order asked, and the
  server keeps only a few parts asked ahead of those that came, so no frame is larger than
  ``MAX_PART`` and a large result never takes more than a few parts' decode of a server turn.
- ``StoreResult`` parts of one result (made on another node, taken as an argument here) come
  in order, whole, before the ``ComputeTasks`` whose task takes it: the server holds every
  message to a node, in order, while it fetches what that node's next tasks need
  (hqshm/server/results.py); only ``StopNode``, ``ServerHeartbeat`` and ``FetchResult``,
  which no task's order depends on, go past such a held queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from .codec import Registry
from .frozen import frozen
from .ids import FIRST_INSTANCE, GroupId, InstanceId, JobId, TaskKey, WorkerId, job_of
from .resources import ResourceDescriptor, ResourceRequest

# Bump on any incompatible change; registration refuses a mismatch. 2: ForgetGroups (a node
# of protocol 1 would log every one as an invalid message). 3: results held on nodes
# (RESULT_HELD, RESULT_OVER_CAP, FetchResult, ResultPart). 4: StoreResult (held results
# pushed to the nodes of their dependants).
PROTOCOL = 4
HEARTBEAT_MISSES = 3  # a node silent for this many of its heartbeat periods (+1 s) is lost
MAX_NOTIFICATION = 1024  # bytes of one task notification (spec/cli.md §7)
MAX_FORGET = 65_536  # groups one ForgetGroups names; more go in several messages
MAX_AFTER = 64  # keys one task of a ComputeTasks may wait for on its node (``after``)

NODE_LINK = Registry("node", PROTOCOL)

# (key, instance, started_at, variant)
Started = tuple[TaskKey, InstanceId, float, int]
# (key, instance, started_at, ended_at, variant)
Finished = tuple[TaskKey, InstanceId, float, float, int]
# (key, instance, started_at, ended_at, variant, error, retryable). Retryable: the program ran
# and exited non-zero (not killed for its time limit, not unable to start): --retries applies.
Failed = tuple[TaskKey, InstanceId, float, float, int, str, bool]
# (key, instance, kind, size, blob) of a function task's result (hqshm/taskresult.py): kind 0
# the value, 1 the exception it raised, 2 a value that could not be pickled (the blob says
# why), 3 a value its node could not keep (its result space was full: the blob says so),
# possibly with one flag: RESULT_HELD (the blob is empty: the node keeps the result, to
# be fetched with FetchResult) or RESULT_OVER_CAP (larger than the job lets be kept at all:
# the blob is that cap in decimal digits). Without a flag an empty blob of a non-zero size is
# a result too large for its job (cap unknown).
ResultItem = tuple[TaskKey, InstanceId, int, int, bytes]
MAX_RESULT_KIND = 3
RESULT_KIND_MASK = 0x3
RESULT_HELD = 0x4
RESULT_OVER_CAP = 0x8
MAX_RESULT_BYTES = 64 << 20  # the most bytes of one result in a report, or held on a node
MAX_PART = 8 << 20  # the most bytes of one ResultPart
MAX_PART_ERROR = 1024  # bytes of a ResultPart's error text
STORE_UNAVAILABLE = 2  # a StoreResult's kind: the result could not be fetched (data: why)
# (key, instance, variant) of a task a reconnecting node still holds (running, or ended and not
# yet reported)
Resumed = tuple[TaskKey, InstanceId, int]


# --- node -> server -------------------------------------------------------------------------


@NODE_LINK.message
@frozen
class RegisterNode:
    """First message of a node. ``info`` is the product's own worker configuration."""

    TAG: ClassVar[int] = 1
    version: str
    hostname: str
    resources: ResourceDescriptor
    group: str
    time_limit: float | None  # seconds of life left at registration, None = unlimited
    heartbeat: float
    idle_timeout: float | None
    info: bytes
    min_utilization: float = 0.0  # take only task sets that use this share of the CPUs
    # A node that outlived its server (--on-server-lost reconnect) registers again with the
    # UID of the server it lost and the tasks it still holds; a restored server takes back
    # those it restored as running with the same instance (``NodeRegistered.rejected``).
    server_uid: str = ""
    resumed: tuple[Resumed, ...] = ()


@NODE_LINK.message
@frozen
class TaskUpdates:
    """Everything that happened to tasks since the last update, in one frame."""

    TAG: ClassVar[int] = 2
    started: tuple[Started, ...] = ()
    finished: tuple[Finished, ...] = ()
    failed: tuple[Failed, ...] = ()
    # Trailing and optional: a node without results sends the frame as before.
    results: tuple[ResultItem, ...] = ()

    def __post_init__(self) -> None:
        for _key, _instance, kind, size, blob in self.results:
            if not valid_result(kind, size, blob):
                raise ValueError("invalid task result")


@NODE_LINK.message
@frozen
class TasksRetracted:
    """Answer to ``RetractTasks``: the subset that had not started and is given back."""

    TAG: ClassVar[int] = 3
    keys: tuple[TaskKey, ...]


@NODE_LINK.message
@frozen
class Heartbeat:
    TAG: ClassVar[int] = 4


@NODE_LINK.message
@frozen
class TaskNotification:
    """A running task's message (`hq task notify`), for clients listening live."""

    TAG: ClassVar[int] = 6
    key: TaskKey
    instance: InstanceId
    message: bytes

    def __post_init__(self) -> None:
        if len(self.message) > MAX_NOTIFICATION:
            raise ValueError("notification too long")


@NODE_LINK.message
@frozen
class ResultPart:
    """Answer to ``FetchResult``: ``data`` from ``offset`` of the result of ``key``, whose
    whole size (on this node) is ``total``; or ``error`` (and no data) when the node cannot
    read it. The server checks every field against what it asked and recorded."""

    TAG: ClassVar[int] = 7
    key: TaskKey
    instance: InstanceId
    offset: int
    total: int
    data: bytes
    error: str = ""

    def __post_init__(self) -> None:
        if (self.offset < 0 or self.total < 0 or len(self.data) > MAX_PART
                or len(self.error) > MAX_PART_ERROR):
            raise ValueError("invalid result part")


@NODE_LINK.message
@frozen
class NodeStopping:
    """The node leaves on its own; ``reason`` is a ``StopReason`` value."""

    TAG: ClassVar[int] = 5
    reason: str


# --- server -> node -------------------------------------------------------------------------


@NODE_LINK.message
@frozen
class NodeRegistered:
    TAG: ClassVar[int] = 101
    worker_id: WorkerId
    server_uid: str
    idle_timeout: float | None  # the server's default, used when the node has none
    # Resumed tasks the server does not take back: the node kills them and never reports
    # them. The others are the new registration's running tasks, reported as usual.
    rejected: tuple[TaskKey, ...] = ()


@NODE_LINK.message
@frozen
class DefineGroup:
    """The shape shared by a batch of tasks: request, priority and the product's body."""

    TAG: ClassVar[int] = 102
    gid: GroupId
    request: ResourceRequest
    priority: int
    body: bytes


@NODE_LINK.message
@frozen
class ComputeTasks:
    """Run these tasks of a group. Empty ``instances`` means all 0; ``entries`` align with keys."""

    TAG: ClassVar[int] = 103
    gid: GroupId
    keys: tuple[TaskKey, ...]
    instances: tuple[InstanceId, ...] = ()
    entries: tuple[bytes, ...] = ()
    # A multi-node task (one key): the hostnames of its nodes, this (root) node first.
    nodes: tuple[str, ...] = ()
    # Results these tasks take as arguments that were made on other nodes: (key of the task
    # that made it, kind, blob); the node stores them before it starts the tasks.
    results: tuple[tuple[TaskKey, int, bytes], ...] = ()
    # Sent early (before its dependencies finished), aligned with keys: the keys of tasks of
    # the same job, sent to this node before, that each task waits for here; it starts once
    # all of them ended successfully on this node (empty: none, and () for every task).
    after: tuple[tuple[TaskKey, ...], ...] = ()

    def __post_init__(self) -> None:
        for _key, kind, blob in self.results:
            if not 0 <= kind <= 1 or len(blob) > MAX_RESULT_BYTES:
                raise ValueError("invalid dependency result")
        if self.after:
            if len(self.after) != len(self.keys):
                raise ValueError("after does not align with keys")
            for key, waited in zip(self.keys, self.after, strict=True):
                if len(waited) > MAX_AFTER or any(
                        k == key or job_of(k) != job_of(key) for k in waited):
                    raise ValueError("invalid after keys")
        if self.instances and len(self.instances) != len(self.keys):
            raise ValueError("instances do not align with keys")
        if self.entries and len(self.entries) != len(self.keys):
            raise ValueError("entries do not align with keys")
        if self.nodes and len(self.keys) != 1:
            raise ValueError("a multi-node task travels alone")


# ComputeTasks for one node within a turn merge (``merged``) up to these sizes: a chain's
# steps sent early go one a message, and each message costs both ends more than a step.
MAX_MERGED_KEYS = 1024
MAX_MERGED_ENTRY_BYTES = 1 << 20


def mergeable(first: ComputeTasks, second: ComputeTasks, keys: int, entry_bytes: int) -> bool:
    """Whether ``second`` can join ``first`` (and whatever joined it before) in one message
    of ``keys`` keys and ``entry_bytes`` bytes of entries in all: same group, small, no
    multi-node task, no results (which may be large)."""
    return (first.gid == second.gid and not first.nodes and not second.nodes
            and not first.results and not second.results
            and bool(first.entries) == bool(second.entries)
            and keys <= MAX_MERGED_KEYS and entry_bytes <= MAX_MERGED_ENTRY_BYTES)


# Entries one ComputeTasks carries at most (each up to MAX_ARG): a pass that places thousands of
# tasks with large entries on a large node sends them in several messages, each far below the
# node link's frame limit (MAX_FRAME), past which the link would end.
MAX_COMPUTE_ENTRY_BYTES = 32 << 20


def entry_ranges(entries: Sequence[bytes], count: int,
                 limit: int = MAX_COMPUTE_ENTRY_BYTES) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of ``count`` tasks whose ``entries`` (none, or one a task) hold
    at most ``limit`` bytes each range, in order; one range when they all fit."""
    if not entries or sum(map(len, entries)) <= limit:
        return [(0, count)]
    ranges = []
    start = size = 0
    for at, entry in enumerate(entries):
        if size + len(entry) > limit and at > start:
            ranges.append((start, at))
            start, size = at, 0
        size += len(entry)
    ranges.append((start, count))
    return ranges


def merged(messages: Sequence[ComputeTasks]) -> ComputeTasks:
    """One message that a node handles as ``messages`` in turn (``mergeable`` each)."""
    if len(messages) == 1:
        return messages[0]
    keys: list[TaskKey] = []
    instances: list[InstanceId] = []
    entries: list[bytes] = []
    after: list[tuple[TaskKey, ...]] = []
    numbered = any(m.instances for m in messages)
    waits = any(m.after for m in messages)
    for message in messages:
        keys += message.keys
        entries += message.entries
        if numbered:
            instances += message.instances or (FIRST_INSTANCE,) * len(message.keys)
        if waits:
            after += message.after or ((),) * len(message.keys)
    return ComputeTasks(messages[0].gid, tuple(keys), tuple(instances), tuple(entries),
                        after=tuple(after))


@NODE_LINK.message
@frozen
class CancelTasks:
    """Kill these tasks if running, drop them if queued; no answer beyond normal updates."""

    TAG: ClassVar[int] = 104
    keys: tuple[TaskKey, ...]


@NODE_LINK.message
@frozen
class RetractTasks:
    """Give back whichever of these tasks has not started (work stealing, time limits)."""

    TAG: ClassVar[int] = 105
    keys: tuple[TaskKey, ...]


@NODE_LINK.message
@frozen
class StopNode:
    TAG: ClassVar[int] = 106
    reason: str


@NODE_LINK.message
@frozen
class ReserveNode:
    """This node is a secondary node of a multi-node task (key), or is free again (0)."""

    TAG: ClassVar[int] = 108
    key: TaskKey


@NODE_LINK.message
@frozen
class ForgetGroups:
    """Groups the server dropped (their tasks all ended, or they were canceled): the node
    forgets each once it holds none of its tasks. One message per node and server turn, so a
    node running thousands of single-task jobs a second keeps only the live groups."""

    TAG: ClassVar[int] = 109
    gids: tuple[GroupId, ...]

    def __post_init__(self) -> None:
        if len(self.gids) > MAX_FORGET:
            raise ValueError(f"more than {MAX_FORGET} groups to forget")


@NODE_LINK.message
@frozen
class ReleaseResults:
    """These jobs were forgotten: drop the results the node keeps for their tasks."""

    TAG: ClassVar[int] = 110
    job_ids: tuple[JobId, ...]


@NODE_LINK.message
@frozen
class FetchResult:
    """Send ``length`` bytes from ``offset`` of a result this node reported as held
    (``RESULT_HELD``): one ``ResultPart`` answers."""

    TAG: ClassVar[int] = 111
    key: TaskKey
    instance: InstanceId
    offset: int
    length: int

    def __post_init__(self) -> None:
        if self.offset < 0 or not 0 < self.length <= MAX_PART:
            raise ValueError("invalid result fetch")


@NODE_LINK.message
@frozen
class StoreResult:
    """Part of a result made on another node that a task sent next takes as an argument:
    ``data`` from ``offset`` of the blob of task ``key`` (``total`` bytes); ``kind`` 0 the
    value, 1 the exception, or ``STORE_UNAVAILABLE`` with why it could not be fetched (one
    part, the text in UTF-8). Parts of one result come in order; the node stores the result
    when the last arrives (and checks each part again: the link is trusted, its sizes are not).
    """

    TAG: ClassVar[int] = 112
    key: TaskKey
    kind: int
    offset: int
    total: int
    data: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.kind <= STORE_UNAVAILABLE and self.key >= 0 and self.offset >= 0
                and 0 < len(self.data) <= MAX_PART
                and 0 < self.total <= MAX_RESULT_BYTES
                and self.offset + len(self.data) <= self.total):
            raise ValueError("invalid result to store")
        if self.kind == STORE_UNAVAILABLE and (self.offset or len(self.data) != self.total
                                               or self.total > MAX_PART_ERROR):
            raise ValueError("invalid unavailable result")


@NODE_LINK.message
@frozen
class ServerHeartbeat:
    TAG: ClassVar[int] = 107


def valid_result(kind: int, size: int, blob: bytes) -> bool:
    """Whether a ``ResultItem``'s kind, size and blob agree (see ``ResultItem``)."""
    base, flags = kind & RESULT_KIND_MASK, kind & ~RESULT_KIND_MASK
    if base > MAX_RESULT_KIND or size < 0 or len(blob) > MAX_RESULT_BYTES:
        return False
    if flags == RESULT_HELD:
        return base <= 1 and not blob and 0 < size <= MAX_RESULT_BYTES
    if flags == RESULT_OVER_CAP:
        return base <= 1 and 0 < len(blob) <= 20 and blob.isdigit()
    return flags == 0


def heartbeat_timeout(heartbeat: float) -> float:
    """How long the server waits for a word from a node with this heartbeat before it drops
    it; the node applies the same rule to itself, to know when it must have been dropped."""
    return HEARTBEAT_MISSES * heartbeat + 1.0


class StopReason:
    """Why a node left; the product maps these to its worker states."""

    STOPPED = "stopped"  # `hq worker stop`: the node exits 0
    SERVER_STOPPED = "server-stopped"  # the server shuts down: nodes treat it as a lost server
    IDLE_TIMEOUT = "idle-timeout"
    TIME_LIMIT = "time-limit"
    CONNECTION_LOST = "connection-lost"
    HEARTBEAT_LOST = "heartbeat-lost"
    # Only in a ``StopNode``: the server does not know this node (any more), because it was
    # dropped (late heartbeats, a lost connection); its tasks were given back, so it must
    # kill them, unreported, and leave.
    DROPPED = "dropped"
