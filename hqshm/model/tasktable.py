"""Task and job states, stored by column.

A submit of N tasks is one ``TaskTable``: numpy columns for id, state, instance, worker and
times (about 30 bytes a task), plus sparse dicts for the rare things (errors, multi-node worker
lists). Counts per state are kept up to date on every change, so `job list` over a million tasks
reads six integers. Pure: no I/O and no clock; callers pass times in.
"""

from __future__ import annotations

from collections.abc import Iterable

from hqshm.cluster.firstuse import np
from hqshm.cluster.frozen import field, mutable
from hqshm.cluster.ids import TaskId
from hqshm.model.scanner import U32_MAX
from hqshm.model.taskstates import TaskState


@mutable
class TaskTable:
    ids: np.ndarray  # TaskId as uint32, sorted ascending
    state: np.ndarray = field(init=False)  # uint8
    instance: np.ndarray = field(init=False)  # InstanceId as uint32
    worker: np.ndarray = field(init=False)  # WorkerId as uint32, 0 = never ran
    started: np.ndarray = field(init=False)  # float64 epoch seconds, nan = never
    ended: np.ndarray = field(init=False)
    errors: dict[int, str] = field(default_factory=dict)  # row -> error text
    counts: list[int] = field(default_factory=lambda: [0] * len(TaskState))
    # The counts of the job that holds the table, changed along with ``counts``: a job of
    # thousands of submits reads its counts on every task event, and summing them cost
    # 25 ms a task at 2,000 submits. Set by ``Job.add_submits``.
    totals: list[int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.state = np.zeros(n, dtype=np.uint8)
        self.instance = np.zeros(n, dtype=np.uint32)
        self.worker = np.zeros(n, dtype=np.uint32)
        self.started = np.full(n, np.nan)
        self.ended = np.full(n, np.nan)
        self.counts[TaskState.WAITING] = n

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, task_id: TaskId) -> int | None:
        if not 0 <= task_id <= U32_MAX:
            return None
        # Searched as the column's own type: a Python int would make numpy convert the whole
        # column first (2 ms for a million tasks, on every task event).
        i = int(np.searchsorted(self.ids, np.uint32(task_id)))
        if i < len(self.ids) and int(self.ids[i]) == task_id:
            return i
        return None

    def set_state(self, row: int, state: TaskState) -> TaskState:
        old = TaskState(int(self.state[row]))
        if old != state:
            self.counts[old] -= 1
            self.counts[state] += 1
            if self.totals is not None:
                self.totals[old] -= 1
                self.totals[state] += 1
            self.state[row] = state
        return old

    def rows_in_states(self, states: Iterable[TaskState]) -> np.ndarray:
        wanted = np.array(sorted(int(s) for s in states), dtype=np.uint8)
        return np.nonzero(np.isin(self.state, wanted))[0]

    def set_states(self, rows: np.ndarray, state: TaskState) -> None:
        """Vectorised transition of many rows (e.g. cancel of a whole array)."""
        if len(rows) == 0:
            return
        old = np.bincount(self.state[rows], minlength=len(TaskState)).tolist()
        for counts in (self.counts, self.totals):
            if counts is not None:
                for s, c in enumerate(old):
                    counts[s] -= c
                counts[state] += len(rows)
        self.state[rows] = state

    @property
    def unfinished(self) -> int:
        return self.counts[TaskState.WAITING] + self.counts[TaskState.RUNNING]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ids, self.state, self.instance, self.worker,
                                      self.started, self.ended))


def merge_counts(tables: Iterable[TaskTable]) -> tuple[int, int, int, int, int, int]:
    total = [0] * len(TaskState)
    for table in tables:
        for i, c in enumerate(table.counts):
            total[i] += c
    return tuple(total)  # type: ignore[return-value]
