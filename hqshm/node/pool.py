"""The node's side of its executors: processes and rings, not tasks.

The pool forks executors (before the node opens any socket: fork and ZeroMQ do not mix), pushes
their RUN and DEFINE records, writes the control page they read before each spawn, collects
their reports, replaces the dead and stops them all. Which task runs on which executor, and what
to do when one dies, is the node core's business (hqshm/node/core.py); the pool knows executors
by index, which is how the core names them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import signal
import sys
import time
from array import array
from collections.abc import Callable

from hqshm.cluster.frozen import field, mutable
from hqshm.node import launch
from hqshm.node.core import HANDOFF_DEPTH, RECORDS_PER_TASK, RING_DEPTH
from hqshm.node.executor import Executor, remove_function_dir
from hqshm.node.ring import Record, RecordKind, Ring, drain_doorbell, open_doorbell

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Groups one FORGET record names: 8 bytes each within a slot's payload area (16 KiB).
FORGET_PER_RECORD = 2000
# A submission ring holds the records of at most 1 + HANDOFF_DEPTH tasks that the executor
# has not popped (the one it is about to run and the hand-offs behind it): FORGET, DEFINE and
# RUN each, so a push never waits; a chain's steps queue deeper only where it has room
# (``NodeCore._chain_behind``). A completion ring holds their STARTED and ENDED records, twice
# over for hand-offs, so that an executor that runs them all before the node drains its ring
# never waits; a chain's deeper queue fits once, since its executor rings half-way
# (executor.CHAIN_REFILL_AT). Each slot the rings cycle through is a page of the node's and
# the executor's memory (issue 9, item 4), hence no more slots than that.
SUB_CAPACITY = RECORDS_PER_TASK * (1 + HANDOFF_DEPTH)
DONE_CAPACITY = max(4 * (1 + HANDOFF_DEPTH), 2 * (1 + RING_DEPTH))


def _compact() -> None:
    """Drop the garbage of the node's start-up (its command line's parsers, detection) and
    give the freed heap back to the system before the executors copy the node's memory map:
    each executor counts every page the node has when it forks (issue 9, item 4: 0.8 MB an
    executor, 0.5 MB the node)."""
    import gc

    gc.collect()
    with contextlib.suppress(AttributeError, OSError):  # glibc's; elsewhere nothing to trim
        ctypes.CDLL(None).malloc_trim(0)


def _die_with_parent() -> None:
    """SIGTERM when the node dies, however it dies: the executor then kills its task's
    process group and removes what the node would have (hqshm/node/executor.py)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Control:
    """A small shared page the node writes and executors read before each spawn.

    Word 0 is the node's stop flag; word 1 its worker id, known only once it registered,
    after the executors were forked (it goes into stream file headers); words 2+SKIPS*i onwards
    are the keys executor i must skip if it pops them, the node's last SKIPS skips for it
    (written in turn: as many as tasks can wait in its ring). They let the node take back a
    task already queued in an executor's ring (a hand-off successor being canceled, or
    everything at shutdown) without a round trip. Word 2+SKIPS*capacity+i is the key of the
    function task that executor i runs in its own process and the node interrupts
    (hqshm/node/warm.py): SIGINT says "interrupt", the word says which task, so that a late
    signal for a task that ended hits nothing else.
    """

    _SKIP = 2
    SKIPS = 1 + RING_DEPTH

    def __init__(self, executors: int) -> None:
        self.capacity = executors
        self._interrupts = self._SKIP + self.SKIPS * executors
        self.page = mmap.mmap(-1, max(mmap.PAGESIZE, 8 * (self._interrupts + executors)))
        # The page as 64-bit words (this machine's order: node and executors share it): an
        # index reads one without struct's call, and executors read some per task.
        self._words = memoryview(self.page).cast("Q")
        self._next_skip = [0] * executors  # the node's: which of an executor's words is next

    def _get(self, index: int) -> int:
        return self._words[index]

    def _set(self, index: int, value: int) -> None:
        self._words[index] = value

    def close(self) -> None:
        self._words.release()
        self.page.close()

    def stop(self) -> None:
        self._set(0, 1)

    @property
    def stopping(self) -> bool:
        return self._get(0) != 0

    @property
    def worker_id(self) -> int:
        return self._get(1)

    @worker_id.setter
    def worker_id(self, value: int) -> None:
        self._set(1, value)

    def skip(self, executor: int, key: int) -> None:
        turn = self._next_skip[executor]
        self._next_skip[executor] = (turn + 1) % self.SKIPS
        # +1 so that key 0 differs from "nothing"
        self._set(self._SKIP + self.SKIPS * executor + turn, key + 1)

    def must_skip(self, executor: int, key: int) -> bool:
        words = self._words
        first = self._SKIP + self.SKIPS * executor
        return words[0] != 0 or key + 1 in words[first:first + self.SKIPS].tolist()

    def interrupt(self, executor: int, key: int) -> None:
        self._set(self._interrupts + executor, key + 1)

    def interrupted(self, executor: int, key: int) -> bool:
        return self._words[self._interrupts + executor] == key + 1

    def clear_interrupt(self, executor: int) -> None:
        """The executor's, before it reports a function task started (the node marks a task
        only after): a task run again under the same key is not interrupted by the mark of
        its last run."""
        self._set(self._interrupts + executor, 0)


