"""The stream file format, its writer and reader (hqshm/streaming.py), and the executor's
streamed launch path (hqshm/node/executor.py), driven without a server."""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from node_env import executor_pool

from hqshm.cli.commands.outputlog import show_lines
from hqshm.cli.streamlog import (
    StreamLog,
    list_stream_files,
    read_header,
    read_stream,
    read_stream_file,
)
from hqshm.model.program import ProgramSpec, Stdio
from hqshm.model.streamformat import (
    MAGIC,
    MAX_DATA,
    Chunk,
    CorruptStream,
    StreamDecoder,
    StreamHeader,
    encode_header,
    encode_record,
    stream_file_name,
)
from hqshm.node.executor import FAILED, OK, TaskPayload
from hqshm.node.pool import ExecutorPool
from hqshm.node.ring import Record, RecordKind
from hqshm.node.streamwriter import StreamError, StreamFiles, TaskStream

HEADER = StreamHeader("aB3xQ9", 7)


def stream_bytes(*records: bytes, header: StreamHeader = HEADER) -> bytes:
    return encode_header(header) + b"".join(records)


def decode_all(data: bytes, step: int | None = None) -> tuple[list[Chunk], StreamDecoder]:
    decoder = StreamDecoder()
    chunks = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        decoder.feed(piece)
        while (chunk := decoder.next_chunk()) is not None:
            chunks.append(chunk)
    return chunks, decoder


# --- format ----------------------------------------------------------------------------------


def test_round_trip_whole_and_byte_by_byte() -> None:
    records = [
        encode_record(1.5, 1, 0, 0, 0, b"Hello\n"),
        encode_record(1.6, 1, 0, 0, 1, b"oops"),
        encode_record(1.7, 1, 0, 0, 0),
    ]
    data = stream_bytes(*records)
    for step in (None, 1, 7):
        chunks, decoder = decode_all(data, step)
        assert decoder.header == HEADER
        assert decoder.pending == 0
        assert [(c.time, c.job, c.task, c.instance, c.channel, c.data) for c in chunks] == [
            (1.5, 1, 0, 0, 0, b"Hello\n"),
            (1.6, 1, 0, 0, 1, b"oops"),
            (1.7, 1, 0, 0, 0, b""),
        ]
    assert [c.is_end for c in chunks] == [False, False, True]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.sampled_from([0, 1]),
            st.binary(max_size=300),
        ),
        max_size=20,
    ),
    st.text(alphabet="abcXYZ019", max_size=12),
    st.integers(0, 2**32 - 1),
)
def test_round_trip_property(
    items: list[tuple[int, int, int, int, bytes]], uid: str, worker: int
) -> None:
    header = StreamHeader(uid, worker)
    data = stream_bytes(*(encode_record(0.25, *item) for item in items), header=header)
    chunks, decoder = decode_all(data, step=5)
    assert decoder.header == header
    assert [(c.job, c.task, c.instance, c.channel, c.data) for c in chunks] == items


def test_torn_tail_keeps_everything_before_it() -> None:
    whole = stream_bytes(encode_record(1.0, 1, 2, 0, 0, b"first\n"))
    torn = encode_record(2.0, 1, 2, 0, 0, b"second\n")[:-3]
    chunks: list[Chunk] = []
    result = read_stream(io.BytesIO(whole + torn), chunks.append, "x.hqs")
    assert [c.data for c in chunks] == [b"first\n"]
    assert result.problem == f"truncated record at byte {len(whole)} ({len(torn)} bytes ignored)"


def test_file_ending_inside_its_header() -> None:
    chunks: list[Chunk] = []
    result = read_stream(io.BytesIO(encode_header(HEADER)[:10]), chunks.append)
    assert chunks == []
    assert result.header is None
    assert result.problem == "the file ends inside its header"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"NOTASTREAMFILE..", "not a stream file (bad magic)"),
        (b"HQSX", "not a stream file (bad magic)"),
        (MAGIC + struct.pack("<HH", 9, 5), "unsupported stream version 9"),
        (MAGIC + struct.pack("<HH", 1, 60000), "header length 60000 out of bounds"),
        (MAGIC + struct.pack("<HHIB", 1, 5, 1, 200) + b"x" * 300, "inconsistent header length"),
    ],
)
def test_hostile_headers(data: bytes, reason: str) -> None:
    decoder = StreamDecoder()
    decoder.feed(data)
    with pytest.raises(CorruptStream) as info:
        decoder.next_chunk()
    assert info.value.reason == reason
    assert info.value.offset == 0


