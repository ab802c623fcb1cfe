"""Results' bytes (hqshm/taskresult.py) and the node's report of them (hqshm/node/results.py):
round trips, numpy buffers out of band and mapped without a copy, refusal of damaged blobs."""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hqshm.cluster.protocol import RESULT_HELD, RESULT_OVER_CAP, FetchResult

from hqshm import functiontask, taskresult
from hqshm.node import results


def collect(*args: object, **kwargs: object) -> object:
    return args, kwargs


def test_round_trip_of_plain_values() -> None:
    for value in (None, 3, "text", b"\x00" * 1000, {"a": [1, 2.5]}, ValueError("x")):
        back = taskresult.decode(taskresult.encode(value))
        assert repr(back) == repr(value)


def test_arrays_travel_out_of_band_at_aligned_offsets() -> None:
    array = np.arange(1000, dtype=np.float64)
    parts = taskresult.encode_parts({"a": array, "b": array[::2].copy()})
    blob = taskresult.encode({"a": array})
    _magic, _n, buffers = struct.unpack_from("<4sII", blob)
    offset, length = struct.unpack_from("<QQ", blob, 12)
    assert buffers == 1 and offset % taskresult.ALIGN == 0 and length == array.nbytes
    assert taskresult.parts_size(parts) > 2 * 4000
    back = taskresult.decode(blob)
    assert np.array_equal(back["a"], array)


def test_a_stored_array_is_a_view_of_the_mapped_file(tmp_path: Path) -> None:
    path = str(tmp_path / "r")
    taskresult.write_stored(path, taskresult.VALUE, taskresult.encode_parts(np.ones(4096)))
    kind, value = taskresult.read_stored(path)
    assert kind == taskresult.VALUE and value.sum() == 4096 and not value.flags.writeable
    base = value
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    while isinstance(base, memoryview):
        base = base.obj
    assert type(base).__name__ == "mmap"


def test_a_result_read_back_by_its_writer_is_the_file_s_while_the_file_is_the_same(
        tmp_path: Path) -> None:
    """The writer keeps its last small results (a chain's next step reads its argument where
    it was made) but answers from the file once another process replaced or removed it."""
    path = str(tmp_path / "r")
    taskresult.write_stored(path, taskresult.VALUE, taskresult.encode_parts(b"first"))
    assert path in taskresult._RECENT
    assert taskresult.read_stored(path) == (taskresult.VALUE, b"first")
    other = str(tmp_path / "other")
    with open(other, "wb") as f:  # what another executor's retry of the task wrote
        f.write(bytes((taskresult.EXCEPTION,)))
        for part in taskresult.encode_parts(b"third"):  # the same size as b"first"
            f.write(part)
    os.replace(other, path)
    assert taskresult.read_stored(path) == (taskresult.EXCEPTION, b"third")
    os.unlink(path)
    with pytest.raises(FileNotFoundError):
        taskresult.read_stored(path)
    for i in range(taskresult.RECENT_KEPT + 2):
        taskresult.write_stored(f"{path}{i}", taskresult.VALUE, taskresult.encode_parts(i))
    assert len(taskresult._RECENT) == taskresult.RECENT_KEPT


def test_values_pickle_cannot_take_go_through_cloudpickle() -> None:
    square = taskresult.decode(taskresult.encode(lambda x: x * x))
    assert square(3) == 9


@pytest.mark.parametrize("blob", [b"", b"HQR1", b"XXXX" + bytes(8),
                                  struct.pack("<4sII", b"HQR1", 100, 0) + b"short",
                                  struct.pack("<4sIIQQ", b"HQR1", 0, 1, 0, 10)])
def test_damaged_blobs_are_refused(blob: bytes) -> None:
    with pytest.raises(taskresult.ResultError):
        taskresult.decode(blob)


def test_resolver_names_a_missing_result(tmp_path: Path) -> None:
    resolve = taskresult.resolver(str(tmp_path), "uid", 1)
    with pytest.raises(taskresult.ResultError, match="not on this worker"):
        resolve(5)
    taskresult.write_stored(taskresult.stored_path(str(tmp_path), "uid", 1, 5), 0,
                            taskresult.encode_parts(41))
    assert resolve(5) == 41


