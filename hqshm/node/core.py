"""The node's decisions: a pure core that the loop (hqshm/node/loop.py) drives.

It owns the node's state and everything it decides: the groups it was sent, the local queue,
which task runs on which executor, the allocator, the per-task resource environment, the batching
of reports, every timer (task time limits, the SIGINT-then-SIGKILL escalation, heartbeats, the
server's silence, the worker's time limit, the idle timeout) and the stop state with its exit
code. It reads no clock, socket, process or file: inputs come in as calls, decisions go out to an
``Outbox`` (messages to the server, tasks and skips to executors, signals to tasks, executors to
start), which the loop writes out and tests record (tests/unit/node_env.py).

A node that outlives its server (``--on-server-lost reconnect``, beyond HQ) has three states:
*registered* (the normal one); *lost* (``lost_since`` set): running tasks go on, nothing new
starts, reports are kept, and every RECONNECT_INTERVAL the core asks the loop to register again
(``Outbox.register_again``) with the lost server's UID and the tasks it holds; *stopping*, when
no server came back within RECONNECT_LIMIT or the worker's time limit, as with ``stop``. A
``NodeRegistered`` brings it back to *registered*: it kills what the server rejected and sends
the kept reports of the rest. A stopped server (``StopNode``) still ends the node as before.

Time is a parameter, in two readings, because the node uses both: ``now`` is epoch seconds
(``time.time()``), the time the protocol carries (when a task started or ended); ``mono`` is
monotonic seconds (``time.monotonic()``), on which every duration is measured (limits, grace,
heartbeats, silence, idle time, flush delay), so that a wall-clock step never fires a timer. A
handler takes the readings it uses.

Executors are named by index, as the loop's pool numbers them; a ``Slot`` is what the core knows
of one: the keys it was sent, in order, the first one running.

Task kinds: every task is a program to the core. ``group_info`` is the one place that reads a
group's body, and ``Outbox.dispatch`` carries the body opaque with the per-task fields that any
kind needs (entry, resource environment, CPUs, nodes). An executor may run a function task inside
its own process (hqshm/node/warm.py) and says so when it reports the start: the task's pid is then
the executor's, so the core interrupts it through ``Outbox.interrupt_function``, kills nothing
after it ended (the executor lives on) and words the executor's death as the task's own end.

One module, though past 500 lines: every handler reads and writes the same few records (queued
and running tasks, their executors and allocations, the pending reports), one state machine.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import deque
from itertools import pairwise
from typing import Protocol

from hqshm import errors
from hqshm.cluster.frozen import field, frozen, mutable
from hqshm.cluster.ids import FIRST_INSTANCE, GroupId, InstanceId, TaskKey, WorkerId
from hqshm.cluster.protocol import (
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    Failed,
    Finished,
    ForgetGroups,
    Heartbeat,
    NodeStopping,
    ReserveNode,
    ResultItem,
    Resumed,
    RetractTasks,
    Started,
    StopNode,
    StopReason,
    TaskNotification,
    TasksRetracted,
    TaskUpdates,
    heartbeat_timeout,
)
from hqshm.cluster.resources import FRACTIONS, RequestVariant, ResourceDescriptor
from hqshm.model.program import decode_program
from hqshm.model.resourcespec import env_name, format_request
from hqshm.node.allocator import Allocation, Allocator

logger = logging.getLogger(__name__)

KILL_GRACE = 1.0  # SIGINT, then SIGKILL after this long (spec/jobs.md §7)
SERVER_SILENCE_LIMIT = 3  # heartbeats without a word from the server: it is lost
MAX_EXTRA_EXECUTORS = 4  # per CPU, for tasks that need less than one CPU
MAX_FAILED_HERE = 1 << 16  # failures remembered for tasks sent early (NodeCore.failed_here)
# Task updates wait this long to share a frame: each frame wakes ZeroMQ's I/O thread and the
# server's loop, which costs more than the task itself when tasks are short. An update is sent
# at once when the node has nothing left to start, since then the server must refill it.
FLUSH_DELAY = 0.005
# Tasks of a group whose mean run time is below HANDOFF_MAX are handed off: the next one waits
# in the executor's ring behind the running one and inherits its CPUs, so the executor goes on
# without waiting for the loop, and the loop collects reports every DRAIN_TICK instead of
# waking for every task.
HANDOFF_MAX = 0.02
DRAIN_TICK = 0.002
# A group of mean run time from HANDOFF_MAX up to HANDOFF_LONG hands off one task an executor,
# whose executor rings the node once it started it (``Outbox.dispatch``'s ``tell_start``), so
# the loop needs no tick for it: the next task starts as the one before ends, not a turn of the
# loop later (0.3-0.5 ms a task here, about 1% of a 50 ms task), and the node still wakes once
# a task. Above it that gain is small beside the task, and a task held behind a long one
# waits out of the server's reach (work stealing) for longer. Longer tasks are dispatched one
# at a time.
HANDOFF_LONG = 0.1
# A group much shorter than that queues more than one: as many as cover HANDOFF_SPAN of its
# work, at most HANDOFF_DEPTH behind the running task. An executor then runs several tasks for
# each time it sleeps and rings the node, and the node starts several for each time it wakes
# (each of those costs both sides more than a no-op function task), while what sits out of the
# server's reach (work stealing) stays a few milliseconds of work an executor.
HANDOFF_DEPTH = 8
HANDOFF_SPAN = 0.004
# A chain's steps sent early queue behind their prerequisite deeper (``_chain_behind``): the
# node then asks the server for more once per CHAIN_DEPTH / 2 steps (the executor rings with
# that many left: executor.CHAIN_REFILL_AT), and a report and its answer cost the server, the
# node and their I/O threads more than a step's work. The server sends that many early
# (``Core.early_per_cpu``). The executor's submission ring is sized for HANDOFF_DEPTH tasks of
# three records each (FORGET, DEFINE, RUN: hqshm/node/pool.py), and each of its slots is a page
# of memory in the node and the executor: a step beyond that depth goes only where the ring has
# room for three more records (a chain of one group needs one each).
CHAIN_DEPTH = 16
RING_DEPTH = max(HANDOFF_DEPTH, CHAIN_DEPTH)  # the most tasks queued behind a running one
RECORDS_PER_TASK = 3
IDLE_POLL = 1.0  # the longest poll when no timer is due sooner
# A task killed by a signal that batch systems send to every process of a job (walltime,
# preemption, scancel) is reported this much later: the same signal reaching the node then
# makes it a loss of the node (run again elsewhere), not a failure of the task.
OUTSIDE_KILL_HOLD = 1.0
_OUTSIDE_KILLS = tuple(f"signal {n} (" for n in (1, 2, 9, 15)) + tuple(
    f"exit code {128 + n}." for n in (1, 2, 9, 15))  # a shell's way of saying it
NOT_RUNNING_HERE = "the task is not running on this worker"
NOT_CONNECTED = "the worker is not connected to a server"
RECONNECT = "reconnect"  # the --on-server-lost mode in which a node outlives its server
RECONNECT_INTERVAL = 1.0  # a node that lost its server tries to register again this often
RECONNECT_LIMIT = 600.0  # ... and gives up when no server came back for this long
# A report counts as journaled by the server once the server said something this long after
# it was sent (the server appends its journal at the end of the loop turn that read it, and
# says something to every node each second). Until then a server killed meanwhile may restore
# the task as running, so a reconnecting node resumes it and sends its report again.
ACK_LAG = 0.5
# Tasks per list of one TaskUpdates: three lists of at most 8 values a task stay well under
# the server's decode budget (MAX_NODE_VALUES, 4,000,000).
REPORT_PART = 100_000
RESULT_PART_BYTES = 32 << 20  # result bytes in one report (the frame limit is 256 MiB)
# Launch details kept per group and allocation (``GroupInfo.launches``): a group whose tasks
# take many different allocations keeps at most this many.
LAUNCH_CACHE = 1024


def _outside_kill(error: str) -> bool:
    """The end of a task by SIGHUP, SIGINT, SIGKILL or SIGTERM."""
    return any(mark in error for mark in _OUTSIDE_KILLS)


class Signal(enum.Enum):
    """What the core asks the loop to send to a task's process group."""

    INTERRUPT = "SIGINT"  # the task may clean up
    KILL = "SIGKILL"


