"""The shared-memory rings: layout, hand-offs across real processes, spilling, doorbell, cleanup."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import select
import signal
import struct
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator

import numpy as np
import posix_ipc
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from hqshm.node.ring import (
    HEADER_SIZE,
    MAX_CPUS,
    Record,
    RecordFlag,
    RecordKind,
    Ring,
    drain_doorbell,
    open_doorbell,
    record_dtype,
    ring_doorbell,
)

PREFIX = "hqshm-test"


def shm_entries() -> set[str]:
    """Our entries in /dev/shm: segments, semaphores (sem.*) and spill files of this process."""
    mine = f"{PREFIX}.{os.getpid()}."
    return {n for n in os.listdir("/dev/shm") if n.startswith((mine, "sem." + mine))}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = shm_entries()
    yield
    assert shm_entries() == before


@pytest.fixture
def ring(tmp_path: pathlib.Path) -> Iterator[Ring]:
    with Ring.create(PREFIX, capacity=4, payload_size=1024, spill_dir=str(tmp_path)) as r:
        yield r


def run(r: Ring, key: int = 1, **fields: object) -> bool:
    """Push a RUN record with defaults for what a test does not care about."""
    fields.setdefault("instance", 0)
    fields.setdefault("kind", RecordKind.RUN)
    return r.push(key=key, **fields)  # type: ignore[arg-type]


def fork(child: Callable[[], int]) -> int:
    """Fork a child that runs ``child`` and leaves with its return code, never through pytest."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = child()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = 10.0) -> int:
    """Wait for a child; kill it if it hangs, so a failing test never leaves one behind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} hung")


# --- layout ---------------------------------------------------------------------------------


def test_record_layout_is_the_documented_one() -> None:
    assert record_dtype().itemsize == 192
    offsets = {name: record_dtype().fields[name][1] for name in record_dtype().names}
    assert offsets == {
        "key": 0,
        "instance": 8,
        "kind": 12,
        "flags": 13,
        "numa": 14,
        "pid": 16,
        "status": 20,
        "t_start": 24,
        "t_end": 32,
        "cpumask": 40,
        "payload_len": 168,
    }
    assert record_dtype()["cpumask"].shape == (16,)


def test_push_writes_what_the_numpy_view_reads(ring: Ring) -> None:
    ring.push(
        key=(7 << 32) | 3,
        instance=2,
        kind=RecordKind.ENDED,
        cpus=[0, 63, 64, 1023],
        numa=1,
        pid=4242,
        status=-9,
        t_start=1.25,
        t_end=2.5,
        flags=3,
        payload=b"abc",
    )
    view = ring.records()
    slot = view[0]
    assert int(slot["key"]) == (7 << 32) | 3
    assert (int(slot["instance"]), int(slot["kind"]), int(slot["flags"])) == (2, 3, 3)
    assert (int(slot["numa"]), int(slot["pid"]), int(slot["status"])) == (1, 4242, -9)
    assert (float(slot["t_start"]), float(slot["t_end"])) == (1.25, 2.5)
    words = [0] * 16
    words[0], words[1], words[15] = (1 << 63) | 1, 1, 1 << 63
    assert slot["cpumask"].tolist() == words
    assert int(slot["payload_len"]) == 3
    del view, slot  # a live view would keep the mapping past close()
    assert ring.pop(0) is not None


# --- one process ----------------------------------------------------------------------------


def test_pop_on_empty_ring_returns_none_at_once_or_after_timeout(ring: Ring) -> None:
    assert ring.pop(0) is None
    t0 = time.monotonic()
    assert ring.pop(timeout=0.05) is None
    assert 0.05 <= time.monotonic() - t0 < 5.0  # it waited, then gave up: a sanity bound


def test_pop_ready_takes_every_published_record_in_order_and_frees_their_slots(
        ring: Ring) -> None:
    assert ring.pop_ready() == []
    for key in range(3):
        assert ring.push(key=key, instance=0, kind=RecordKind.ENDED, payload=b"x" * key)
    records = ring.pop_ready()
    assert [(r.key, r.payload) for r in records] == [(0, b""), (1, b"x"), (2, b"xx")]
    assert ring.pop_ready() == [] and ring.pending() == 0
    for key in range(ring.capacity):  # every slot is free again, across the wrap
        assert ring.push(key=key, instance=0, kind=RecordKind.STARTED, timeout=0)
    assert [r.key for r in ring.pop_ready()] == list(range(ring.capacity))


def test_push_on_full_ring_times_out_then_succeeds_after_a_pop(ring: Ring) -> None:
    for key in range(ring.capacity):
        assert run(ring, key, timeout=0)
    assert not run(ring, 99, timeout=0)
    t0 = time.monotonic()
    assert not run(ring, 99, timeout=0.05)
    assert 0.05 <= time.monotonic() - t0 < 5.0  # it waited, then gave up: a sanity bound
    assert ring.pop(0).key == 0
    assert run(ring, 4, timeout=0)
    assert [ring.pop(0).key for _ in range(4)] == [1, 2, 3, 4]
    assert ring.pop(0) is None


@pytest.mark.parametrize("size", [0, 1, 1024, 1025, 1 << 20])
def test_payload_round_trip_including_spilled(
    ring: Ring, tmp_path: pathlib.Path, size: int
) -> None:
    payload = os.urandom(size)
    run(ring, payload=payload, flags=0x41)
    spilled = size > ring.payload_size
    assert int(ring.records()[0]["flags"]) == 0x41 | (RecordFlag.SPILLED if spilled else 0)
    assert len(os.listdir(tmp_path)) == int(spilled)
    record = ring.pop(0)
    assert record.payload == payload
    assert record.flags == 0x41
    assert os.listdir(tmp_path) == []


def test_spilled_payloads_left_in_the_ring_are_removed_by_close(tmp_path: pathlib.Path) -> None:
    ring = Ring.create(PREFIX, capacity=2, payload_size=512, spill_dir=str(tmp_path))
    run(ring, payload=bytes(4096))
    assert len(os.listdir(tmp_path)) == 1
    ring.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "cpus",
    [[], [0], [0, 63, 64, 1023], list(range(0, MAX_CPUS, 3)), list(range(MAX_CPUS))],
    ids=["none", "zero", "word-edges", "every-third", "all"],
)
def test_cpumask_round_trip(ring: Ring, cpus: list[int]) -> None:
    run(ring, cpus=cpus)
    assert ring.pop(0).cpus == cpus


def test_cpus_come_back_sorted_without_duplicates_and_from_numpy_ints(ring: Ring) -> None:
    run(ring, cpus=[5, 1, 5, 3])
    run(ring, cpus=np.array([1023, 64], dtype=np.int64))
    assert ring.pop(0).cpus == [1, 3, 5]
    assert ring.pop(0).cpus == [64, 1023]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"cpus": [1024]}, ValueError),
        ({"cpus": [-1]}, ValueError),
        ({"kind": 9}, ValueError),
        ({"flags": 0x80}, ValueError),
        ({"key": -1}, struct.error),
        ({"numa": 1 << 15}, struct.error),
    ],
)
def test_a_refused_push_does_not_cost_a_slot(
    tmp_path: pathlib.Path, fields: dict[str, object], error: type[Exception]
) -> None:
    with Ring.create(PREFIX, capacity=1, spill_dir=str(tmp_path)) as ring:
        with pytest.raises(error):
            run(ring, **fields)
        assert run(ring, 5, timeout=0)
        assert ring.pop(0).key == 5


def test_pop_copies_the_record_out_of_the_slot(tmp_path: pathlib.Path) -> None:
    with Ring.create(PREFIX, capacity=1, spill_dir=str(tmp_path)) as ring:
        run(ring, 1, cpus=[1], payload=b"first")
        first = ring.pop(0)
        run(ring, 2, cpus=[2], payload=b"secnd")
        assert (first.key, first.cpus, first.payload) == (1, [1], b"first")
        assert ring.pop(0).payload == b"secnd"


# --- names, attach and cleanup --------------------------------------------------------------


def test_names_are_unique_and_carry_the_owner_pid(tmp_path: pathlib.Path) -> None:
    with (
        Ring.create(PREFIX, spill_dir=str(tmp_path)) as a,
        Ring.create(PREFIX, spill_dir=str(tmp_path)) as b,
    ):
        assert a.names.shm != b.names.shm
        for names in (a.names, b.names):
            assert names.shm.startswith(f"/{PREFIX}.{os.getpid()}.")
            assert {names.items, names.free} == {names.shm + ".items", names.shm + ".free"}


def test_names_left_by_a_dead_process_are_skipped_not_removed(tmp_path: pathlib.Path) -> None:
    with Ring.create(PREFIX, spill_dir=str(tmp_path)) as first:
        serial = int(first.names.shm.rsplit(".", 1)[1])
    stale = f"/{PREFIX}.{os.getpid()}"
    stale_sem = posix_ipc.Semaphore(f"{stale}.{serial + 1}.free", posix_ipc.O_CREX)
    stale_shm = posix_ipc.SharedMemory(f"{stale}.{serial + 2}", posix_ipc.O_CREX, size=64)
    stale_shm.close_fd()
    try:
        with Ring.create(PREFIX, spill_dir=str(tmp_path)) as ring:
            assert ring.names.shm == f"{stale}.{serial + 3}"
            assert run(ring, 1, timeout=0)
        assert {f"sem.{stale[1:]}.{serial + 1}.free", f"{stale[1:]}.{serial + 2}"} <= shm_entries()
        assert f"{stale[1:]}.{serial + 1}" not in shm_entries()  # our half-made try is gone
    finally:
        stale_sem.unlink()
        stale_sem.close()
        stale_shm.unlink()


def test_close_of_the_owner_leaves_dev_shm_clean(tmp_path: pathlib.Path) -> None:
    before = shm_entries()
    ring = Ring.create(PREFIX, spill_dir=str(tmp_path))
    base = ring.names.shm[1:]
    assert shm_entries() - before == {base, f"sem.{base}.items", f"sem.{base}.free"}
    run(ring, payload=b"left in the ring")
    ring.close()
    ring.close()  # idempotent
    assert shm_entries() == before


def test_create_refuses_bad_geometry() -> None:
    with pytest.raises(ValueError):
        Ring.create("a/b")
    with pytest.raises(ValueError):
        Ring.create(PREFIX, capacity=0)
    with pytest.raises(ValueError):
        Ring.create(PREFIX, payload_size=16)


@contextlib.contextmanager
def doorbell() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = open_doorbell()
    try:
        yield read_fd, write_fd
    finally:
        os.close(read_fd)
        os.close(write_fd)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_doorbell_wakes_select_and_drains(ring: Ring) -> None:
    with doorbell() as (bell, write_fd):
        assert not readable(bell, 0)
        run(ring, 1)
        ring_doorbell(write_fd)
        run(ring, 2)
        ring_doorbell(write_fd)
        assert readable(bell, 0)
        drain_doorbell(bell)
        assert not readable(bell, 0)
        assert [ring.pop(0).key, ring.pop(0).key] == [1, 2]
        assert ring.pop(0) is None
        run(ring, 3)  # a push without a ring (an executor that goes on at once)
        assert not readable(bell, 0)
        assert ring.pop(0).key == 3


def test_doorbell_wakes_a_zmq_poller_across_processes(tmp_path: pathlib.Path) -> None:
    n = 50
    with Ring.create(PREFIX, spill_dir=str(tmp_path)) as ring, doorbell() as (bell, write_fd):
        def executor() -> int:
            for key in range(n):
                time.sleep(0.001 if key % 10 == 0 else 0)
                assert run(ring, key, timeout=5)
                ring_doorbell(write_fd)
            return 0

        pid = fork(executor)
        poller = zmq.Poller()
        poller.register(bell, zmq.POLLIN)
        keys: list[int] = []
        deadline = time.monotonic() + 10
        while len(keys) < n and time.monotonic() < deadline:
            if dict(poller.poll(1000)).get(bell):
                drain_doorbell(bell)
                while (r := ring.pop(0)) is not None:
                    keys.append(r.key)
        assert reap(pid) == 0
        assert keys == list(range(n))


def test_a_full_doorbell_pipe_does_not_stop_pushes(ring: Ring) -> None:
    with doorbell() as (bell, write_fd):
        size = fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)
        for key in range(size + 100):
            assert run(ring, key, timeout=0)
            ring_doorbell(write_fd)
            assert ring.pop(0).key == key
        assert readable(bell, 0)
        drain_doorbell(bell)
        assert not readable(bell, 0)


# --- property -------------------------------------------------------------------------------

records = st.builds(
    Record,
    key=st.integers(0, (1 << 64) - 1),
    instance=st.integers(0, (1 << 32) - 1),
    kind=st.sampled_from(RecordKind),
    flags=st.integers(0, 0x7F),
    numa=st.integers(-(1 << 15), (1 << 15) - 1),
    pid=st.integers(-(1 << 31), (1 << 31) - 1),
    status=st.integers(-(1 << 31), (1 << 31) - 1),
    t_start=st.floats(allow_nan=False),
    t_end=st.floats(allow_nan=False),
    cpus=st.lists(st.integers(0, MAX_CPUS - 1), unique=True, max_size=70).map(sorted),
    payload=st.binary(max_size=700),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(records, max_size=20), st.integers(1, 4))
def test_any_records_pushed_come_out_equal_and_in_order(
    pushed: list[Record], capacity: int
) -> None:
    with (
        tempfile.TemporaryDirectory() as spill_dir,
        Ring.create(PREFIX, capacity=capacity, payload_size=256, spill_dir=spill_dir) as ring,
    ):
        popped: list[Record] = []
        for record in pushed:
            while not ring.push(**record._asdict(), timeout=0):
                popped.append(ring.pop(0))
        while (r := ring.pop(0)) is not None:
            popped.append(r)
        assert popped == pushed
        assert os.listdir(spill_dir) == []


def test_header_size_leaves_slots_cache_line_aligned() -> None:
    assert HEADER_SIZE % 64 == 0 and record_dtype().itemsize % 64 == 0
