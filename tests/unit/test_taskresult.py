"""Results' bytes (hqshm/taskresult.py) and the node's report of them (hqshm/node/results.py):
round trips, numpy buffers out of band and mapped without a copy, refusal of damaged blobs."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

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
    assert large is not None and large[2] == b"" and large[1] > 5000
    assert taskresult.read_stored(taskresult.stored_path(root, "u", 1, 3))[1] == b"x" * 5000
    assert results.report(root, "u", 1, 4, taskresult.VALUE, None, False, 1000) is None
    bad = results.report(root, "u", 1, 5, taskresult.VALUE, (x for x in ()), False, 1000)
    assert bad is not None and bad[0] == results.UNPICKLABLE


def test_ended_payload_round_trip() -> None:
    flags, payload = results.ended_payload("error", (1, 3, b"abc"))
    assert results.read_ended(flags, payload) == (b"error", (1, 3, b"abc"))
    assert results.read_ended(*results.ended_payload("plain", None)) == (b"plain", None)