class Outbox(Protocol):
    """Where the core puts its decisions; the loop carries them out, tests record them."""

    def send(self, message: object) -> None:
        """A message to the server."""

    def report(self, updates: TaskUpdates) -> None:
        """Task updates to the server; best effort: dropped if the link cannot take them."""

    def dispatch(self, executor: int, key: TaskKey, instance: InstanceId, gid: GroupId,
                 body: bytes, cpus: list[int], numa: int, entry: bytes | None,
                 env: dict[str, str], cpu_labels: list[str], whole_cpus: bool,
                 nodes: tuple[str, ...], after_ok: bool = False, tell_start: bool = False
                 ) -> None:
        """Queue a task on an executor (pinned to ``cpus`` when not empty), behind the one it
        runs for a hand-off; ``body`` is its group's, sent to each executor once. ``after_ok``:
        the executor starts it only if the task before it there ended well. ``tell_start``:
        the executor rings the node once it started it (or ended it unstarted)."""

    def skip(self, executor: int, key: TaskKey) -> None:
        """Tell an executor not to start a task queued on it (it reports it skipped)."""

    def send_signal(self, pid: int, signal: Signal) -> None:
        """Signal the process group of a task's program."""

    def interrupt_function(self, executor: int, key: TaskKey, pid: int) -> None:
        """SIGINT to a function task that runs inside its executor (``pid``, its process
        group): the executor raises KeyboardInterrupt in it if it still runs ``key``."""

    def start_executor(self) -> None:
        """Start one more executor; it gets the next index."""

    def room(self, executor: int) -> int:
        """Records the executor's submission ring can take now without waiting."""

    def forget_group(self, gid: GroupId) -> None:
        """The group is gone from the node: executors that were sent its program drop it
        (before their next task), and get it again should the gid be defined anew."""

    def register_again(self, server_uid: str, resumed: tuple[Resumed, ...],
                       time_limit: float | None) -> None:
        """The server was lost (reconnect mode): register with whichever server the access
        file names now, as a node of the server ``server_uid`` that still holds ``resumed``
        (``time_limit``: the worker's life left). Called again each RECONNECT_INTERVAL until
        a ``NodeRegistered`` comes: keep a registration still on its way to the same server."""


@frozen
class NodeSettings:
    """What the core needs of the node's options and of its machine."""

    descriptor: ResourceDescriptor
    hostname: str
    heartbeat: float = 8.0
    idle_timeout: float | None = None  # None: the server's default, told at registration
    time_limit: float | None = None  # the worker's, from the core's creation
    on_server_lost: str = "stop"  # or "finish-running", or "reconnect" (not in HQ)
    pin: bool = False  # the CPU labels are this machine's CPU ids: tasks are pinned to them
    cpu_numa: dict[int, int] = field(default_factory=dict)  # CPU id -> NUMA node, to bind memory


@mutable
class GroupInfo:
    request_variants: tuple[RequestVariant, ...]
    priority: int
    body: bytes
    request_env: list[dict[str, str]]  # per variant: HQ_RESOURCE_REQUEST_* values
    time_limit: float | None
    ran: int = 0
    ran_time: float = 0.0
    # What ``_launch`` derives from an allocation alone (resource environment, CPU labels,
    # whole CPUs, pin mask, NUMA node), per allocation: tasks of a group mostly take the same
    # few, and deriving it costs more than the rest of a task's launch.
    launches: dict[Allocation, tuple[dict[str, str], list[str], bool, list[int], int]] = field(
        default_factory=dict)
    # The last of them, by identity: hand-offs inherit their allocation object, and hashing
    # an allocation to find its details costs more than the rest of a hand-off's launch.
    last_launch: tuple[Allocation, tuple[dict[str, str], list[str], bool, list[int], int]] | None = (
        None)

    @property
    def handoffs(self) -> int:
        """How many of its tasks may queue behind a running one (0: a short group's only)."""
        if not self.ran:
            return 0
        mean = self.ran_time / self.ran
        if mean >= HANDOFF_LONG:
            return 0
        return max(1, min(HANDOFF_DEPTH, int(HANDOFF_SPAN / max(mean, 1e-9))))

    @property
    def long(self) -> bool:
        """Its hand-offs are told started by their executor's bell, not on the loop's tick."""
        return self.ran > 0 and self.ran_time >= HANDOFF_MAX * self.ran


def group_info(msg: DefineGroup) -> GroupInfo:
    """What the node keeps of a group: the body is read here only (a program: its time limit)."""
    program = decode_program(msg.body)
    request_env = [
        {f"HQ_RESOURCE_REQUEST_{env_name(e.name)}": format_request(e) for e in variant.entries}
        for variant in msg.request.variants
    ]
    return GroupInfo(msg.request.variants, msg.priority, msg.body, request_env,
                     program.time_limit)


@mutable
class Queued:
    key: TaskKey
    instance: InstanceId
    gid: GroupId
    entry: bytes | None
    nodes: tuple[str, ...] = ()  # a multi-node task's hostnames, this node first
    # Sent early (``ComputeTasks.after``): the tasks it still waits for here, and whether one
    # of them ended otherwise than well (then it waits for the server to cancel it).
    after: set[TaskKey] | None = None
    blocked: bool = False


@mutable
class Slot:
    """One executor as the core sees it (replaced by a fresh one when the executor dies)."""

    index: int
    inflight: deque[TaskKey] = field(default_factory=deque)  # keys sent, in order; first runs


@mutable
class Running:
    key: TaskKey
    instance: InstanceId
    gid: GroupId
    slot: Slot
    allocation: Allocation  # shared with its hand-off successor, which inherits it
    started: float
    deadline: float | None  # monotonic
    reported: bool = True  # started reported to the server (hand-offs: once they start)
    heir: TaskKey | None = None  # the hand-off successor that takes over the allocation
    pid: int = 0
    canceled: bool = False
    timed_out: bool = False
    kill_at: float | None = None  # when to escalate to SIGKILL (monotonic)
    signal_pending: Signal | None = None  # a signal to send once the pid is known
    in_process: bool = False  # a function task inside its executor: ``pid`` is the executor's
    # What it came with, so that a hand-off whose executor died before it could start goes
    # back to the local queue as it was.
    entry: bytes | None = None
    nodes: tuple[str, ...] = ()
    # Queued behind its one unfinished prerequisite, this task, on the same executor, to start
    # only if that ends well (``_chain_behind``); None for any other task.
    after_ok: TaskKey | None = None


@mutable
class Updates:
    started: list[Started] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    results: list[ResultItem] = field(default_factory=list)
    # Of ``finished``: the ends of tasks whose CPUs went on to the task handed off behind
    # them; of ``started``: the starts of hand-offs not told at once. Such an update frees
    # nothing the server could fill, so it need not go at once (``NodeCore.flush``).
    quiet_ends: int = 0
    quiet_starts: int = 0

    def __bool__(self) -> bool:
        return bool(self.started or self.finished or self.failed or self.results)

    def only_quiet(self) -> bool:
        return (not self.failed and self.quiet_ends == len(self.finished)
                and self.quiet_starts == len(self.started))


