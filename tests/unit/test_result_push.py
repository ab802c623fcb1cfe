"""Held results pushed to the node of a dependant on another worker (issue 10, item 4).

The node's part writer (hqshm/node/results.py ``Receiver``) against hostile parts: each is
checked, what does not fit is dropped and logged with its partial file, nothing is written
outside the result directory, and the node goes on; the result space's bound stores why in
place of the result. The server's side (hqshm/server/results.py ``attach``): a dependant
waits for the fetch, is released when it ends (well or not), gets the parts before its
``ComputeTasks`` and the reason when the fetch failed; a result goes to a node once. The
server loop's per-node hold queue (cluster/server_loop.py): order kept, released on demand,
other nodes not delayed, unordered messages pass.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hqshm.cluster.errors import PeerError
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import (
    MAX_PART,
    NODE_LINK,
    RESULT_HELD,
    STORE_UNAVAILABLE,
    CancelTasks,
    ComputeTasks,
    FetchResult,
    ResultPart,
    RetractTasks,
    ServerHeartbeat,
    StoreResult,
)
from test_loop_guards import Server, receive, server  # noqa: F401 - the fixture

from hqshm import taskresult
from hqshm.model.taskstates import TaskState
from hqshm.node import results as node_results
from hqshm.node.results import Receiver
from hqshm.server.results import ResultStore

UID = "uid1"
KEY = task_key(1, 0)


def parts_of(blob: bytes, kind: int = 0, key: int = KEY, size: int = MAX_PART) -> list[StoreResult]:
    return [StoreResult(key, kind, at, len(blob), blob[at:at + size])
            for at in range(0, len(blob), size)]


def left_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# -- the node's writer -------------------------------------------------------------------------


def test_parts_in_order_make_the_result_as_if_made_here(tmp_path: Path) -> None:
    blob = taskresult.encode(np.arange(300_000.0))
    receiver = Receiver(str(tmp_path))
    for part in parts_of(blob, size=1 << 20):
        assert left_in(tmp_path) == [] or left_in(tmp_path)[0].endswith(".part.tmp")
        receiver.part(UID, part)
    assert left_in(tmp_path) == [f"{UID}.1.0"] and not receiver.partials
    value = taskresult.resolver(str(tmp_path), UID, 1)(0)
    assert np.array_equal(value, np.arange(300_000.0)) and not value.flags.writeable


@pytest.mark.parametrize("bad", [
    StoreResult(KEY, 0, 200, 1000, bytes(100)),  # not where the last part ended
    StoreResult(KEY, 0, 100, 2000, bytes(100)),  # the total changes
    StoreResult(KEY, 1, 100, 1000, bytes(100)),  # the kind changes
])
def test_a_part_that_does_not_continue_its_result_drops_it(
        tmp_path: Path, bad: StoreResult, caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(str(tmp_path))
    receiver.part(UID, StoreResult(KEY, 0, 0, 1000, bytes(100)))
    with caplog.at_level(logging.ERROR):
        receiver.part(UID, bad)
        receiver.part(UID, StoreResult(KEY, 0, 200, 1000, bytes(800)))  # the rest: no start
    assert "Dropped a part of the result of task 0 of job 1" in caplog.text
    assert left_in(tmp_path) == [] and not receiver.partials


def test_a_part_that_starts_nothing_is_dropped(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        Receiver(str(tmp_path)).part(UID, StoreResult(KEY, 0, 10, 1000, bytes(10)))
    assert "continues none" in caplog.text and left_in(tmp_path) == []


@pytest.mark.parametrize("fields", [
    (KEY, 0, 0, 10, bytes(11)),  # beyond its total
    (KEY, 0, 0, 0, b""),  # empty
    (KEY, 3, 0, 10, bytes(10)),  # no such kind
    (KEY, 0, -1, 10, bytes(1)),  # a negative offset
    (KEY, 0, 0, (64 << 20) + 1, bytes(1)),  # above the largest result
    (KEY, 0, 0, MAX_PART + 1, bytes(MAX_PART + 1)),  # above a part
    (KEY, STORE_UNAVAILABLE, 0, 2000, bytes(2000)),  # a reason too long
    (KEY, STORE_UNAVAILABLE, 0, 20, bytes(10)),  # a reason in parts
    (-1, 0, 0, 10, bytes(10)),  # no key
])
def test_oversize_and_inconsistent_parts_do_not_even_decode(fields: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        StoreResult(*fields)


def test_a_result_of_another_server_never_completes_one_of_this(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(str(tmp_path))
    receiver.part("old", StoreResult(KEY, 0, 0, 200, bytes(100)))
    with caplog.at_level(logging.ERROR):
        receiver.part(UID, StoreResult(KEY, 0, 100, 200, bytes(100)))
    assert "another server" in caplog.text
    assert left_in(tmp_path) == [] and not receiver.partials


@pytest.mark.parametrize("uid", ["../x", "a/b", ".hidden", ""])
def test_nothing_is_written_outside_the_result_directory(
        tmp_path: Path, uid: str, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "results"
    root.mkdir()
    with caplog.at_level(logging.ERROR):
        Receiver(str(root)).part(uid, StoreResult(KEY, 0, 0, 10, bytes(10)))
    assert "no result directory" in caplog.text
    assert left_in(tmp_path) == ["results"] and left_in(root) == []


def test_a_full_result_space_stores_why_instead(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_results, "_no_room", lambda root, size: f"no room for {size}")
    receiver = Receiver(str(tmp_path))
    for part in parts_of(bytes(3000), size=1000):
        receiver.part(UID, part)  # the later parts are consumed unwritten
    assert left_in(tmp_path) == [f"{UID}.1.0"] and not receiver.partials
    with pytest.raises(taskresult.ResultError,
                       match=r"^The result of task 0 \(an argument of this task\) could not be "
                             r"fetched: it could not be stored on this worker: no room for 3000$"):
        taskresult.resolver(str(tmp_path), UID, 1)(0)


def test_a_result_that_could_not_be_fetched_is_named_in_the_dependant_s_error(
        tmp_path: Path) -> None:
    why = b"worker 3, which held it, is gone"
    Receiver(str(tmp_path)).part(UID, StoreResult(KEY, STORE_UNAVAILABLE, 0, len(why), why))
    with pytest.raises(taskresult.ResultError,
                       match=r"task 0 \(an argument of this task\) could not be fetched: "
                             r"worker 3, which held it, is gone$"):
        taskresult.resolver(str(tmp_path), UID, 1)(0)


def test_a_result_already_here_is_not_written_again(tmp_path: Path) -> None:
    path = tmp_path / f"{UID}.1.0"
    taskresult.write_stored(str(path), 0, [taskresult.encode("made here")])
    receiver = Receiver(str(tmp_path))
    for part in parts_of(taskresult.encode("pushed"), size=10):
        receiver.part(UID, part)
    assert taskresult.read_stored(str(path))[1] == "made here" and left_in(tmp_path) == [path.name]


def test_forgotten_jobs_and_too_many_partials_drop_their_files(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(str(tmp_path))
    for task in range(node_results.MAX_PARTIALS):
        receiver.part(UID, StoreResult(task_key(2, task), 0, 0, 100, bytes(10)))
    with caplog.at_level(logging.ERROR):
        receiver.part(UID, StoreResult(task_key(3, 0), 0, 0, 100, bytes(10)))
    assert "too many results in parts at once" in caplog.text
    assert len(left_in(tmp_path)) == node_results.MAX_PARTIALS
    receiver.release([2])
    assert len(left_in(tmp_path)) == 1
    receiver.close()
    assert left_in(tmp_path) == []


# -- the server's store ------------------------------------------------------------------------


def book_with(states: dict[int, int], deps: dict[int, tuple[int, ...]]) -> Any:
    """A job book of job 1 whose tasks have these states and dependencies."""
    table = SimpleNamespace(state=np.array([states[t] for t in sorted(states)], dtype=np.int8),
                            instance=np.zeros(len(states), dtype=np.int32))
    submit = SimpleNamespace(table=table, deps=deps)
    job = SimpleNamespace(locate=lambda task: (submit, task) if task in states else None)
    return SimpleNamespace(jobs=SimpleNamespace(view=lambda job_id: job if job_id == 1
                                                else None)), table


def store_with_held(size: int = 3 * MAX_PART // 2) -> tuple[ResultStore, list, list, Any]:
    book, table = book_with({0: TaskState.FINISHED, 1: TaskState.WAITING,
                             2: TaskState.WAITING}, {1: (0,), 2: (0,)})
    store = ResultStore(book, 1 << 30, 0.0)
    sent: list[tuple[int, object]] = []
    released: list[int] = []
    store.send = lambda wid, message: sent.append((wid, message))
    store.release = released.append
    store.connected = lambda wid: wid in (3, 5)
    store.add(3, ((KEY, 0, RESULT_HELD, size, b""),))  # task 0, held on worker 3
    return store, sent, released, table


def test_a_dependant_waits_for_the_fetch_and_gets_the_parts_before_it() -> None:
    store, sent, released, _table = store_with_held()
    message = ComputeTasks(7, (task_key(1, 1),))
    assert store.attach(5, message) == ([], True)
    assert [m for _w, m in sent] == [FetchResult(KEY, 0, 0, MAX_PART),
                                     FetchResult(KEY, 0, MAX_PART, MAX_PART // 2)]
    assert store.attach(5, message) == ([], True)  # tried again: no second fetch
    assert len(sent) == 2
    blob = bytes(range(256)) * (3 * MAX_PART // 512)
    store.part(3, ResultPart(KEY, 0, 0, len(blob), blob[:MAX_PART]))
    assert released == []
    store.part(3, ResultPart(KEY, 0, MAX_PART, len(blob), blob[MAX_PART:]))
    assert released == [5]
    out, hold = store.attach(5, message)
    assert not hold and out == [*parts_of(blob), message]
    # Pushed once: another dependant on worker 5 gets no parts; one on worker 6 does.
    other = ComputeTasks(7, (task_key(1, 2),))
    assert store.attach(5, other) == ([other], False)
    assert store.attach(6, other)[0][:-1] == parts_of(blob)
    # The holder's own dependants need nothing.
    assert store.attach(3, other) == ([other], False)


def test_a_failed_fetch_releases_the_dependant_with_the_reason() -> None:
    store, _sent, released, _table = store_with_held()
    message = ComputeTasks(7, (task_key(1, 1),))
    assert store.attach(5, message)[1]
    store.worker_left(3, "connection-lost")
    assert released == [5]
    out, hold = store.attach(5, message)
    assert not hold and len(out) == 2 and out[1] == message
    marker = out[0]
    assert isinstance(marker, StoreResult) and marker.kind == STORE_UNAVAILABLE
    assert marker.data.startswith(b"worker 3, which held it, is gone (connection-lost)")


def test_a_holder_gone_before_the_dependant_is_sent_fails_it_at_once() -> None:
    store, sent, _released, _table = store_with_held()
    store.connected = lambda wid: False
    out, hold = store.attach(5, ComputeTasks(7, (task_key(1, 1),)))
    assert not hold and sent == [] and out[0].kind == STORE_UNAVAILABLE  # type: ignore[attr-defined]


def test_a_dependant_canceled_while_it_waited_is_dropped() -> None:
    store, _sent, released, table = store_with_held()
    message = ComputeTasks(7, (task_key(1, 1),))
    assert store.attach(5, message)[1]
    table.state[1] = TaskState.CANCELED
    store.worker_left(3, "")
    assert released == [5] and store.attach(5, message) == ((), False)


def test_a_result_over_the_cap_tells_the_dependant_why() -> None:
    store, _sent, _released, _table = store_with_held()
    store.jobs[1][0] = (0x8, 1000, b"100", 0, 3)  # RESULT_OVER_CAP, cap 100
    out, hold = store.attach(5, ComputeTasks(7, (task_key(1, 1),)))
    assert not hold and b"larger (1000 bytes) than its job's max_result_size (100 bytes)" \
        in out[0].data  # type: ignore[attr-defined]


# -- the server loop's hold queue --------------------------------------------------------------


def test_a_held_node_gets_its_messages_in_order_and_others_are_not_delayed(
        server: Server) -> None:  # noqa: F811 - the fixture
    first, second = server.node(), server.node()
    w1, w2 = server.register(first), server.register(second)
    ready = False
    prefix = StoreResult(KEY, 0, 0, 3, b"abc")

    def before_compute(wid: int, message: ComputeTasks) -> tuple[list[object], bool]:
        if message.gid == 99:
            return ([prefix, message], False) if ready else ([], True)
        return [message], False

    server.loop.before_compute = before_compute
    out = server.loop.out
    held = ComputeTasks(99, (task_key(1, 1),))
    out.send(w1, held)
    out.send(w1, CancelTasks((task_key(1, 1),)))
    out.send(w2, ComputeTasks(5, (task_key(1, 2),)))
    out.send(w1, FetchResult(KEY, 0, 0, 10))  # passes: no task's order depends on it
    out.send(w1, ServerHeartbeat())
    server.loop.flush()
    assert receive(second) == ComputeTasks(5, (task_key(1, 2),))
    assert receive(first) == FetchResult(KEY, 0, 0, 10)
    first.rcvtimeo = 200
    with pytest.raises(Exception):  # noqa: B017 - zmq.Again: nothing else came
        receive(first)
    out.send(w1, RetractTasks((task_key(1, 3),)))
    server.loop.flush()
    server.loop.release(w1)  # still not ready: held again, in order
    server.loop.flush()
    ready = True
    server.loop.release(w1)
    out.send(w1, RetractTasks((task_key(1, 4),)))  # newer than the held ones
    server.loop.flush()
    first.rcvtimeo = 5000
    assert [receive(first) for _ in range(5)] == [
        prefix, held, CancelTasks((task_key(1, 1),)), RetractTasks((task_key(1, 3),)),
        RetractTasks((task_key(1, 4),))]
    assert server.loop.held == {} and server.loop.released == set()


def test_a_store_result_frame_is_checked_on_decode() -> None:
    frame = NODE_LINK.encode(StoreResult(KEY, 0, 0, 10, bytes(10)))
    assert NODE_LINK.decode(frame) == StoreResult(KEY, 0, 0, 10, bytes(10))
    hostile = object.__new__(StoreResult)  # a server that sends more than it says
    for name, value in zip(("key", "kind", "offset", "total", "data"),
                           (KEY, 0, 0, 10, bytes(11)), strict=True):
        object.__setattr__(hostile, name, value)
    with pytest.raises(PeerError):
        NODE_LINK.decode(NODE_LINK.encode(hostile))


def test_inline_results_past_a_message_share_go_before_it_as_parts() -> None:
    """A gather task whose many kept results (up to KEPT_INLINE each) come from another node:
    inline they would make a frame past the node link's limit, which ends the connection.
    The message carries ATTACH_BYTES of them; the rest are stored on the node before it, once."""
    from hqshm.server import results as server_results

    size = taskresult.KEPT_INLINE - 1000
    count = server_results.ATTACH_BYTES // size + 5
    book, _table = book_with({**{t: TaskState.FINISHED for t in range(count)},
                              count: TaskState.WAITING, count + 1: TaskState.WAITING},
                             {count: tuple(range(count)), count + 1: tuple(range(count))})
    store = ResultStore(book, 1 << 40, 0.0)
    store.connected = lambda wid: True
    blobs = {t: bytes([t % 256]) * size for t in range(count)}
    store.add(3, tuple((task_key(1, t), 0, 0, size, blobs[t]) for t in range(count)))
    message = ComputeTasks(7, (task_key(1, count),))
    out, hold = store.attach(5, message)
    assert not hold and isinstance(out[-1], ComputeTasks)
    inline = {key: blob for key, _kind, blob in out[-1].results}
    assert sum(map(len, inline.values())) <= server_results.ATTACH_BYTES
    parts = out[:-1]
    stored = {p.key for p in parts if isinstance(p, StoreResult)}
    assert len(stored) >= 5 and not stored & inline.keys()
    assert stored | inline.keys() == {task_key(1, t) for t in range(count)}
    for part in parts:
        assert isinstance(part, StoreResult)
        start = part.offset
        assert part.data == blobs[part.key & 0xFFFFFFFF][start:start + len(part.data)]
    for one in out:  # every frame well within the link's
        assert len(NODE_LINK.encode(one)) <= server_results.ATTACH_BYTES + (1 << 20)
    # Another dependant on that node: the stored ones are not sent again.
    again, _ = store.attach(5, ComputeTasks(7, (task_key(1, count + 1),)))
    assert not any(isinstance(p, StoreResult) for p in again)
    assert {key for key, _k, _b in again[-1].results} == inline.keys()  # type: ignore[attr-defined]