def test_hostile_record_size_is_refused_before_reading() -> None:
    good = encode_record(1.0, 1, 0, 0, 0, b"ok")
    # A record header claiming 4 GiB: refused from its 32 bytes, nothing allocated for it.
    hostile = bytearray(encode_record(1.0, 1, 1, 0, 0, b""))
    struct.pack_into("<I", hostile, 24, 0xFFFF_FFFF)
    data = stream_bytes(good, bytes(hostile))
    chunks: list[Chunk] = []
    result = read_stream(io.BytesIO(data), chunks.append)
    assert [c.data for c in chunks] == [b"ok"]
    offset = len(stream_bytes(good))
    assert result.problem == (
        f"corrupt data at byte {offset}: record size 4294967295 exceeds {MAX_DATA} "
        f"(the remaining 32 bytes are ignored)"
    )


@pytest.mark.parametrize(
    ("position", "value", "reason"),
    [
        (0, 0x1234, "no record starts here"),
        (2, 7, "bad record (channel 7, flags 0)"),
        (30, 0x4141, "checksum mismatch"),  # a flipped byte of the data
    ],
)
def test_corrupt_records(position: int, value: int, reason: str) -> None:
    record = bytearray(encode_record(1.0, 1, 0, 0, 0, b"payload"))
    if position == 2:
        record[2] = value
    else:
        struct.pack_into("<H", record, position, value)
    with pytest.raises(CorruptStream) as info:
        decode_all(stream_bytes(bytes(record)))
    assert info.value.reason == reason
    assert info.value.offset == len(encode_header(HEADER))


def test_encode_refuses_oversized_records() -> None:
    with pytest.raises(ValueError):
        encode_record(0.0, 1, 1, 0, 0, b"x" * (MAX_DATA + 1))


def test_file_names_are_shared_by_a_node_and_differ_between_nodes() -> None:
    name = stream_file_name("nodeKEY12345", "aB3xQ9")
    assert name == stream_file_name("nodeKEY12345", "aB3xQ9")
    assert len(name) == len("123456789012.hqs") and name.endswith(".hqs")
    assert name[:12].isalnum() and name[:12].isascii()
    assert name != stream_file_name("nodeKEY12346", "aB3xQ9")
    assert name != stream_file_name("nodeKEY12345", "aB3xQ8")


# --- writing ---------------------------------------------------------------------------------


