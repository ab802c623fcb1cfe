"""Shaping large submissions for the server's decode budget (hqshm/link/submitting.py,
requests.PackedBytes) and the budget itself (cluster/codec.py)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hqshm.cluster.codec import Registry
from hqshm.cluster.errors import PeerError
from hypothesis import given
from hypothesis import strategies as st
from test_limits_model import TEMPLATE

from hqshm.link.requests import CLIENT_LINK
from hqshm.link.submitrequests import PackedBytes, SubmitRequest
from hqshm.link.submitting import _values, graph_parts
from hqshm.model import limits
from hqshm.model.submission import ArraySubmission, GraphTask


@given(st.lists(st.binary(max_size=20), max_size=50))
def test_packed_bytes_round_trip(items: list[bytes]) -> None:
    assert PackedBytes.of(items).unpack(len(items)) == tuple(items)


@pytest.mark.parametrize(("packed", "problem"), [
    (PackedBytes(b"\x01\x00\x00", b"a"), "not whole u32 values"),
    (PackedBytes(b"\x02\x00\x00\x00", b"a"), "do not add up"),
    (PackedBytes(b"\x00\x00\x00\x00" * 3, b""), r"too many entries: 3 \(the limit is 2\)"),
])
def test_packed_bytes_that_disagree_are_refused(packed: PackedBytes, problem: str) -> None:
    with pytest.raises(limits.LimitError, match=problem):
        packed.unpack(2)


def test_a_submit_with_entries_travels_packed_and_comes_back_whole() -> None:
    entries = tuple(f"line {i}".encode() for i in range(limits.MAX_REQUEST_VALUES + 1))
    submission = ArraySubmission("e", None, "/w", TEMPLATE, ((0, len(entries) - 1, 1),),
                                 entries=entries)
    frame = CLIENT_LINK.encode(SubmitRequest.of(submission))
    decoded = CLIENT_LINK.decode(frame, limits.MAX_REQUEST_VALUES)
    assert decoded.submission.entries is None
    assert decoded.unpacked() == submission


def test_the_decode_budget_counts_arrays_and_maps_and_stops_past_it() -> None:
    registry = Registry("t", 1)
    with pytest.raises(PeerError, match="unknown t message tag 2"):  # within the budget
        registry.decode(msgpack.packb([1, 2, [3] * 10, {"a": [4]}]), 21)
    # Each array or map counts its items (a map's keys too) and itself: 11 + 2 + 3 + 5.
    with pytest.raises(PeerError, match="more than 20 values"):
        registry.decode(msgpack.packb([1, 2, [3] * 10, {"a": [4]}]), 20)
    nested = msgpack.packb([1, 2, *([[[]] * 100] * 10)])  # 1,000 arrays in 10
    with pytest.raises(PeerError, match="more than 500 values"):
        registry.decode(nested, 500)
    flat = msgpack.packb([1, 2, *([0] * 1000)])
    with pytest.raises(PeerError, match="exceeds max_array_len"):
        registry.decode(flat, 500)
    deep = b"\x91" * 100_000 + b"\x90"  # deeper than msgpack's stack: refused, no crash
    with pytest.raises(PeerError, match="undecodable"):
        registry.decode(deep, 500)


@given(st.recursive(st.integers(0, 3) | st.binary(max_size=3),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.integers(0, 9), inner, max_size=3), max_leaves=40))
def test_a_frame_of_at_most_half_the_budget_holds_no_more_values_than_it(value: Any) -> None:
    """Such frames skip the counting hooks (``Registry.decode``): each array or map and
    each item is at least a byte, so the count never exceeds twice the frame's length."""
    frame = msgpack.packb([1, 2, value])
    counted = []

    def count(container: Any) -> Any:
        counted.append(len(container) * (2 if isinstance(container, dict) else 1) + 1)
        return container

    msgpack.unpackb(frame, list_hook=count, object_hook=count, strict_map_key=False)
    assert sum(counted) <= 2 * len(frame)


def graph(deps: dict[int, tuple[int, ...]]) -> list[GraphTask]:
    return [GraphTask(task_id, TEMPLATE, task_deps) for task_id, task_deps in deps.items()]


@given(st.dictionaries(st.integers(0, 40), st.lists(st.integers(0, 40), max_size=3),
                       max_size=40),
       st.integers(60, 400))
def test_every_part_comes_after_the_parts_of_its_dependencies(
        raw: dict[int, list[int]], budget: int) -> None:
    # Acyclic: a task depends only on smaller ids, which the file may list after it.
    deps = {task: tuple(d for d in set(ds) if d < task and d in raw)
            for task, ds in sorted(raw.items(), reverse=True)}
    tasks = graph(deps)
    parts = list(graph_parts(tasks, budget))
    placed: set[int] = set()
    for part in parts:
        assert part
        ids = {task.id for task in part}
        for task in part:
            assert all(dep in placed or dep in ids for dep in task.deps)
        placed |= ids
    assert sorted(placed) == sorted(deps)
    assert all(len(part) == 1 or sum(_values(t) for t in part) <= budget
               for part in parts)


def test_independent_tasks_keep_the_files_order() -> None:
    tasks = graph({3: (), 1: (), 2: ()})
    assert [t.id for part in graph_parts(tasks) for t in part] == [3, 1, 2]
