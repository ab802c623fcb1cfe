"""Columnar task states and the job state word (spec/jobs.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hqshm.model.taskstates import COMPLETED, STATE_NAMES, TaskState, job_state, parse_states
from hqshm.model.tasktable import TaskTable, merge_counts

W, R, F, X, C, A = (
    TaskState.WAITING,
    TaskState.RUNNING,
    TaskState.FINISHED,
    TaskState.FAILED,
    TaskState.CANCELED,
    TaskState.ABORTED,
)


def counts(**by_state: int) -> list[int]:
    out = [0] * len(TaskState)
    for name, n in by_state.items():
        out[TaskState[name.upper()]] = n
    return out


def table(*ids: int) -> TaskTable:
    return TaskTable(np.array(ids, dtype=np.uint32))


def assert_counts_match(t: TaskTable) -> None:
    assert t.counts == np.bincount(t.state, minlength=len(TaskState)).tolist()


# --- the job state word ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("c", "is_open", "word"),
    [
        # 1. any RUNNING wins over everything
        (counts(running=1, waiting=3, failed=2, canceled=1), False, "RUNNING"),
        (counts(running=1), True, "RUNNING"),
        # 2. any task not completed
        (counts(waiting=1, failed=5, aborted=1), False, "WAITING"),
        (counts(waiting=1), True, "WAITING"),
        # 3.-5. completed jobs: FAILED, then ABORTED, then CANCELED
        (counts(failed=1, aborted=1, canceled=1, finished=9), False, "FAILED"),
        (counts(aborted=1, canceled=1, finished=9), False, "ABORTED"),
        (counts(canceled=6, finished=4), False, "CANCELED"),  # §2.2 test fact
        (counts(failed=1), True, "FAILED"),  # rules 3-5 come before "open"
        # 6. open
        (counts(finished=4), True, "OPENED"),
        (counts(), True, "OPENED"),
        # 7. otherwise finished, including a closed job with zero tasks
        (counts(finished=4), False, "FINISHED"),
        (counts(), False, "FINISHED"),
    ],
)
def test_job_state_first_matching_rule_wins(c: list[int], is_open: bool, word: str) -> None:
    assert job_state(c, is_open) == word


def test_state_names_and_parsing() -> None:
    assert STATE_NAMES == ["waiting", "running", "finished", "failed", "canceled", "aborted"]
    assert parse_states(["Running", "failed"]) == {R, X}
    assert COMPLETED == (F, X, C, A)
    with pytest.raises(KeyError):
        parse_states(["done"])


# --- the table ------------------------------------------------------------------------------


def test_new_table_is_all_waiting_and_never_started() -> None:
    t = table(0, 5, 9)
    assert t.counts == counts(waiting=3)
    assert t.unfinished == 3
    assert np.isnan(t.started).all() and np.isnan(t.ended).all()
    assert t.worker.tolist() == [0, 0, 0] and t.instance.tolist() == [0, 0, 0]


def test_rows_are_found_by_task_id() -> None:
    t = table(2, 4, 6, 2**32 - 1)
    assert [t.row(i) for i in (2, 4, 6, 2**32 - 1)] == [0, 1, 2, 3]
    assert [t.row(i) for i in (0, 3, 7)] == [None, None, None]
    assert [t.row(i) for i in (-1, 2**32, 2**64)] == [None, None, None]  # hostile ids


def test_single_transitions_keep_counts() -> None:
    t = table(0, 1, 2)
    assert t.set_state(0, R) == W
    assert t.set_state(0, R) == R  # no change, no double counting
    assert t.set_state(0, F) == R
    assert t.set_state(1, X) == W  # WAITING -> FAILED happens (spawn errors)
    assert t.counts == counts(waiting=1, finished=1, failed=1)
    assert t.unfinished == 1
    assert_counts_match(t)


def test_vectorised_transitions_count_each_old_state() -> None:
    t = table(*range(6))
    t.set_state(0, R)
    t.set_state(1, F)
    rows = t.rows_in_states((W, R))
    assert rows.tolist() == [0, 2, 3, 4, 5]
    t.set_states(rows, C)
    assert t.counts == counts(finished=1, canceled=5)
    t.set_states(np.array([], dtype=np.int64), A)  # nothing to do
    assert_counts_match(t)


def test_counts_merge_across_tables() -> None:
    a, b = table(0, 1), table(7)
    a.set_state(0, R)
    assert merge_counts([a, b]) == (2, 1, 0, 0, 0, 0)


def test_a_task_costs_under_thirty_bytes_in_its_table() -> None:
    t = TaskTable(np.arange(10_000, dtype=np.uint32))
    assert t.nbytes() / len(t) <= 30


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.lists(st.integers(0, 9), min_size=1, max_size=5, unique=True),
            st.sampled_from(list(TaskState)),
        ),
        max_size=30,
    )
)
def test_counts_always_match_the_state_column(
    ops: list[tuple[bool, list[int], TaskState]],
) -> None:
    t = table(*range(10))
    for vectorised, rows, state in ops:
        if vectorised:
            t.set_states(np.array(rows), state)
        else:
            t.set_state(rows[0], state)
        assert_counts_match(t)
        assert t.unfinished == int(np.isin(t.state, [W, R]).sum())