def test_writer_creates_one_file_and_reuses_it(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    files = StreamFiles("key")
    try:
        fd = files.open(str(directory), "uid001", 3)
        assert files.open(str(directory), "uid001", 3) == fd
        TaskStream(fd, 1, 2, 0).write(0, b"x")
        TaskStream(fd, 1, 2, 0).finish([(1, b"y")])
    finally:
        files.close()
    [path] = list_stream_files(str(directory))
    assert os.listdir(directory) == [os.path.basename(path)]  # no temporary file left
    assert read_header(path) == StreamHeader("uid001", 3)
    chunks: list[Chunk] = []
    assert read_stream_file(path, chunks.append).problem is None
    assert [(c.channel, c.data) for c in chunks] == [(0, b"x"), (1, b"y"), (0, b"")]


def test_writer_follows_a_recreated_directory(tmp_path: Path) -> None:
    files = StreamFiles("key")
    try:
        fd = files.open(str(tmp_path / "s"), "uid001", 1)
        TaskStream(fd, 1, 0, 0).finish()
        [old] = list_stream_files(str(tmp_path / "s"))
        os.unlink(old)
        os.rmdir(tmp_path / "s")
        TaskStream(files.open(str(tmp_path / "s"), "uid001", 1), 2, 0, 0).finish()
    finally:
        files.close()
    [path] = list_stream_files(str(tmp_path / "s"))
    chunks: list[Chunk] = []
    read_stream_file(path, chunks.append)
    assert [c.job for c in chunks] == [2]


def test_writer_error_says_what_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    files = StreamFiles("key")
    with pytest.raises(StreamError) as info:
        files.open(str(blocker / "sub"), "uid001", 1)
    assert str(info.value) == (
        f"cannot create the stream directory {blocker / 'sub'}: Not a directory (os error 20)"
    )


def _child(body: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def test_several_writers_create_one_file_and_never_interleave(tmp_path: Path) -> None:
    """Processes racing to create the node's file all end up in one, and their records,
    written concurrently, all decode (no record is split by another)."""
    writers, tasks, size = 4, 200, 3000
    directory = str(tmp_path / "stream")
    go_r, go_w = os.pipe()

    def write(index: int) -> None:
        os.read(go_r, 1)  # start together
        files = StreamFiles("shared-node-key")
        for task in range(tasks):
            fd = files.open(directory, "uid001", 1)
            stream = TaskStream(fd, index, task, 0)
            stream.write(0, bytes([65 + index]) * size)
            stream.finish()

    pids = [_child(lambda i=i: write(i)) for i in range(writers)]
    os.write(go_w, b"x" * writers)
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    os.close(go_r)
    os.close(go_w)
    assert statuses == [0] * writers
    [path] = list_stream_files(directory)
    assert sorted(os.listdir(directory)) == [os.path.basename(path)]
    log = StreamLog()
    assert read_stream_file(path, log.add).problem is None
    assert log.summary().n_tasks == writers * tasks
    for job in range(writers):
        for task in range(tasks):
            stream = log.latest(job, task)
            assert stream is not None and stream.finished
            assert stream.data(0) == bytes([65 + job]) * size


# --- the index -------------------------------------------------------------------------------


def test_log_summary_counts_latest_and_superseded_instances() -> None:
    log = StreamLog()
    for chunk in [
        Chunk(1.0, 1, 0, 0, 0, b"Start\n"),  # instance 0: lost with its worker, no end
        Chunk(2.0, 1, 0, 1, 0, b"Start\n"),
        Chunk(3.0, 1, 0, 1, 0, b"End 1\n"),
        Chunk(3.1, 1, 0, 1, 0, b""),
        Chunk(1.5, 1, 1, 0, 1, b"err"),  # still running: opened
        Chunk(1.2, 2, 10, 0, 0, b"x"),
        Chunk(1.3, 2, 10, 0, 0, b""),
    ]:
        log.add(chunk)
    s = log.summary()
    assert (s.n_jobs, s.n_tasks, s.n_streams, s.n_opened) == (2, 3, 4, 1)
    assert (s.stdout_size, s.stderr_size) == (13, 3)
    assert (s.n_superseded, s.superseded_stdout_size, s.superseded_stderr_size) == (1, 6, 0)
    assert log.jobs() == [1, 2]
    assert log.id_widths() == (1, 2)
    shown = b"".join(show_lines(log, None, None))
    assert shown == (b"2.10:0> x\n1.01:1> err\n1.00:0> Start\n1.00:0> End 1\n")
    assert b"".join(show_lines(log, 1, 0)) == b"1.00:0> Start\n1.00:0> End 1\n"


def test_log_holds_bytes_only_of_the_jobs_asked_for() -> None:
    log = StreamLog(data_jobs=(2,))
    for job in (1, 2):
        log.add(Chunk(1.0, job, 0, 0, 0, b"abc"))
        log.add(Chunk(1.1, job, 0, 0, 0, b""))
    assert log.latest(1, 0).data(0) == b"" and log.latest(2, 0).data(0) == b"abc"
    assert log.summary().stdout_size == 6  # sizes count either way
    assert log.latest(1, 0).finished


# --- the executor's streamed path ------------------------------------------------------------


@pytest.fixture
def executors(tmp_path: Path) -> Iterator[ExecutorPool]:
    yield from executor_pool(tmp_path, count=2, worker_id=5)


def spec(tmp_path: Path, script: str, stdout: Stdio | None = None, **kw: object) -> ProgramSpec:
    return ProgramSpec(
        args=("bash", "-c", script),
        env={},
        cwd=str(tmp_path),
        stdout=stdout or Stdio(Stdio.STREAM),
        stderr=Stdio(Stdio.STREAM),
        job_id=3,
        submit_dir=str(tmp_path),
        server_uid="uid001",
        stream_dir=str(tmp_path / "stream"),
        **kw,  # type: ignore[arg-type]
    )


def run_task(
    pool: ExecutorPool, program: ProgramSpec, task: int = 0, index: int = 0, gid: int = 1
) -> Iterator[Record]:
    handle = pool.handles[index]
    payload = TaskPayload(gid, None, {}, [], True, False).encode()
    key = (program.job_id << 32) | task
    pool.dispatch(handle, key, 0, gid, program.encode(), [], -1, payload)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        select.select([pool.doorbell_r], [], [], 0.05)
        for _, record in pool.drain():
            if record.key == key:
                yield record
                if record.kind == RecordKind.ENDED:
                    return
    raise AssertionError("the task did not end")


def ended(pool: ExecutorPool, program: ProgramSpec, task: int = 0) -> Record:
    return [r for r in run_task(pool, program, task) if r.kind == RecordKind.ENDED][-1]


def the_log(tmp_path: Path) -> StreamLog:
    log = StreamLog()
    for path in list_stream_files(str(tmp_path / "stream")):
        assert read_stream_file(path, log.add).problem is None
    return log


def test_executor_streams_both_channels(executors: ExecutorPool, tmp_path: Path) -> None:
    record = ended(executors, spec(tmp_path, "echo Ok; echo Error >&2"))
    assert record.status == OK, record.payload
    [path] = list_stream_files(str(tmp_path / "stream"))
    assert read_header(path) == StreamHeader("uid001", 5)
    stream = the_log(tmp_path).latest(3, 0)
    assert stream is not None and stream.finished
    assert (stream.data(0), stream.data(1)) == (b"Ok\n", b"Error\n")


def test_executors_learn_the_worker_id_after_the_fork(
    executors: ExecutorPool, tmp_path: Path
) -> None:
    executors.set_worker_id(9)  # what the node does once the server registered it
    assert ended(executors, spec(tmp_path, "true")).status == OK
    [path] = list_stream_files(str(tmp_path / "stream"))
    assert read_header(path) == StreamHeader("uid001", 9)


def test_executors_of_a_node_share_one_file(executors: ExecutorPool, tmp_path: Path) -> None:
    program = spec(tmp_path, "echo $HQ_TASK_ID")
    for task in range(6):
        handle_index = task % 2
        records = list(run_task(executors, program, task, index=handle_index))
        assert records[-1].status == OK
    assert len(list_stream_files(str(tmp_path / "stream"))) == 1
    log = the_log(tmp_path)
    assert [log.latest(3, t).data(0) for t in range(6)] == [f"{t}\n".encode() for t in range(6)]


def test_failed_task_stream_is_finished_and_complete(
    executors: ExecutorPool, tmp_path: Path
) -> None:
    record = ended(executors, spec(tmp_path, "head -c 300000 /dev/zero; echo bye >&2; exit 3"))
    assert record.status == FAILED
    assert record.payload.decode() == "Program terminated with exit code 3."
    stream = the_log(tmp_path).latest(3, 0)
    assert stream is not None and stream.finished
    assert stream.data(0) == b"\0" * 300000 and stream.data(1) == b"bye\n"


def test_output_before_a_kill_is_in_the_file(executors: ExecutorPool, tmp_path: Path) -> None:
    records = run_task(executors, spec(tmp_path, "echo Start; exec sleep 30"))
    started = next(records)
    assert started.kind == RecordKind.STARTED
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = list_stream_files(str(tmp_path / "stream"))
        stream = the_log(tmp_path).latest(3, 0) if files else None
        if stream is not None and stream.data(0) == b"Start\n":
            break
        time.sleep(0.02)
    else:
        raise AssertionError("`Start` never reached the stream file")
    assert not stream.finished
    os.killpg(started.pid, signal.SIGINT)
    last = list(records)[-1]
    assert last.status == FAILED
    assert "Received signal 2 (SIGINT)" in last.payload.decode()
    stream = the_log(tmp_path).latest(3, 0)
    assert stream is not None and stream.finished and stream.data(0) == b"Start\n"


def test_a_child_left_holding_the_pipe_does_not_hold_the_task(
    executors: ExecutorPool, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    record = ended(executors, spec(tmp_path, "sleep 60 & echo main"))
    assert time.monotonic() - t0 < 30  # the task ended long before the child it left
    assert record.status == OK
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGKILL)  # the sleep, in the task's session
    assert the_log(tmp_path).latest(3, 0).data(0) == b"main\n"


def test_partial_streaming_keeps_the_file_channel(executors: ExecutorPool, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    program = spec(tmp_path, "echo to-file; echo to-stream >&2", Stdio(Stdio.FILE, str(out)))
    assert ended(executors, program).status == OK
    assert out.read_text() == "to-file\n"
    stream = the_log(tmp_path).latest(3, 0)
    assert (stream.data(0), stream.data(1)) == (b"", b"to-stream\n")


def test_spawn_failure_ends_the_stream(executors: ExecutorPool, tmp_path: Path) -> None:
    program = replace(spec(tmp_path, ""), args=("/no/such/program",))
    record = ended(executors, program)
    assert record.status == FAILED
    assert record.payload.decode().startswith('Cannot execute "/no/such/program"')
    stream = the_log(tmp_path).latest(3, 0)
    assert stream is not None and stream.finished


def test_unwritable_stream_fails_the_task(executors: ExecutorPool, tmp_path: Path) -> None:
    (tmp_path / "stream").write_text("a file, not a directory")
    record = ended(executors, spec(tmp_path, "echo never"))
    assert record.status == FAILED
    assert record.payload.decode() == (
        f"Streaming: cannot create the stream directory {tmp_path / 'stream'}: "
        "File exists (os error 17)"
    )