@mutable
class ExecutorHandle:
    index: int
    pid: int
    sub: Ring
    done: Ring
    pidfd: int = -1
    # RUN records pushed whose ENDED is not read yet: an executor with none has nothing to
    # report, so ``drain`` leaves its ring alone.
    unanswered: int = 0
    defined: set[int] = field(default_factory=set)  # groups whose program it has been sent
    # Groups it was sent that are gone since: it drops them before its next task (a FORGET
    # record). An ordered set: those past one record's worth go with the next task.
    forgets: dict[int, None] = field(default_factory=dict)


class ExecutorPool:
    """Forks executors, hands them tasks, collects their reports, replaces the dead."""

    def __init__(
        self,
        size: int,
        node: launch.NodeContext,
        before_serve: Callable[[], None] | None = None,
        own_dir: str | None = None,
    ) -> None:
        """``own_dir``: the node's own temporary directory (no --work-dir), which executors
        remove should the node die without removing it (SIGKILL)."""
        self.node = node
        self.own_dir = own_dir
        self.doorbell_r, self.doorbell_w = open_doorbell()
        self.handles: list[ExecutorHandle] = []
        self.before_serve = before_serve
        self.control = Control(size * 8)
        self.generation = 0  # executors started so far: the loop watches new pidfds on change
        _compact()
        for index in range(size):
            self.handles.append(self._start(index))

    def _start(self, index: int) -> ExecutorHandle:
        # No spinning: on a node with as many executors as CPUs, a spinning executor takes a
        # CPU from the tasks; a sleeping one wakes within tens of microseconds.
        sub = Ring.create("hqshm-sub", capacity=SUB_CAPACITY, spin=0.0)
        done = Ring.create("hqshm-done", capacity=DONE_CAPACITY, spin=0.0)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the executor
            code = 0
            try:
                _die_with_parent()
                if os.getppid() != parent:
                    os._exit(1)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                # A replacement is forked while the node's signal wake-up fd is set: its
                # handlers must not wake the node's loop.
                signal.set_wakeup_fd(-1)
                os.close(self.doorbell_r)
                if self.before_serve is not None:
                    self.before_serve()
                executor = Executor(sub, done, self.doorbell_w, self.node, self.control, index,
                                    node_pid=parent, own_dir=self.own_dir)
                executor.serve()
            except BaseException:  # noqa: BLE001 - report and leave, never return to the node
                logger.exception("Executor %d failed", index)
                code = 1
            finally:
                os._exit(code)
        # Both sides hold the rings now: drop their names so that not even a SIGKILL of the
        # node can leave them behind in /dev/shm.
        sub.unlink_names()
        done.unlink_names()
        handle = ExecutorHandle(index, pid, sub, done)
        self.generation += 1
        with contextlib.suppress(OSError, AttributeError):
            handle.pidfd = os.pidfd_open(pid)
        return handle

    def grow(self) -> ExecutorHandle:
        """One more executor (fractional requests can run more tasks than CPUs)."""
        handle = self._start(len(self.handles))
        self.handles.append(handle)
        return handle

    def dispatch(
        self,
        handle: ExecutorHandle,
        key: int,
        instance: int,
        gid: int,
        body: bytes,
        cpus: list[int],
        numa: int,
        payload: bytes,
        flags: int = 0,
    ) -> None:
        """Queue a task on an executor (behind the one it runs, for a hand-off), after what
        it must forget. ``flags``: ``RecordFlag.AFTER_OK`` for a task to run only if the one
        before it ends well, ``RecordFlag.TELL_START`` for one whose start the node waits to
        hear of."""
        if gid not in handle.defined:
            handle.forgets.pop(gid, None)  # defined anew below: the program is replaced
        if handle.forgets:
            self._push_forgets(handle)
        if gid not in handle.defined:
            handle.sub.push(key=gid, instance=0, kind=RecordKind.DEFINE, payload=body)
            handle.defined.add(gid)
        handle.sub.push(key=key, instance=instance, kind=RecordKind.RUN, cpus=cpus, numa=numa,
                        payload=payload, flags=flags)
        handle.unanswered += 1  # once pushed: a push that fails (RingFull) queued nothing

    def _push_forgets(self, handle: ExecutorHandle) -> None:
        """One FORGET record with the oldest groups the executor must drop."""
        gids = array("Q")
        for gid in handle.forgets:
            gids.append(gid)
            if len(gids) == FORGET_PER_RECORD:
                break
        if gids.itemsize != 8:
            raise RuntimeError("array('Q') is not 8 bytes here")
        handle.sub.push(key=len(gids), instance=0, kind=RecordKind.FORGET,
                        payload=_little_endian(gids))
        for gid in gids:
            del handle.forgets[gid]

    def forget(self, gid: int) -> None:
        """A group the node dropped: each executor that has its program drops it too."""
        for handle in self.handles:
            if gid in handle.defined:
                handle.defined.discard(gid)
                handle.forgets[gid] = None

    def forget_groups(self) -> None:
        """Send each group's program again before its next task: group ids are a server's,
        and a node registered with a new server gets new groups under the old ids. The old
        programs are dropped (FORGET) before the next task."""
        for handle in self.handles:
            handle.forgets.update(dict.fromkeys(handle.defined))
            handle.defined.clear()

    def set_worker_id(self, worker_id: int) -> None:
        """The id the server gave this node, for executors that start stream files."""
        self.control.worker_id = worker_id

    def skip(self, handle: ExecutorHandle, key: int) -> None:
        """Ask the executor not to start a queued task (it reports it SKIPPED)."""
        self.control.skip(handle.index, key)

    def interrupt(self, handle: ExecutorHandle, key: int) -> None:
        """Mark the function task that the executor runs in its own process as interrupted;
        the caller then sends SIGINT."""
        self.control.interrupt(handle.index, key)

    def drain(self, rang: bool = True) -> list[tuple[ExecutorHandle, Record]]:
        """Every report waiting in the completion rings; ``rang``: the doorbell is readable
        (else it is left alone: it was empty, or rang since and wakes the next poll)."""
        if rang:
            drain_doorbell(self.doorbell_r)
        reports = []
        ended = RecordKind.ENDED
        for handle in self.handles:
            if not handle.unanswered:
                continue
            for record in handle.done.pop_ready():
                if record.kind is ended:
                    handle.unanswered -= 1
                reports.append((handle, record))
        return reports

    def reap(self) -> list[tuple[ExecutorHandle, int]]:
        """Executors that died, with their wait status; each is replaced by a fresh one."""
        dead = []
        for i, handle in enumerate(self.handles):
            try:
                pid, status = os.waitpid(handle.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = handle.pid, 0
            if pid == 0:
                continue
            logger.warning("Executor %d (pid %d) died; starting a new one", i, handle.pid)
            self._discard(handle)
            fresh = self._start(i)
            self.handles[i] = fresh
            dead.append((handle, status))
        return dead

    def _discard(self, handle: ExecutorHandle) -> None:
        """A dead executor's rings and pidfd go, and the directory of its warm function tasks,
        which it removes itself unless it was killed (a function task's time limit, or one that
        ended the process)."""
        remove_function_dir(self.node, handle.pid)
        if handle.pidfd >= 0:
            os.close(handle.pidfd)
        handle.sub.close()
        handle.done.close()

    def pidfds(self) -> list[int]:
        return [h.pidfd for h in self.handles if h.pidfd >= 0]

    def stop(self, timeout: float = 2.0) -> None:
        self.control.stop()
        for handle in self.handles:
            with contextlib.suppress(Exception):
                handle.sub.push(key=0, instance=0, kind=RecordKind.STOP, timeout=0.1)
        deadline = time.monotonic() + timeout
        for handle in self.handles:
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(handle.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                time.sleep(0.005)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(handle.pid, 0)
            self._discard(handle)
        os.close(self.doorbell_r)
        os.close(self.doorbell_w)
        self.control.close()


def _little_endian(values: array) -> bytes:
    """The record's byte order, whatever the machine's."""
    if sys.byteorder != "little":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()
