"""The journal's pure parts: framing and damage, records of every event, snapshots, writer.

The scenario of ``test_job_events`` (every kind of event, through the real cluster core) is
replayed here through journal records: encoded, framed, scanned, decoded and applied, the
fresh books must equal the originals; and so must books restored from a snapshot.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
from hqshm.cluster.frozen import replace
from test_job_events import Cluster, Replica, play_everything, snapshot

from hqshm.server.endpoints import journal_server_uid
from hqshm.server.journal import frames
from hqshm.server.journal.records import (
    JOURNAL,
    Counters,
    JobSnapshot,
    ServerStarted,
    compress_ints,
    compress_times,
    decompress_ints,
    decompress_times,
    to_event,
    to_record,
)
from hqshm.server.journal.restore import read_records, replay
from hqshm.server.journal.snapshot import snapshot as state_records
from hqshm.server.journal.writer import Journal


def record_bytes(c: Cluster) -> bytes:
    payloads = [JOURNAL.encode(ServerStarted("uid", 1.0))]
    payloads += [JOURNAL.encode(to_record(e)) for e in c.recorder.events]
    return frames.HEADER + frames.frame_all(payloads)


def replayed(data: bytes) -> Replica:
    fresh = Replica()
    for payload in frames.scan(data).payloads:
        event = to_event(JOURNAL.decode(payload))
        if event is not None:
            fresh.book.apply(event)
    return fresh


def test_every_event_survives_its_journal_record() -> None:
    c = Cluster()
    play_everything(c)
    assert snapshot(replayed(record_bytes(c)).book) == snapshot(c.book)


def test_a_snapshot_restores_the_same_books() -> None:
    c = Cluster()
    play_everything(c)
    records = [JOURNAL.decode(JOURNAL.encode(r)) for r in state_records(c.book, 7)]
    assert isinstance(records[0], Counters)
    fresh = Replica()
    assert replay(fresh.book, records) == 7
    assert snapshot(fresh.book) == snapshot(c.book)


def test_events_after_a_snapshot_apply_on_top_of_it() -> None:
    c = Cluster()
    play_everything(c)
    cut = len(c.recorder.events) // 2
    first = Replica()
    for event in c.recorder.events[:cut]:
        first.book.apply(event)
    records = list(state_records(first.book, 5))
    records += [to_record(e) for e in c.recorder.events[cut:]]
    fresh = Replica()
    replay(fresh.book, [JOURNAL.decode(JOURNAL.encode(r)) for r in records])
    assert snapshot(fresh.book) == snapshot(c.book)


def test_a_torn_or_zeroed_tail_is_reported_and_ignored() -> None:
    c = Cluster()
    play_everything(c)
    data = record_bytes(c)
    whole = frames.scan(data)
    assert not whole.damage and whole.valid_end == len(data)
    for tail in (data[:-5], data + b"\0" * 100, data + frames.SYNC + b"\xff\xff"):
        scan = frames.scan(tail)
        assert [d.at_end for d in scan.damage] == [True]
        assert scan.valid_end <= len(data)
    torn = frames.scan(data[:-5])
    assert len(torn.payloads) == len(whole.payloads) - 1


def test_a_damaged_block_in_the_middle_costs_only_its_records() -> None:
    c = Cluster()
    play_everything(c)
    data = bytearray(record_bytes(c))
    whole = frames.scan(bytes(data))
    third = whole.offsets[3]
    data[third + frames.PREFIX_SIZE + 1] ^= 0xFF  # one flipped bit fails the checksum
    scan = frames.scan(bytes(data))
    assert [(d.offset, d.at_end) for d in scan.damage] == [(third, False)]
    assert len(scan.payloads) == len(whole.payloads) - 1
    assert scan.valid_end == len(data)


def test_a_file_that_is_not_a_journal_is_refused() -> None:
    with pytest.raises(frames.NotAJournal):
        frames.scan(b"#!/bin/bash\necho hello\n")
    assert frames.scan(frames.HEADER[:5]).payloads == []  # a torn header is an empty journal
    assert frames.scan(b"").payloads == []


def test_records_from_a_slice_stop_at_a_cut_record() -> None:
    payloads = [b"a" * 10, b"b" * 20, b"c" * 30]
    data = frames.frame_all(payloads)
    got, used = frames.records_from(data[:-4])
    assert got == payloads[:2] and used == len(frames.frame_all(payloads[:2]))
    assert frames.record_size(data) == frames.PREFIX_SIZE + 10
    assert frames.record_size(b"junk" * 4) is None


def test_undecodable_records_are_skipped_with_a_warning(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j"
    good = JOURNAL.encode(ServerStarted("uid", 1.0))
    path.write_bytes(frames.HEADER + frames.frame_all([good, b"\x93\x01\x63\x00", good]))
    with caplog.at_level(logging.WARNING):
        loaded = read_records(path)
    assert len(loaded.records) == 2 and loaded.server_uid == "uid"
    assert "skipped" in caplog.text


def test_repair_cuts_the_file_at_its_last_good_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    good = frames.HEADER + frames.frame(JOURNAL.encode(ServerStarted("uid", 1.0)))
    path.write_bytes(good + b"\x00" * 33)
    read_records(path, repair=True)
    assert path.read_bytes() == good


@pytest.mark.parametrize("values", [
    np.array([], dtype=np.uint32), np.arange(1_000, dtype=np.uint32),
    np.array([5, 0, 2**32 - 1, 7], dtype=np.uint32), np.array([0, 3, 1], dtype=np.uint8)])
def test_int_columns_round_trip(values: np.ndarray) -> None:
    packed = compress_ints(values, values.dtype.str[1:])
    back = decompress_ints(packed, len(values))
    assert back.dtype == values.dtype and back.tolist() == values.tolist()


def test_time_columns_keep_microseconds_and_never() -> None:
    times = np.array([np.nan, 1_790_000_000.123456, 1_790_000_001.5, np.nan])
    back = decompress_times(compress_times(times), 4)
    assert np.isnan(back[0]) and np.isnan(back[3])
    assert back[1:3].tolist() == pytest.approx(times[1:3].tolist(), abs=1e-6)


def test_a_finished_million_task_job_snapshot_is_small() -> None:
    c = Cluster()
    job = c.book.submit(_array_of(1_000_000), 100.0)[0]
    table = job.submits[0].table
    table.state[:] = 2
    table.worker[:] = np.arange(1_000_000) % 2 + 1
    table.started[:] = 1.79e9 + np.arange(1_000_000) * 0.0005
    table.ended[:] = table.started + 0.001
    size = sum(len(frames.frame(JOURNAL.encode(r))) for r in state_records(c.book, 1))
    assert size < 16 * 1024 * 1024, size
    restored = Replica()
    replay(restored.book, [JOURNAL.decode(JOURNAL.encode(r))
                           for r in state_records(c.book, 1)])
    got = restored.book.jobs[job.id].submits[0].table
    assert got.state.tolist() == table.state.tolist()
    assert np.allclose(got.ended, table.ended, atol=1e-6, rtol=0)


def _array_of(n: int):  # noqa: ANN202 - ArraySubmission
    from test_job_events import array

    return array(((0, n - 1, 1),))


def test_a_full_disk_keeps_events_queued_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    journal = Journal(Path("/dev/full"), lambda: [])
    journal.append(ServerStarted("uid", 1.0))
    with caplog.at_level(logging.ERROR):
        assert not journal.flush()
        assert not journal.flush()
    assert caplog.text.count("Cannot write journal") == 1
    assert journal.pending and journal.failing


def test_compaction_rewrites_the_journal_as_the_snapshot() -> None:
    c = Cluster()
    play_everything(c)
    journal = Journal(None, lambda: [ServerStarted("uid", 0.0), *state_records(c.book, 9)])
    for event in c.recorder.events:
        journal.emit(event)
    journal.flush()
    before = journal.size
    assert journal.compact() < before and journal.generation == 1
    scan = frames.scan(journal.read(0, 1 << 30))
    records = [JOURNAL.decode(p) for p in scan.payloads]
    assert sum(isinstance(r, JobSnapshot) for r in records) == len(c.book.jobs)
    fresh = Replica()
    replay(fresh.book, records)
    assert snapshot(fresh.book) == snapshot(c.book)


@pytest.mark.parametrize("n", [10, 1000], ids=["raw", "deflated"])
def test_decompression_rejects_a_column_of_the_wrong_length(n: int) -> None:
    packed = compress_ints(np.arange(n, dtype=np.uint32), "u4")
    assert decompress_ints(packed, n).tolist() == list(range(n))
    with pytest.raises(ValueError):
        decompress_ints(packed, n + 1)
    with pytest.raises(ValueError, match="unknown type"):
        decompress_ints(b"garbage", 1)
    with pytest.raises(zlib.error):
        decompress_ints(b"garbage" + b"u4", 1)


@pytest.mark.parametrize("n", [3, 1000], ids=["raw", "deflated"])
def test_times_keep_never_and_the_microsecond(n: int) -> None:
    times = np.full(n, np.nan)
    times[1] = 1_700_000_000.123456
    back = decompress_times(compress_times(times), n)
    assert np.isnan(back[0]) and back[1] == pytest.approx(times[1], abs=1e-6)
    with pytest.raises(ValueError):
        decompress_times(compress_times(times), n + 1)


def test_background_compaction_keeps_the_events_written_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hqshm.server.journal.writer.COMPACT_MIN_BYTES", 0)
    c = Cluster()
    play_everything(c)
    path = tmp_path / "j"
    cut = len(c.recorder.events) // 2
    first = Replica()
    for event in c.recorder.events[:cut]:
        first.book.apply(event)
    journal = Journal(path, lambda: [ServerStarted("uid", 0.0), *state_records(first.book, 9)])
    for event in c.recorder.events[:cut]:
        journal.emit(event)
    journal.flush()
    journal.maintain()  # forks the child, which snapshots the first half
    assert journal.compactor is not None
    for event in c.recorder.events[cut:]:  # the server goes on meanwhile
        journal.emit(event)
    journal.flush()
    while journal.compactor is not None:
        journal.maintain()
    assert journal.generation == 1 and not (tmp_path / "j.compacting").exists()
    journal.close()
    loaded = read_records(path)
    assert sum(isinstance(r, JobSnapshot) for r in loaded.records) == len(first.book.jobs)
    fresh = Replica()
    replay(fresh.book, loaded.records)
    assert snapshot(fresh.book) == snapshot(c.book)


def test_running_tasks_of_reconnecting_nodes_wait_for_them_after_a_restore() -> None:
    from dataclasses import replace

    from test_job_events import array, config

    from hqshm.server.journal.restore import core_groups, running_tasks

    c = Cluster()
    keeper = c.env.worker(2)
    c.workers.joined(keeper.wid, replace(config(keeper), on_server_lost="reconnect"), c.now)
    other = c.connect(cpus=2)
    job = c.submit(array(((0, 5, 1),)))
    kept, lost = c.assigned(keeper, job), c.assigned(other, job)
    c.start(keeper, kept)
    c.start(other, lost)
    fresh = Replica()
    replay(fresh.book, [to_record(e) for e in c.recorder.events])
    running = running_tasks(fresh.book)
    assert sorted(key for key, _gid, _instance in running.orphans) == kept
    assert sorted(running.requeued) == lost and set(running.instances) == {1}
    (group,) = core_groups(fresh.book, [key for key, _, _ in running.orphans])
    assert not set(group.group.keys.tolist()) & set(kept)
    assert group.group.active == 6


def test_restored_groups_keep_instances_and_crash_counts() -> None:
    from hqshm.cluster.protocol import StopReason
    from test_job_events import array

    from hqshm.server.journal.restore import core_groups

    c = Cluster()
    lost, other = c.connect(cpus=2), c.connect(cpus=2)
    job = c.submit(array(((0, 7, 1),)))
    on_lost = c.assigned(lost, job)
    c.assigned(other, job)
    c.start(lost, on_lost[:1])
    c.lose(lost, StopReason.CONNECTION_LOST)  # one crash for the running one
    fresh = Replica()
    replay(fresh.book, [to_record(e) for e in c.recorder.events])
    (new,) = core_groups(fresh.book)
    assert new.group.crashes == {on_lost[0]: 1}
    assert new.group.instances == {key: 1 for key in on_lost}


def test_the_server_uid_is_read_from_the_first_record_alone(tmp_path: Path) -> None:
    """`hq server start` publishes its access file before it loads the journal; the UID it
    publishes must be the one the full load finds, or reconnecting nodes are refused."""
    path = tmp_path / "journal"
    assert journal_server_uid(None) == (True, None)
    assert journal_server_uid(path) == (True, None)  # no file yet: a fresh UID
    path.write_bytes(b"")
    assert journal_server_uid(path) == (True, None)
    c = Cluster()
    play_everything(c)
    data = record_bytes(c)
    path.write_bytes(data)
    assert journal_server_uid(path) == (True, "uid") == (True, read_records(path).server_uid)
    first_end = len(frames.HEADER) + frames.PREFIX_SIZE + len(frames.scan(data).payloads[0])
    for damaged in (data[: first_end - 1], data[:20] + b"\xff" + data[21:], b"not a journal"):
        path.write_bytes(damaged)
        assert journal_server_uid(path) == (False, None)  # the full load decides
    other = frames.HEADER + frames.frame(JOURNAL.encode(to_record(c.recorder.events[0])))
    path.write_bytes(other)
    assert journal_server_uid(path) == (False, None)


def test_an_in_memory_journal_is_kept_only_while_clients_read_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --journal nothing is encoded or kept until `hq journal replay|stream` asks;
    the reader then gets the state as a snapshot, and the events from then on."""
    c = Cluster()
    play_everything(c)
    cut = len(c.recorder.events) // 2
    journal = Journal(None, lambda: [ServerStarted("uid", 0.0), *state_records(c.book, 9)],
                      on_demand=True)
    for event in c.recorder.events[:cut]:
        journal.emit(event)
    journal.flush()
    assert journal.size <= len(frames.HEADER) and not journal.pending
    first = frames.records_from(journal.read(len(frames.HEADER), 1 << 30))[0]
    assert journal.generation == 1
    assert isinstance(JOURNAL.decode(first[0]), ServerStarted)
    assert sum(isinstance(JOURNAL.decode(p), JobSnapshot) for p in first) == len(c.book.jobs)
    for event in c.recorder.events[cut:]:
        journal.emit(event)
    journal.flush()
    grown = frames.records_from(journal.read(len(frames.HEADER), 1 << 30))[0]
    assert len(grown) == len(first) + len(c.recorder.events) - cut
    journal.maintain()  # read a moment ago: kept
    assert not journal.dormant
    monkeypatch.setattr("hqshm.server.journal.writer.READER_IDLE", -1.0)
    journal.maintain()
    assert journal.dormant and journal.size == 0 and journal.generation == 2
    journal.emit(c.recorder.events[0])
    assert not journal.pending


@pytest.mark.expect_log
def test_group_ids_near_the_end_of_64_bits_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    """A journal may name any group id: one whose successor would not encode (a crafted
    file) loses its record, so later submits still work."""
    c = Cluster()
    play_everything(c)
    records = [JOURNAL.decode(JOURNAL.encode(r)) for r in state_records(c.book, 7)]
    snap = next(r for r in records if isinstance(r, JobSnapshot))
    bad = [Counters(1, 2**64 - 1, 1),
           replace(snap, submits=tuple(replace(s, gid=2**64 - 1) for s in snap.submits))]
    fresh = Replica()
    with caplog.at_level(logging.WARNING):
        replay(fresh.book, [*records, *bad])
    assert caplog.text.count("a group id outside 0-4611686018427387904") == 2
    assert snapshot(fresh.book) == snapshot(c.book)
    assert fresh.book.next_gid == c.book.next_gid
