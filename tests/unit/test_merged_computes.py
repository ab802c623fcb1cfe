"""A turn's ComputeTasks to one node merge into one message (cluster/protocol.py ``merged``,
cluster/server_loop.py ``_merge_computes``): a chain's steps sent early went one a message,
and a message costs both ends more than a step. The node must handle the merged message as
the messages it replaces, in the same order."""

from __future__ import annotations

from core_env import Env
from hqshm.cluster import server_loop
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import (
    MAX_COMPUTE_ENTRY_BYTES,
    MAX_MERGED_KEYS,
    NODE_LINK,
    CancelTasks,
    ComputeTasks,
    DefineGroup,
    entry_ranges,
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


def test_entry_ranges_bound_the_bytes_of_each_message() -> None:
    assert entry_ranges((), 5) == [(0, 5)]
    assert entry_ranges((b"a" * 10,) * 5, 5, limit=50) == [(0, 5)]
    assert entry_ranges((b"a" * 10,) * 5, 5, limit=25) == [(0, 2), (2, 4), (4, 5)]
    # An entry larger than the limit travels alone rather than not at all.
    assert entry_ranges((b"a", b"b" * 100, b"c"), 3, limit=10) == [(0, 1), (1, 2), (2, 3)]


def test_a_pass_that_places_tasks_with_large_entries_splits_their_message() -> None:
    """Thousands of tasks with 100 KiB entries placed on one large node at once must not make
    one frame past the node link's limit (it would end the link): they go in several
    ComputeTasks of at most MAX_COMPUTE_ENTRY_BYTES of entries each, in order."""
    env = Env()
    worker = env.worker(cpus=1024)
    entries = [bytes([i % 256]) * (100 << 10) for i in range(1024)]
    group = env.group(1024, entries=entries)
    env.schedule()
    sent = env.out.take(worker.wid, ComputeTasks)
    assert len(sent) == -(-sum(map(len, entries)) // MAX_COMPUTE_ENTRY_BYTES)
    assert all(sum(map(len, m.entries)) <= MAX_COMPUTE_ENTRY_BYTES for m in sent)
    assert [k for m in sent for k in m.keys] == group.keys.tolist()
    assert [e for m in sent for e in m.entries] == entries