def test_payload_arguments_resolve_through_persistent_ids() -> None:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return (taskresult.PERSISTENT_TAG, 7) if obj == "ref" else None

    import io

    buffer = io.BytesIO()
    Pickler(buffer, protocol=5).dump((("ref", 1), {"k": "ref"}))
    fn = functiontask.PickledFunction(pickle.dumps(collect))
    payload = pickle.dumps(functiontask.pack(fn, (), {}, None,
                                             {"args": buffer.getvalue(), "keep": True}))
    loaded = functiontask.load_payload(payload, lambda task_id: task_id * 100)
    assert loaded.args == (700, 1) and loaded.kwargs == {"k": 700} and loaded.keep
    assert functiontask.call(loaded) == ((700, 1), {"k": 700})
    with pytest.raises(taskresult.ResultError):
        functiontask.load_payload(payload, None)


def test_report_inline_up_to_the_cap_and_stored_when_kept(tmp_path: Path) -> None:
    root = str(tmp_path)
    small = results.report(root, "u", 1, 2, taskresult.VALUE, b"x" * 100, False, 1000)
    assert small is not None and small[0] == 0 and taskresult.decode(small[2]) == b"x" * 100
    large = results.report(root, "u", 1, 3, taskresult.VALUE, b"x" * 5000, True, 1000)
    assert large is not None and large[0] == taskresult.VALUE | RESULT_OVER_CAP
    assert large[2] == b"1000" and large[1] > 5000  # the cap, for the client's error
    assert taskresult.read_stored(taskresult.stored_path(root, "u", 1, 3))[1] == b"x" * 5000
    assert results.report(root, "u", 1, 4, taskresult.VALUE, None, False, 1000) is None
    bad = results.report(root, "u", 1, 5, taskresult.VALUE, (x for x in ()), False, 1000)
    assert bad is not None and bad[0] == results.UNPICKLABLE


def test_inline_held_and_over_the_cap(tmp_path: Path) -> None:
    """Small results ride inline (kept ones up to KEPT_INLINE), larger ones within the cap are
    written to the store and reported held, larger still only their size and the cap."""
    root = str(tmp_path)
    cap = 4 << 20
    path = taskresult.stored_path(root, "u", 1, 1)

    def decide(size: int, keep: bool) -> results.Report:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return results.decide(root, path, taskresult.VALUE, [bytes(size)], keep, cap)

    assert decide(taskresult.INLINE_RESULT, False)[2] == bytes(taskresult.INLINE_RESULT)
    assert not os.path.exists(path)  # inline and not kept: nothing stored
    held = decide(taskresult.INLINE_RESULT + 1, False)
    assert held == (RESULT_HELD, taskresult.INLINE_RESULT + 1, b"")
    assert os.path.getsize(path) == 1 + taskresult.INLINE_RESULT + 1
    kept = decide(taskresult.KEPT_INLINE, True)
    assert kept[0] == taskresult.VALUE and len(kept[2]) == taskresult.KEPT_INLINE
    assert os.path.exists(path)  # kept: stored for dependants here too
    assert decide(taskresult.KEPT_INLINE + 1, True)[0] == RESULT_HELD
    over = decide(cap + 1, False)
    assert over == (RESULT_OVER_CAP, cap + 1, str(cap).encode()) and not os.path.exists(path)
    exc = results.decide(root, path, taskresult.EXCEPTION, [bytes(cap)], False, cap)
    assert exc[0] == taskresult.EXCEPTION | RESULT_HELD
    # No store on this node: a result that would be held is an error, not a silent loss.
    assert results.decide("", "", taskresult.VALUE, [bytes(cap)], False, cap)[0] == \
        results.UNPICKLABLE
    # Never above MAX_RESULT_LIMIT, whatever the payload says.
    limit = taskresult.MAX_RESULT_LIMIT
    assert results.decide(root, path, 0, [bytes(limit + 1)], False, 1 << 40) == \
        (RESULT_OVER_CAP, limit + 1, str(limit).encode())


