"""A turn's ComputeTasks to one node merge into one message (cluster/protocol.py ``merged``,
cluster/server_loop.py ``_merge_computes``): a chain's steps sent early went one a message,
and a message costs both ends more than a step. The node must handle the merged message as
the messages it replaces, in the same order."""

from __future__ import annotations

from hqshm.cluster import server_loop
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import (
    MAX_MERGED_KEYS,
    NODE_LINK,
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    mergeable,
    merged,
)
from hqshm.cluster.resources import ResourceRequest


def key(i: int) -> int:
    return task_key(1, i)


def test_early_steps_merge_with_their_waits_aligned() -> None:
    first = ComputeTasks(7, (key(1),), after=((key(0),),))
    second = ComputeTasks(7, (key(2),), (3,), after=((key(1),),))
    third = ComputeTasks(7, (key(3),))
    assert merged([first, second]) == ComputeTasks(7, (key(1), key(2)), (0, 3),
                                                   after=((key(0),), (key(1),)))
    three = merged([first, second, third])
    assert three.keys == (key(1), key(2), key(3)) and three.instances == (0, 3, 0)
    assert three.after == ((key(0),), (key(1),), ())
    assert NODE_LINK.decode(NODE_LINK.encode(three), 1000) == three
    plain = merged([ComputeTasks(7, (key(4),), entries=(b"a",)),
                    ComputeTasks(7, (key(5),), entries=(b"b",))])
    assert plain == ComputeTasks(7, (key(4), key(5)), entries=(b"a", b"b"))
    assert merged([first]) is first


def test_what_must_travel_alone_does_not_merge() -> None:
    one = ComputeTasks(7, (key(1),))  # the totals given are those of the two together
    assert mergeable(one, ComputeTasks(7, (key(2),)), 2, 0)
    assert not mergeable(one, ComputeTasks(8, (key(2),)), 2, 0)  # another group
    assert not mergeable(one, ComputeTasks(7, (key(2),), nodes=("a", "b")), 2, 0)
    assert not mergeable(one, ComputeTasks(7, (key(2),), results=((key(1), 0, b"x"),)), 2, 0)
    assert not mergeable(one, ComputeTasks(7, (key(2),), entries=(b"e",)), 2, 1)
    assert not mergeable(one, ComputeTasks(7, (key(2),)), MAX_MERGED_KEYS + 1, 0)
    big = ComputeTasks(7, (key(1),), entries=(bytes(1 << 20),))
    assert not mergeable(big, ComputeTasks(7, (key(2),), entries=(b"e",)), 2, (1 << 20) + 1)


def test_a_turn_s_messages_merge_per_node_and_keep_each_node_s_order() -> None:
    define = DefineGroup(8, ResourceRequest(()), 0, b"")
    pending: list[tuple[int, object]] = [
        (1, ComputeTasks(7, (key(1),))),
        (2, ComputeTasks(7, (key(2),))),
        (1, ComputeTasks(7, (key(3),))),  # merges into node 1's first, past node 2's
        (1, define),
        (1, ComputeTasks(8, (key(4),))),  # not into the one before the definition
        (1, ComputeTasks(8, (key(5),))),
        (2, CancelTasks((key(2),))),
        (2, ComputeTasks(7, (key(6),))),  # not over the cancel
        (2, ComputeTasks(7, (key(7),))),
    ]
    assert server_loop._merge_computes(pending) == [
        (1, ComputeTasks(7, (key(1), key(3)))),
        (2, ComputeTasks(7, (key(2),))),
        (1, define),
        (1, ComputeTasks(8, (key(4), key(5)))),
        (2, CancelTasks((key(2),))),
        (2, ComputeTasks(7, (key(6), key(7)))),
    ]


def test_a_turn_s_merge_stops_at_the_size_bound() -> None:
    pending: list[tuple[int, object]] = [(1, ComputeTasks(7, (key(i),)))
                                         for i in range(MAX_MERGED_KEYS + 1)]
    out = server_loop._merge_computes(pending)
    assert [len(m.keys) for _, m in out] == [MAX_MERGED_KEYS, 1]  # type: ignore[attr-defined]
    assert [k for _, m in out for k in m.keys] == [key(i) for i in range(MAX_MERGED_KEYS + 1)]  # type: ignore[attr-defined]