class NodeCore:
    """The node's state and decisions; every handler writes to ``out``."""

    def __init__(self, settings: NodeSettings, out: Outbox, mono: float) -> None:
        self.settings = settings
        self.out = out
        self.pin = settings.pin  # these two are read for every task
        self.cpu_numa = settings.cpu_numa
        self.allocator = Allocator(settings.descriptor)
        cpu_pool = settings.descriptor.pool("cpus")
        assert cpu_pool is not None
        self.n_cpus = cpu_pool.count
        self.slots = [Slot(i) for i in range(max(1, self.n_cpus))]
        self.groups: dict[GroupId, GroupInfo] = {}
        # Groups the server forgot whose tasks are still here (a canceled one dying, say):
        # dropped when the last one leaves, unless a DefineGroup brings them back first.
        self.forgotten: set[GroupId] = set()
        # The local queue: FIFO per group; groups run by priority, then job (the key's upper
        # half), as the server orders them. ``queued`` is the truth: an entry of a deque whose
        # key is no longer there was canceled or retracted and is skipped.
        self.queue: dict[GroupId, deque[Queued]] = {}
        self.queued: dict[TaskKey, Queued] = {}
        # Tasks sent early (``ComputeTasks.after``): queued (in ``queued``) but in no group's
        # deque until every task they wait for ended well here (``_finished_here``).
        # ``waiters``: a task here -> those waiting for it. ``failed_here``: the last
        # MAX_FAILED_HERE tasks that left this node otherwise than finished (failed, canceled,
        # retracted, dropped), oldest first: a task sent early after such an end (the server
        # had not heard of it yet) waits for the server's cancel. (A task sent before its waiter that is no
        # longer here and not in ``failed_here`` finished well: the server sends a task's
        # waiter after it, and hears of a failure within a round trip, long before
        # MAX_FAILED_HERE more tasks fail here.)
        self.waiting: dict[TaskKey, Queued] = {}
        self.waiters: dict[TaskKey, list[Queued]] = {}
        self.failed_here: dict[TaskKey, None] = {}
        self.running: dict[TaskKey, Running] = {}
        # Hand-offs running but not reported started yet: while there is one, the loop polls
        # every DRAIN_TICK (a set, so that the poll timeout need not scan the running tasks).
        self.unreported: set[TaskKey] = set()
        # Those of them whose executor rings the node when it starts them: no tick for these.
        self.told: set[TaskKey] = set()
        # The tasks' timers, (when, key): every running task's deadline and kill_at has an
        # entry; entries whose task left or whose timer changed are dropped when met (see
        # ``_live_timer``), and all at once when they outnumber the live ones (``_push_timer``).
        self.timer_heap: list[tuple[float, TaskKey]] = []
        self.updates = Updates()
        # Failures held back for OUTSIDE_KILL_HOLD: (when they may go, the report).
        self.held: deque[tuple[float, Failed]] = deque()
        self.worker_id = WorkerId(0)
        self.exit_code = 0
        self.stopping = False
        self.finishing = False  # server lost with finish-running: no new tasks
        # The server dropped this node (or must have: it was frozen past its heartbeat
        # timeout) and gave its tasks to others: they are killed at once and never reported.
        self.dropped = False
        self.drop_after = heartbeat_timeout(settings.heartbeat)
        # The key of the multi-node task this node is a secondary of, or 0.
        self.reserved_for = TaskKey(0)
        self.deadline = None if settings.time_limit is None else mono + settings.time_limit
        self.last_heard = mono
        self.last_beat = mono
        self.last_flush = mono
        self.idle_since: float | None = mono
        self.idle_timeout = settings.idle_timeout
        self.escalate_at: float | None = None  # shutdown: when every task gets SIGKILL
        # Reconnect mode (the module's docstring): the UID of the server we registered with,
        # since when it is lost (None: it is not), when to try registering next, and the
        # reports sent but maybe not journaled yet (when sent, what), oldest first.
        self.reconnects = settings.on_server_lost == RECONNECT
        self.server_uid = ""
        self.lost_since: float | None = None
        self.next_attempt = 0.0
        self.unacked: deque[tuple[float, TaskUpdates]] = deque()

    @property
    def finished(self) -> bool:
        """Finishing after the server was lost, and nothing runs any more."""
        return self.finishing and not self.running

    @property
    def lost(self) -> bool:
        """The server was lost and the node waits for it to come back (reconnect mode)."""
        return self.lost_since is not None

    # --- the server -----------------------------------------------------------------------

    def registered(self, worker_id: WorkerId, idle_timeout: float | None, mono: float,
                   server_uid: str = "", rejected: tuple[TaskKey, ...] = ()) -> None:
        """The server's ``NodeRegistered``: the first one, or one after the server was lost."""
        self.worker_id = worker_id
        self.server_uid = server_uid
        if self.settings.idle_timeout is None:
            self.idle_timeout = idle_timeout  # the server's default (a new server: its own)
        self.last_heard = mono
        self.last_beat = mono  # the registration was our word; connecting may have taken long
        logger.info("Worker %d registered at the server", worker_id)
        if self.lost_since is not None:
            self._resume(rejected, mono)

    def heard(self, mono: float) -> None:
        """The server said something (its frames are being read): reports sent ACK_LAG
        before are in its journal."""
        self.last_heard = mono
        unacked = self.unacked
        if self.lost_since is None:
            while unacked and unacked[0][0] <= mono - ACK_LAG:
                unacked.popleft()

    def on_message(self, message: object, mono: float) -> None:
        """One message from the server (a ``ServerHeartbeat`` needs nothing but ``heard``)."""
        if self.lost_since is not None and not isinstance(message, StopNode):
            return  # the lost server's last words: it gave nothing that still counts
        match message:
            case ComputeTasks():
                self._compute(message)
            case DefineGroup():
                self.groups[message.gid] = group_info(message)
                self.forgotten.discard(message.gid)
            case ForgetGroups():
                for gid in message.gids:
                    self.forget(gid)
                logger.debug("The server forgot %d groups; %d groups kept here",
                             len(message.gids), len(self.groups))
            case CancelTasks():
                self._cancel(message.keys, mono)
                self._settle_forgotten()
            case RetractTasks():
                given = tuple(k for k in message.keys if self._unqueue(k))
                self.out.send(TasksRetracted(given))
                self._settle_forgotten()
            case StopNode():
                self._stop_requested(message.reason, mono)
            case ReserveNode():
                self.reserved_for = message.key
                if not message.key and not self.running and not self.queued:
                    self.idle_since = mono

    # --- groups ------------------------------------------------------------------------------

    def forget(self, gid: GroupId) -> None:
        """The server is done with a group: drop it now if no task of it is here, else once
        the last one leaves (``_settle``). Memory then follows the live groups, not every
        group ever run (a single-task job is a group)."""
        if gid not in self.groups:
            return
        if self._holds(gid):
            self.forgotten.add(gid)
        else:
            self._drop_group(gid)

    def forget_all(self) -> None:
        """Registered again after the server was lost: group ids are the old server's, and a
        new server numbers its groups anew; it defines again whatever it sends."""
        for gid in list(self.groups):
            self.forget(gid)

    def _holds(self, gid: GroupId) -> bool:
        """Whether a task of the group is queued, running or handed to an executor here."""
        tasks = self.queue.get(gid)
        if tasks:
            while tasks and tasks[0].key not in self.queued:
                tasks.popleft()  # canceled or retracted meanwhile
            if any(self.queued.get(q.key) is q for q in tasks):
                return True
        if any(q.gid == gid for q in self.waiting.values()):
            return True
        return any(task.gid == gid for task in self.running.values())

    def _settle(self, gid: GroupId) -> None:
        """A task of ``gid`` left: drop the group if the server forgot it and it was the last."""
        if gid in self.forgotten and not self._holds(gid):
            self.forgotten.discard(gid)
            self._drop_group(gid)

    def _settle_forgotten(self) -> None:
        """After tasks left in bulk (cancels, retractions, a cleared queue)."""
        for gid in list(self.forgotten):
            self._settle(gid)

    def _clear_queue(self) -> None:
        """Drop every queued task (the node stops, or its server is lost)."""
        self.queued.clear()
        self.queue.clear()
        self.waiting.clear()
        self.waiters.clear()
        self._settle_forgotten()

    def _drop_group(self, gid: GroupId) -> None:
        self.forgotten.discard(gid)
        self.queue.pop(gid, None)
        if self.groups.pop(gid, None) is not None:
            self.out.forget_group(gid)

    def _compute(self, msg: ComputeTasks) -> None:
        group = self.groups.get(msg.gid)
        if group is None:
            logger.warning("Tasks of an undefined group %d ignored", msg.gid)
            return
        tasks = self.queue.setdefault(msg.gid, deque())
        for i, key in enumerate(msg.keys):
            instance = msg.instances[i] if msg.instances else FIRST_INSTANCE
            entry = msg.entries[i] if msg.entries else None  # raw: the executor decodes it
            queued = Queued(key, instance, msg.gid, entry, msg.nodes)
            self.queued[key] = queued
            if msg.after and msg.after[i] and self._waits(queued, msg.after[i]):
                continue
            tasks.append(queued)
        self.idle_since = None

    def _waits(self, queued: Queued, after: tuple[TaskKey, ...]) -> bool:
        """Whether a task sent early must wait (``waiting``) for the tasks named ``after``.

        Those were sent here before it: each is queued or running here (it waits for its
        end), or has left: badly (``failed_here``: it waits for the server's cancel) or well."""
        left = {k for k in after if k in self.queued or k in self.running}
        blocked = any(k in self.failed_here for k in after if k not in left)
        if not left and not blocked:
            return False
        queued.after = left
        queued.blocked = blocked
        self.waiting[queued.key] = queued
        for k in left:
            self.waiters.setdefault(k, []).append(queued)
        return True

    def _failed_here(self, key: TaskKey) -> None:
        """A task left the node without finishing well: what waits for it here never starts
        (the server cancels it)."""
        self.failed_here[key] = None
        if len(self.failed_here) > MAX_FAILED_HERE:
            del self.failed_here[next(iter(self.failed_here))]
        for queued in self.waiters.pop(key, ()):
            if self.queued.get(queued.key) is queued:
                queued.blocked = True

    def _finished_here(self, key: TaskKey) -> None:
        """A task finished well: what waits only for it is released into its group's queue,
        at the front (it was sent before the tasks queued since)."""
        self.failed_here.pop(key, None)
        for queued in self.waiters.pop(key, ()):
            if self.queued.get(queued.key) is not queued or queued.after is None:
                continue
            queued.after.discard(key)
            if not queued.after and not queued.blocked:
                del self.waiting[queued.key]
                self.queue.setdefault(queued.gid, deque()).appendleft(queued)
                self.idle_since = None

    def _cancel(self, keys: tuple[TaskKey, ...], mono: float) -> None:
        for key in keys:
            if self._unqueue(key):
                continue
            task = self.running.get(key)
            if task is not None and not task.canceled:
                task.canceled = True
                inflight = task.slot.inflight
                if not inflight or inflight[0] != key:
                    self.out.skip(task.slot.index, key)  # queued behind another: do not start
                self._kill(task, mono)

    def _unqueue(self, key: TaskKey) -> bool:
        """Drop a queued task (canceled, retracted); whether it was queued here."""
        queued = self.queued.pop(key, None)
        if queued is None:
            return False
        self.waiting.pop(key, None)
        self._failed_here(key)
        return True

    def _stop_requested(self, reason: str, mono: float) -> None:
        if reason == StopReason.STOPPED:
            logger.info("Worker stopped by the server")
            self.exit_code = 0
            self.stopping = True
        elif reason == StopReason.DROPPED:
            logger.warning("The server dropped this worker (its heartbeats came too late); "
                           "killing its tasks, which run elsewhere now")
            self._drop()
        else:
            # A server that stops on purpose does not come back: no reconnecting.
            logger.info("The server stopped (%s)", reason)
            self._server_lost(mono, stopped=True)

    def _drop(self) -> None:
        """Stop at once and forget every task: the server gave them to other nodes (HQ: a
        worker whose server is gone exits 1). ``begin_shutdown`` kills them without grace."""
        self.dropped = True
        self.stopping = True
        self.finishing = False
        self.exit_code = 1
        self._clear_queue()
        self.updates = Updates()
        self.held.clear()
        for task in self.running.values():
            task.canceled = True  # ends unreported

    def signaled(self) -> None:
        """The worker process got SIGINT or SIGTERM: CONNECTION LOST, as if it had been killed
        (spec/deployment.md §4.2). Stop at once (exit 1) with no ``NodeStopping``, whose
        reasons are stops on purpose that count no crash; the running tasks end unreported
        (``begin_shutdown`` still interrupts them with grace), so the server, which then sees
        only the disconnect, gives them back with a crash counted and runs them elsewhere.
        The reports kept so far (starts, and the ends of tasks that ended before the signal)
        stay, to be sent before the link closes; nothing queued starts. Failures held back
        (OUTSIDE_KILL_HOLD) were deaths by the signal that reached us too: unreported."""
        self.stopping = True
        self.held.clear()
        self.finishing = False
        self.exit_code = 1
        self._clear_queue()
        for task in self.running.values():
            task.canceled = True  # ends unreported: the server counts the crash

    def connection_lost(self, mono: float) -> None:
        if not self.stopping and self.lost_since is None:
            logger.warning("Connection to the server was lost")
            self._server_lost(mono)

    def _server_lost(self, mono: float, stopped: bool = False) -> None:
        self.exit_code = 1
        if self.reconnects and not stopped:
            if self.lost_since is None:
                self._outlive(mono)
            return
        if self.settings.on_server_lost == "finish-running" and self.running:
            if not self.finishing:
                logger.info("Waiting for finishing running tasks")
            self.finishing = True
            self._clear_queue()
        else:
            self.stopping = True

    # --- outliving the server (reconnect mode) ----------------------------------------------

    def _outlive(self, mono: float) -> None:
        """Keep the running tasks, the hand-offs queued behind them and their reports for the
        server that comes back; drop the local queue, which a restored server runs elsewhere.
        A hand-off stays: its executor may have popped it already, and killing it then could
        leave its work done and the restored server running it again."""
        logger.warning("Server lost; running tasks go on and the node reconnects when the "
                       "server is back")
        self.lost_since = mono
        self.next_attempt = mono
        self._clear_queue()
        # Ends the lost server may not have journaled go again, before the newer ones (starts
        # never go again: a server that takes a task back knows it runs).
        updates = Updates()
        for _, sent in self.unacked:
            updates.finished += sent.finished
            updates.failed += sent.failed
            updates.results += sent.results
        self.unacked.clear()
        updates.started = self.updates.started
        updates.finished += self.updates.finished
        updates.failed += self.updates.failed
        updates.results += self.updates.results
        self.updates = updates

    def resumed(self) -> tuple[Resumed, ...]:
        """What this node holds for the server it lost: (key, instance, variant) of each task
        running (not being canceled) or ended with its report kept."""
        held: dict[TaskKey, Resumed] = {}
        ended = [(f[0], f[1], f[4]) for f in self.updates.finished]
        ended += [(f[0], f[1], f[4]) for f in self.updates.failed]
        for item in ended:  # a task retried here: its latest instance
            if item[0] not in held or held[item[0]][1] < item[1]:
                held[item[0]] = item
        for key, task in self.running.items():
            if not task.canceled:
                held[key] = (key, task.instance, task.allocation.variant)
        return tuple(held.values())

    def time_left(self, mono: float) -> float | None:
        """The worker's life left (None: unlimited), for a registration."""
        return None if self.deadline is None else max(0.0, self.deadline - mono)

    def _resume(self, rejected: tuple[TaskKey, ...], mono: float) -> None:
        """Registered again: kill what the server did not take back and forget its reports;
        the rest are this registration's tasks, whose kept ends go out now. Starts do not:
        a task taken back is running at the server already."""
        held = {item[0]: item[1] for item in self.resumed()}
        refused = set(rejected)
        self._cancel(tuple(key for key in rejected if key in self.running), mono)
        updates = self.updates
        self.updates = Updates(
            finished=[f for f in updates.finished
                      if f[0] not in refused and held.get(f[0]) == f[1]],
            failed=[f for f in updates.failed if f[0] not in refused and held.get(f[0]) == f[1]],
            results=[r for r in updates.results
                     if r[0] not in refused and held.get(r[0]) == r[1]])
        logger.info("Registered again: %d tasks taken back by the server, %d rejected (killed)",
                    len(held) - len(refused & held.keys()), len(refused & held.keys()))
        self.lost_since = None
        self.reserved_for = TaskKey(0)  # the lost server's reservations are gone with it
        self.forget_all()
        if not self.running and not self.queued:
            self.idle_since = mono
        self.flush(mono, force=True)

    def _while_lost(self, mono: float) -> None:
        """Register again every RECONNECT_INTERVAL; give up after RECONNECT_LIMIT, or at the
        worker's time limit, as ``stop`` would have at once (tasks killed, exit 1)."""
        assert self.lost_since is not None
        if mono - self.lost_since >= RECONNECT_LIMIT:
            logger.warning("No server came back for %.0f s; giving up: killing the running "
                           "tasks", mono - self.lost_since)
        elif self.deadline is not None and mono >= self.deadline:
            logger.warning("Worker time limit reached while waiting for the server; killing "
                           "the running tasks")
        else:
            if mono >= self.next_attempt:
                self.next_attempt = mono + RECONNECT_INTERVAL
                self.out.register_again(self.server_uid, self.resumed(), self.time_left(mono))
            return
        self.exit_code = 1
        self.stopping = True

    def on_notification(self, key: TaskKey, instance: InstanceId, message: bytes) -> str:
        """A task's `hq task notify`: forwarded if it runs here; returns the refusal, or ""."""
        task = self.running.get(key)
        if task is None or task.instance != instance:
            return NOT_RUNNING_HERE
        if self.lost_since is not None:
            return NOT_CONNECTED
        self.out.send(TaskNotification(key, instance, message))
        return ""

    # --- starting tasks -------------------------------------------------------------------

    def _group_order(self) -> list[GroupId]:
        """Groups with queued tasks, best first: higher priority, then the older job."""
        order = []
        for gid, tasks in self.queue.items():
            while tasks and tasks[0].key not in self.queued:
                tasks.popleft()  # canceled or retracted meanwhile
            if tasks:
                order.append((-self.groups[gid].priority, tasks[0].key, gid))
        order.sort()
        return [gid for _, _, gid in order]

    def _free_slot(self) -> Slot | None:
        for slot in self.slots:
            if not slot.inflight:
                return slot
        return None

    def start_tasks(self, now: float, mono: float) -> None:
        """Start what fits, best group first; a group that does not fit now does not block
        the groups after it (different resource shapes never wait for each other)."""
        if self.finishing or not self.queued or mono - self.last_beat > self.drop_after:
            return  # (the last: frozen since the timers ran; they drop the node next turn)
        for gid in self._group_order():
            tasks = self.queue[gid]
            group = self.groups[gid]
            while tasks:
                queued = tasks[0]
                if queued.key not in self.queued:
                    tasks.popleft()
                    continue
                slot = self._free_slot()
                if slot is None and len(self.slots) >= self.n_cpus * MAX_EXTRA_EXECUTORS:
                    break
                if queued.nodes:
                    # The server reserved this whole node for it: nothing to allocate.
                    allocation: Allocation | None = Allocation(_multinode_variant(group), ())
                else:
                    allocation = self.allocator.try_allocate(group.request_variants)
                if allocation is None:
                    break
                if slot is None:
                    slot = Slot(len(self.slots))
                    self.slots.append(slot)
                    self.out.start_executor()
                tasks.popleft()
                del self.queued[queued.key]
                self._launch(queued, group, allocation, slot, now, mono, handoff=False)
        self._hand_off(now, mono)
        if self.waiting:
            self._chain_behind(now, mono)

    def _hand_off(self, now: float, mono: float) -> None:
        """Queue the next tasks of the best group, if short, behind the running ones of the
        same group: a round adds one behind each (so that a few queued tasks spread over the
        executors), rounds go on up to the group's ``handoffs``."""
        if not self.queued:
            return
        order = self._group_order()
        if not order:
            return
        best = order[0]  # never let a hand-off jump over a better group's task
        group = self.groups[best]
        depth = group.handoffs
        tell = group.long
        tasks = self.queue[best]
        slots = [slot for slot in self.slots if 0 < len(slot.inflight) <= depth]
        while slots:
            more = []
            for slot in slots:
                current = self.running.get(slot.inflight[-1])
                if (current is None or current.gid != best or current.canceled
                        or current.kill_at is not None):
                    continue
                while tasks and tasks[0].key not in self.queued:
                    tasks.popleft()
                if not tasks:
                    return
                queued = tasks.popleft()
                del self.queued[queued.key]
                current.heir = queued.key
                self._launch(queued, group, current.allocation, slot, now, mono, handoff=True,
                             tell=tell)
                if len(slot.inflight) <= depth:
                    more.append(slot)
            slots = more

    def _chain_behind(self, now: float, mono: float) -> None:
        """A task sent early whose one unfinished prerequisite is the last task on its
        executor goes behind it there, flagged to start only if it ends well, on its CPUs: a
        chain's next step then starts as the step before it ends, without waiting for a turn
        of this loop (which was most of a short step's time). Only when both tasks take the
        same resources, so that the prerequisite's allocation suits it."""
        if self.stopping or self.lost_since is not None:
            return
        for queued in list(self.waiting.values()):
            if queued.blocked or queued.nodes or queued.after is None or len(queued.after) != 1:
                continue
            (prerequisite,) = queued.after
            current = self.running.get(prerequisite)
            if (current is None or current.canceled or current.timed_out
                    or current.kill_at is not None or current.nodes
                    or current.slot.inflight[-1] != prerequisite
                    or len(current.slot.inflight) > CHAIN_DEPTH
                    or (len(current.slot.inflight) > HANDOFF_DEPTH
                        and self.out.room(current.slot.index) < RECORDS_PER_TASK)):
                continue
            group = self.groups[queued.gid]
            if group.request_variants != self.groups[current.gid].request_variants:
                continue
            del self.waiting[queued.key], self.queued[queued.key]
            waiters = self.waiters.get(prerequisite, [])
            if queued in waiters:
                waiters.remove(queued)
                if not waiters:
                    del self.waiters[prerequisite]
            current.heir = queued.key
            self._launch(queued, group, current.allocation, current.slot, now, mono,
                         handoff=True, after_ok=prerequisite)

    def _unchain(self, task: Running, blocked: bool, release: bool) -> None:
        """A task chained behind its prerequisite (``_chain_behind``) that will not start
        there: it waits as it did before, for its prerequisite again or, ``blocked``, for the
        server to cancel it (the prerequisite did not end well). ``release``: give back the
        allocation it took over, unless a task chained behind it takes it over in turn."""
        assert task.after_ok is not None
        queued = self._unlaunch(task)
        if release and (task.heir is None or task.heir not in self.running):
            self.allocator.release(task.allocation)
        queued.after = set() if blocked else {task.after_ok}
        queued.blocked = blocked
        self.waiting[queued.key] = queued
        if not blocked:
            self.waiters.setdefault(task.after_ok, []).append(queued)

    def _launch(self, queued: Queued, group: GroupInfo, allocation: Allocation, slot: Slot,
                now: float, mono: float, handoff: bool, after_ok: TaskKey | None = None,
                tell: bool = False) -> None:
        """Give the task its resources' environment and send it to the slot's executor; a
        hand-off queues behind the running task there and inherits its allocation (``tell``:
        its executor rings when it starts it)."""
        if queued.nodes:
            env, cpu_labels, whole_cpus, mask, numa = self._launch_details(group, allocation,
                                                                           True)
        else:
            last = group.last_launch
            if last is not None and last[0] is allocation:
                details = last[1]
            else:
                launches = group.launches
                cached = launches.get(allocation)
                if cached is None:
                    if len(launches) >= LAUNCH_CACHE:
                        launches.clear()
                    cached = launches[allocation] = self._launch_details(group, allocation,
                                                                         False)
                details = cached
                group.last_launch = (allocation, details)
            env, cpu_labels, whole_cpus, mask, numa = details
            # Copies: what goes out is the receiver's, the cached details stay as they are.
            env, cpu_labels, mask = dict(env), list(cpu_labels), list(mask)
        slot.inflight.append(queued.key)
        self.out.dispatch(slot.index, queued.key, queued.instance, queued.gid, group.body, mask,
                          numa, queued.entry, env, cpu_labels, whole_cpus, queued.nodes,
                          after_ok=after_ok is not None, tell_start=tell)
        if handoff:
            # Reported, and timed, when the executor says it started.
            self.running[queued.key] = Running(queued.key, queued.instance, queued.gid, slot,
                                               allocation, now, None, reported=False,
                                               entry=queued.entry, nodes=queued.nodes,
                                               after_ok=after_ok)
            self.unreported.add(queued.key)
            if tell:
                self.told.add(queued.key)
            return
        deadline = None if group.time_limit is None else mono + group.time_limit
        self.running[queued.key] = Running(queued.key, queued.instance, queued.gid, slot,
                                           allocation, now, deadline)
        if deadline is not None:
            self._push_timer(deadline, queued.key)
        self.updates.started.append((queued.key, queued.instance, now, allocation.variant))

    def _launch_details(self, group: GroupInfo, allocation: Allocation, multinode: bool
                        ) -> tuple[dict[str, str], list[str], bool, list[int], int]:
        """A task's resource environment, CPU labels, whole CPUs, pin mask and NUMA node,
        which depend on its group and allocation only."""
        # Multi-node tasks get none of the resource variables (spec/jobs.md §6).
        env = {} if multinode else dict(group.request_env[allocation.variant])
        if len(group.request_variants) > 1 and not multinode:
            env["HQ_RESOURCE_VARIANT"] = str(allocation.variant)
        cpu_labels: list[str] = []
        whole_cpus = True
        numa = -1
        for taken in allocation.taken:
            if taken.name not in self.allocator.indexed:
                continue
            labels = self.allocator.labels(taken.name, taken)
            env[f"HQ_RESOURCE_VALUES_{env_name(taken.name)}"] = ",".join(labels)
            if taken.name == "cpus":
                cpu_labels = labels
                whole_cpus = all(amount == FRACTIONS for _, amount in taken.items)
            elif taken.name == "gpus/nvidia":
                env["CUDA_VISIBLE_DEVICES"] = ",".join(labels)
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            elif taken.name == "gpus/amd":
                env["ROCR_VISIBLE_DEVICES"] = ",".join(labels)
        mask = [int(c) for c in cpu_labels] if self.pin else []
        cpu_numa = self.cpu_numa
        if mask and cpu_numa:
            # Memory goes where the CPUs are: bound to their NUMA node when they share one.
            numas = {cpu_numa.get(c) for c in mask}
            if len(numas) == 1 and None not in numas:
                numa = numas.pop()  # type: ignore[assignment]
        return env, cpu_labels, whole_cpus, mask, numa

    # --- executors' reports ---------------------------------------------------------------

    def on_started(self, executor: int, key: TaskKey, pid: int, started: float, now: float,
                   mono: float, in_process: bool = False) -> None:
        """The executor spawned the task's program as ``pid`` at ``started`` (epoch), or runs
        the task (a function) ``in_process``, ``pid`` being its own."""
        task = self.running.get(key)
        if task is None or task.slot is not self.slots[executor]:
            return
        task.pid = pid
        task.in_process = in_process
        if not task.reported:
            self._report_start(task, started, now, mono)
        if task.signal_pending is not None:
            self._signal(task, task.signal_pending)
            task.signal_pending = None

    def on_ended(self, executor: int, key: TaskKey, ok: bool, skipped: bool, started: float,
                 ended: float, error: bytes, now: float, mono: float,
                 result: tuple[int, int, bytes] | None = None) -> None:
        """The executor reports a task's end: ``ok``, failed with ``error``, or ``skipped``
        (never spawned: canceled, or the node is stopping); a function task's ``result``
        (kind, size, blob: hqshm/node/results.py) goes to the server with it."""
        slot = self.slots[executor]
        if slot.inflight and slot.inflight[0] == key:
            slot.inflight.popleft()
        task = self.running.get(key)
        if task is None or task.slot is not slot:
            return
        if skipped and task.after_ok is not None and not task.canceled:
            self._unchain(task, blocked=True, release=True)  # its prerequisite did not end well
            return
        if not skipped:
            group = self.groups[task.gid]
            group.ran += 1
            group.ran_time += max(0.0, ended - started)
            if not task.reported:
                self._report_start(task, started, now, mono)
        if task.kill_at is not None and task.pid > 0 and not task.in_process:
            # Killed (cancel, time limit, shutdown): its main process is gone; whatever else
            # lives in its process group (`cmd &` ignores SIGINT) goes too. (An executor that
            # ran the task inside it lives on, and killed the rest of the task's group itself.)
            self.out.send_signal(task.pid, Signal.KILL)
        if result is not None and not task.canceled and not task.timed_out:
            self.updates.results.append((key, task.instance, *result))
        self._ended(task, ok, ended, "" if ok else error.decode("utf-8", "replace"), mono,
                    hold=True)

    def executor_died(self, executor: int, cause: str, now: float, mono: float,
                      as_program: str = "") -> None:
        """The executor died of ``cause`` ("killed by signal 9 (SIGKILL)"); the loop started
        a fresh one and collected every report the dead one left. ``as_program`` is the same
        end in the words of a program's ("Program terminated with exit code 3."): the error of
        a function task that ran inside the executor, whose end it was.

        Only the first task in flight was the executor's: it ran it, or was preparing it, when
        it died (whether the task killed it or not). The hand-offs queued behind it were never
        popped, so they go back to the front of the local queue, unreported, and start again
        on a free executor: failing them would punish innocent tasks (issue 8, item 5)."""
        slot = self.slots[executor]
        self.slots[executor] = Slot(executor)
        tasks = [self.running[key] for key in slot.inflight if key in self.running]
        # Chained tasks wait again: blocked behind the task that dies with the executor (or
        # behind one blocked so), else for their prerequisite, which goes back to its queue.
        # The dead task's end gives back the allocation they all shared.
        fails = {tasks[0].key} if tasks else set()
        for task in tasks[1:]:
            if task.after_ok is None or task.canceled:
                continue
            blocked = self.lost_since is not None or task.after_ok in fails
            if blocked:
                fails.add(task.key)
            self._unchain(task, blocked=blocked, release=False)
        tasks = [task for task in tasks if task.key in self.running]
        for task in reversed(tasks[1:]):  # reversed: each goes to the front of its queue
            # Started or reported cannot be (a hand-off starts only after the task before it
            # ended); a canceled one just ends, unreported.
            if not (task.canceled or task.reported or task.pid > 0):
                if self.lost_since is None:
                    self._requeue(task)
                else:  # nothing starts without a server: dropped, as the local queue was
                    del self.running[task.key]
                    self._drop_unreported(task.key)
                    self._settle(task.gid)
        ending = [task for task in tasks if task.key in self.running]
        # They end in order and share one allocation: each leaves it to the next, so that
        # the last gives it back once (a canceled hand-off behind one that went back to the
        # queue released it a second time).
        for task, after in pairwise(ending):
            if after.allocation is task.allocation:
                task.heir = after.key
        for task in ending:
            if task.key in self.running:
                if task.in_process and as_program:
                    error = as_program
                else:
                    error = (f"The executor running the task on worker {self.worker_id} "
                             f"({self.settings.hostname}) died: {cause}")
                self._ended(task, False, now, error, mono)

    def _requeue(self, task: Running) -> None:
        """A hand-off that never started: back to the front of its group's queue."""
        queued = self._unlaunch(task)
        self.queue.setdefault(task.gid, deque()).appendleft(queued)
        self.idle_since = None

    def _unlaunch(self, task: Running) -> Queued:
        """A hand-off that never started, queued on the node again as it came."""
        del self.running[task.key]
        self._drop_unreported(task.key)
        queued = Queued(task.key, task.instance, task.gid, task.entry, task.nodes)
        self.queued[queued.key] = queued
        return queued

    def _drop_unreported(self, key: TaskKey) -> None:
        self.unreported.discard(key)
        self.told.discard(key)

    def _report_start(self, task: Running, started: float, now: float, mono: float) -> None:
        if task.key in self.unreported and task.key not in self.told:
            self.updates.quiet_starts += 1  # a hand-off's: nobody waits to hear of it
        task.reported = True
        self._drop_unreported(task.key)
        task.started = started
        limit = self.groups[task.gid].time_limit
        if limit is not None:
            task.deadline = mono + limit - max(0.0, now - started)
            self._push_timer(task.deadline, task.key)
        self.updates.started.append((task.key, task.instance, started, task.allocation.variant))

    def _ended(self, task: Running, ok: bool, ended: float, error: str, mono: float,
               hold: bool = False) -> None:
        """``hold``: a failure by an outside signal waits OUTSIDE_KILL_HOLD (a task's own end;
        an executor ignores SIGTERM while the node lives)."""
        del self.running[task.key]
        if ok and not task.canceled and not task.timed_out:
            self._finished_here(task.key)
        else:
            self._failed_here(task.key)
        if not task.reported:
            self._drop_unreported(task.key)
        handed_on = task.heir is not None and task.heir in self.running
        if not handed_on:
            self.allocator.release(task.allocation)  # else the hand-off successor keeps it
        if not self.running and not self.queued:
            self.idle_since = mono
        if self.forgotten:
            self._settle(task.gid)
        if task.canceled:
            return
        variant = task.allocation.variant
        if task.timed_out:
            self.updates.failed.append((task.key, task.instance, task.started, ended, variant,
                                        errors.TIME_LIMIT_REACHED, False))
        elif ok:
            self.updates.finished.append((task.key, task.instance, task.started, ended, variant))
            if handed_on:
                self.updates.quiet_ends += 1
        else:
            # Retryable only if the program itself ran and failed (it had a pid).
            failed = (task.key, task.instance, task.started, ended, variant, error, task.pid > 0)
            if hold and task.kill_at is None and _outside_kill(error):
                self.held.append((mono + OUTSIDE_KILL_HOLD, failed))
            else:
                self.updates.failed.append(failed)

    # --- signals --------------------------------------------------------------------------

    def _kill(self, task: Running, mono: float) -> None:
        """SIGINT to the task's process group now, SIGKILL after the grace period."""
        task.kill_at = mono + KILL_GRACE
        self._push_timer(task.kill_at, task.key)
        self._signal(task, Signal.INTERRUPT)

    def _signal(self, task: Running, signal: Signal) -> None:
        """Signal the task's process group, or as soon as it has one."""
        if task.pid <= 0:
            task.signal_pending = signal
        elif task.in_process and signal is Signal.INTERRUPT:
            self.out.interrupt_function(task.slot.index, task.key, task.pid)
        else:
            self.out.send_signal(task.pid, signal)

    # --- time -----------------------------------------------------------------------------

    def timers(self, mono: float) -> None:
        """Whatever is due: time limits, kill escalation, heartbeat, the server's silence,
        the worker's time limit, the idle timeout."""
        heap = self.timer_heap
        if heap and heap[0][0] <= mono:
            self._task_timers(mono)
        if self.lost_since is not None:
            if not self.stopping:
                self._while_lost(mono)
            return  # no heartbeats, silence or idleness without a server
        heartbeat = self.settings.heartbeat
        if mono - self.last_beat > self.drop_after and not self.stopping:
            # Our loop was frozen (SIGSTOP, a stalled machine) for longer than the server
            # waits for our heartbeats: it has dropped us and its StopNode may still be on its
            # way; start nothing more, kill what we hold.
            logger.warning("This worker was unresponsive for %.1f s, longer than its heartbeat "
                           "timeout (%.1f s): the server has dropped it; killing its tasks",
                           mono - self.last_beat, self.drop_after)
            self._drop()
        if mono - self.last_beat >= heartbeat:
            self.last_beat = mono
            self.out.send(Heartbeat())
        silence = max(SERVER_SILENCE_LIMIT * heartbeat, 10.0)
        if mono - self.last_heard > silence and not self.stopping:
            logger.warning("The server has not answered for %.0f s", mono - self.last_heard)
            self.last_heard = mono
            self._server_lost(mono)
        if self.deadline is not None and mono >= self.deadline and not self.stopping:
            logger.info("Worker time limit reached")
            self._leave(StopReason.TIME_LIMIT, mono)
        if (self.idle_timeout is not None and self.idle_since is not None
                and not self.running and not self.queued and not self.reserved_for
                and mono - self.idle_since >= self.idle_timeout and not self.stopping):
            logger.info("Idle timeout reached")
            self._leave(StopReason.IDLE_TIMEOUT, mono)

    def _task_timers(self, mono: float) -> None:
        """Time limits and kill escalation of the tasks with a timer due, in the order of
        ``running``: the entries due are taken off the heap, those still live go back."""
        heap, running = self.timer_heap, self.running
        popped: list[tuple[float, TaskKey]] = []
        due: dict[TaskKey, Running] = {}
        while heap and heap[0][0] <= mono:
            entry = heapq.heappop(heap)
            if not self._live_timer(entry):
                continue  # the task left, or the timer changed
            task = running[entry[1]]
            popped.append(entry)
            if ((task.deadline is not None and mono >= task.deadline and task.kill_at is None)
                    or (task.kill_at is not None and mono >= task.kill_at)):
                due[task.key] = task
        tasks = list(due.values())
        if len(tasks) > 1:
            tasks = [task for task in running.values() if due.get(task.key) is task]
        for task in tasks:
            if task.deadline is not None and mono >= task.deadline and task.kill_at is None:
                task.timed_out = True
                self._kill(task, mono)
            elif task.kill_at is not None and mono >= task.kill_at:
                task.kill_at = mono + KILL_GRACE
                self._push_timer(task.kill_at, task.key)
                self._signal(task, Signal.KILL)
        for entry in popped:  # an overdue deadline of a task being killed still counts
            if self._live_timer(entry):
                heapq.heappush(heap, entry)

    def _push_timer(self, when: float, key: TaskKey) -> None:
        heap = self.timer_heap
        heapq.heappush(heap, (when, key))
        if len(heap) > 64 + 4 * len(self.running):  # mostly dead entries: keep the live
            self.timer_heap = [entry for entry in heap if self._live_timer(entry)]
            heapq.heapify(self.timer_heap)

    def _live_timer(self, entry: tuple[float, TaskKey]) -> bool:
        task = self.running.get(entry[1])
        return task is not None and (entry[0] == task.deadline or entry[0] == task.kill_at)

    def _leave(self, reason: str, mono: float) -> None:
        self.flush(mono, force=True)
        self.out.send(NodeStopping(reason))
        self.exit_code = 0
        self.stopping = True

    def flush(self, mono: float, force: bool = False) -> None:
        """Send the batched updates: at once when forced or when capacity is idle with nothing
        queued (the server must refill us), else once FLUSH_DELAY passed since the last; kept
        while the server is lost."""
        while self.held and (force or self.held[0][0] <= mono):
            self.updates.failed.append(self.held.popleft()[1])
        if not self.updates or self.lost_since is not None:
            return
        # Ends go at once when they are as many as the tasks this node can still start
        # without the server (queued, or handed off and not started): half of what it held
        # is done, and the server refills it before it runs dry. Waiting out FLUSH_DELAY
        # let a node of short tasks run dry first, and its CPUs idled for a round trip.
        ends = len(self.updates.finished) + len(self.updates.failed)
        low = ends > 0 and ends >= len(self.queued) + len(self.unreported)
        urgent = force or low or (not self.updates.only_quiet()
                                  and len(self.queued) == len(self.waiting)
                                  and self._free_slot() is not None)
        if not urgent and mono - self.last_flush < FLUSH_DELAY:
            return
        self.last_flush = mono
        updates, self.updates = self.updates, Updates()
        ended = {item[0] for item in updates.finished} | {item[0] for item in updates.failed}
        started = [s for s in updates.started if s[0] not in ended]
        # In parts that the server's decode budget (MAX_NODE_VALUES) takes: reports kept
        # through a long loss of the server can be many.
        # Results go first, in frames of a bounded size: a result is in the server's store
        # before the task's end that a client waits for. The server stores a frame's results
        # before it reads its ends, so the last part rides with the first ends: one frame a
        # flush, as for program tasks, instead of two.
        parts = _result_parts(updates.results)
        last: tuple[ResultItem, ...] = parts.pop() if parts else ()
        for part in parts:
            self._report(TaskUpdates(results=part), mono)
        step = REPORT_PART
        for at in range(0, max(len(started), len(updates.finished), len(updates.failed)), step):
            self._report(TaskUpdates(tuple(started[at : at + step]),
                                     tuple(updates.finished[at : at + step]),
                                     tuple(updates.failed[at : at + step]), last), mono)
            last = ()
        if last:  # results of tasks whose ends went before (a result the node held back)
            self._report(TaskUpdates(results=last), mono)

    def _report(self, report: TaskUpdates, mono: float) -> None:
        self.out.report(report)
        if self.reconnects:
            self.unacked.append((mono, report))

    def poll_timeout_ms(self, mono: float) -> int:
        """How long the loop may wait for input before a timer or a flush is due."""
        if self.lost_since is not None:  # no heartbeats or flushes: the next attempt
            timeout = min(IDLE_POLL, max(0.0, self.next_attempt - mono))
        else:
            timeout = min(IDLE_POLL, max(0.0, self.last_beat + self.settings.heartbeat - mono))
        if self.updates and self.lost_since is None:
            timeout = max(0.0, self.last_flush + FLUSH_DELAY - mono)
        if len(self.unreported) > len(self.told):
            timeout = min(timeout, DRAIN_TICK)
        if self.held:
            timeout = min(timeout, max(0.0, self.held[0][0] - mono))
        heap = self.timer_heap
        while heap and not self._live_timer(heap[0]):
            heapq.heappop(heap)
        if heap:
            timeout = min(timeout, max(0.0, heap[0][0] - mono))
        return int(timeout * 1000) + 1

    # --- shutdown -------------------------------------------------------------------------

    def begin_shutdown(self, mono: float) -> float:
        """Interrupt every running task (kill it, when the node was dropped: it runs elsewhere
        already); returns until when the loop waits for them to end."""
        for task in self.running.values():
            if self.dropped:
                task.kill_at = mono + KILL_GRACE
                self._push_timer(task.kill_at, task.key)
                self._signal(task, Signal.KILL)
            else:
                self._kill(task, mono)
        self.escalate_at = mono + KILL_GRACE
        return mono + KILL_GRACE + 1.0

    def escalate_shutdown(self, mono: float) -> None:
        """Once the grace period is over, SIGKILL to whatever still runs."""
        if self.escalate_at is not None and mono > self.escalate_at:
            for task in self.running.values():
                self._signal(task, Signal.KILL)
            self.escalate_at = None

    # --- invariants -----------------------------------------------------------------------

    def check(self) -> None:
        """Invariants; tests call it at the end of every scenario."""
        self.allocator.check()
        for key, queued in self.queued.items():
            assert key not in self.running, f"task {key} is queued and running"
            if key in self.waiting:
                assert self.waiting[key] is queued and queued not in self.queue.get(
                    queued.gid, ()), f"waiting task {key} is in its group's queue"
                assert queued.blocked or queued.after, f"task {key} waits for nothing"
            else:
                assert queued in self.queue[queued.gid], f"queued task {key} is in no queue"
        assert self.waiting.keys() <= self.queued.keys(), "a waiting task is not queued"
        inflight: dict[TaskKey, Slot] = {}
        for index, slot in enumerate(self.slots):
            assert slot.index == index, (slot.index, index)
            assert len(slot.inflight) <= 1 + RING_DEPTH, "too many hand-offs behind a task"
            for key in slot.inflight:
                assert key not in inflight, f"task {key} is on two executors"
                inflight[key] = slot
        assert inflight.keys() == self.running.keys(), (inflight, self.running)
        for key, task in self.running.items():
            assert inflight[key] is task.slot, f"task {key} is not on its executor"
            if task.heir is not None and task.heir in self.running:
                heir = self.running[task.heir]
                assert heir.allocation is task.allocation, "a hand-off not on its CPUs"
                assert heir.slot is task.slot, "a hand-off on another executor"
            if task.after_ok is not None and task.after_ok in self.running:
                order = list(task.slot.inflight)
                at = order.index(key)
                assert at > 0 and order[at - 1] == task.after_ok, (
                    f"task {key} is not right behind the task it was chained to")
        if not self.running:
            assert self.allocator.is_idle(), "resources held with nothing running"
        assert self.unreported == {k for k, t in self.running.items() if not t.reported}, (
            "the unreported hand-offs are not those running unreported")
        assert self.told <= self.unreported, "a hand-off told started that is not unreported"
        timers = set(self.timer_heap)
        for key, task in self.running.items():
            for due in (task.deadline, task.kill_at):
                assert due is None or (due, key) in timers, f"task {key}: a timer not kept"


def _multinode_variant(group: GroupInfo) -> int:
    return next((i for i, v in enumerate(group.request_variants) if v.n_nodes), 0)


def _result_parts(items: list[ResultItem]) -> list[tuple[ResultItem, ...]]:
    """Results in reports of at most RESULT_PART_BYTES (one larger result goes alone) and
    REPORT_PART items."""
    parts: list[tuple[ResultItem, ...]] = []
    start, size = 0, 0
    for at, item in enumerate(items):
        if at > start and (size + len(item[4]) > RESULT_PART_BYTES
                           or at - start >= REPORT_PART):
            parts.append(tuple(items[start:at]))
            start, size = at, 0
        size += len(item[4])
    if start < len(items):
        parts.append(tuple(items[start:]))
    return parts