def test_parts_of_a_held_result_are_read_from_the_store(tmp_path: Path) -> None:
    root = str(tmp_path)
    blob = bytes(range(256)) * 100
    taskresult.write_stored(taskresult.stored_path(root, "u", 3, 7), 1, [blob])
    key = 3 << 32 | 7
    part = results.read_part(root, "u", FetchResult(key, 2, 1000, 5000))
    assert (part.key, part.instance, part.offset, part.total) == (key, 2, 1000, len(blob))
    assert part.data == blob[1000:6000] and not part.error
    tail = results.read_part(root, "u", FetchResult(key, 2, len(blob) - 10, 5000))
    assert tail.data == blob[-10:]
    missing = results.read_part(root, "u", FetchResult(key + 1, 2, 0, 10))
    assert missing.data == b"" and "not on this worker" in missing.error
    results.release(root, "u", [3])
    assert "not on this worker" in results.read_part(root, "u", FetchResult(key, 2, 0, 10)).error


def test_ended_payload_round_trip() -> None:
    flags, payload = results.ended_payload("error", (1, 3, b"abc"))
    assert results.read_ended(flags, payload) == (b"error", (1, 3, b"abc"))
    assert results.read_ended(*results.ended_payload("plain", None)) == (b"plain", None)


def test_a_look_at_the_result_space_serves_a_while_counting_what_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain keeps a small result a step: one statvfs serves SPACE_LOOK_SERVES, less what
    was kept since; a result larger than what is left, or a later one, looks again."""
    real = os.statvfs(tmp_path)
    looks = []

    def statvfs(path: str) -> os.statvfs_result:
        looks.append(path)
        fields = list(real)
        fields[1], fields[2], fields[4] = 4096, 1000, 1000 - 900  # 90% used of 95% allowed
        return os.statvfs_result(fields)

    monkeypatch.setattr(results.os, "statvfs", statvfs)
    monkeypatch.setattr(results, "_space", None)
    root = str(tmp_path)
    allowed = int(0.95 * 4096 * 1000) - 900 * 4096
    assert results._no_room(root, 1000) == ""
    assert results._no_room(root, 1000) == "" and len(looks) == 1
    assert "would be more than 95% full" in results._no_room(root, allowed + 1)  # looks again
    assert len(looks) == 2
    assert results._no_room(root, 1000) == "" and len(looks) == 3
    assert results._space is not None
    root_, when, left = results._space
    monkeypatch.setattr(results, "_space", (root_, when - results.SPACE_LOOK_SERVES, left))
    assert results._no_room(root, 1000) == "" and len(looks) == 4


def test_a_held_result_without_room_is_not_kept_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Results on a node stop at DISK_SPACE_SHARE of a disk's space (RESULT_SPACE_SHARE on
    /dev/shm); os.statvfs of a 1 MiB file system is faked (mounting one needs privileges)."""
    real = os.statvfs(tmp_path)
    used_blocks = 250  # of 256 blocks of 4 KiB: 97% full already

    def statvfs(path: str) -> os.statvfs_result:
        assert path == str(tmp_path)
        fields = list(real)
        fields[1], fields[2], fields[4] = 4096, 256, 256 - used_blocks  # frsize, blocks, bavail
        return os.statvfs_result(fields)

    monkeypatch.setattr(results.os, "statvfs", statvfs)
    path = str(tmp_path / "r")
    size = taskresult.INLINE_RESULT + 1
    kind, reported, why = results.decide(str(tmp_path), path, taskresult.VALUE, [bytes(size)],
                                         False, 1 << 24)
    assert (kind, reported) == (results.NOT_KEPT, size)
    assert b"would be more than 95% full" in why and b"forget finished jobs" in why
    assert not os.path.exists(path)
    # A kept result (a dependant on this node takes it) is not written either; small ones
    # still go inline.
    kept = results.decide(str(tmp_path), path, taskresult.VALUE, [bytes(100)], True, 1 << 24)
    assert kept[2] == bytes(100) and not os.path.exists(path)
    used_blocks = 0
    assert results.decide(str(tmp_path), path, taskresult.VALUE, [bytes(size)], False,
                          1 << 24)[0] == RESULT_HELD
    assert os.path.exists(path)
