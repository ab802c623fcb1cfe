"""The codec of both links: every message round-trips, and a bad frame is always refused as the
peer's fault (``PeerError``, or ``VersionMismatch`` for another protocol), never a crash."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar, NewType

import hqshm.cluster.codec
import hqshm.cluster.protocol as protocol
import msgpack
import pytest
from hqshm.cluster.codec import Registry
from hqshm.cluster.errors import LocalProtocolError, PeerError, VersionMismatch
from hqshm.cluster.ids import TaskKey, WorkerId
from hqshm.cluster.protocol import NODE_LINK, PROTOCOL
from hqshm.cluster.resources import (
    FRACTIONS,
    CouplingWeight,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
    ResourcePool,
    ResourceRequest,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import hqshm.link.details as details
import hqshm.link.requests as requests
import hqshm.link.responses as responses
import hqshm.link.submitrequests as submitrequests
import hqshm.model.submission as submission
import hqshm.model.workerconfig as workerconfig
from hqshm.link.requests import CLIENT_LINK, CLIENT_PROTOCOL

# --- representative values ------------------------------------------------------------------

DESCRIPTOR = ResourceDescriptor(
    pools=(
        ResourcePool("cpus", PoolKind.GROUPS, (("0", "1"), ("2", "3"))),
        ResourcePool("gpus/nvidia", PoolKind.LIST, (("GPU-a", "GPU-b"),)),
        ResourcePool("mem", PoolKind.SUM, size=2 * FRACTIONS + 2_000),
        ResourcePool("ports", PoolKind.RANGE, start=1000, end=1999),
    ),
    coupling=(CouplingWeight(0, 0, 1, 0, 64), CouplingWeight(0, 1, 1, 0)),
)
REQUEST = ResourceRequest(
    (
        RequestVariant(
            (ResourceEntry("cpus", 25_000, Policy.FORCE_TIGHT), ResourceEntry("mem", 5_000)),
            min_time=30.5,
            weight=20_000,
        ),
        RequestVariant((ResourceEntry("gpus/nvidia", 0, Policy.COMPACT, all=True),)),
        RequestVariant(n_nodes=2),
    )
)
CONFIG = workerconfig.WorkerConfiguration(
    hostname="cn017",
    work_dir="/tmp/hq-worker",
    heartbeat=8.0,
    idle_timeout=None,
    time_limit=3600.0,
    on_server_lost="finish-running",
    group="rack1",
    pid=4242,
    listen_address="cn017:0",
    resources=DESCRIPTOR,
    manager="SLURM",
    manager_job_id="991",
    overview_interval=2.5,
    min_utilization=0.5,
)
TEMPLATE = submission.TaskTemplate(
    args=("python3", "-c", "print('é')"),
    env={"TOKEN": "s3cret", "EMPTY": ""},
    cwd="%{SUBMIT_DIR}/w",
    stdout=submission.StdioDesc("file", "out-%{TASK_ID}", True),
    stderr=submission.StdioDesc("none"),
    request=REQUEST,
    priority=-3,
    time_limit=1.5,
    crash_limit=-1,
    pin="taskset",
    task_dir=True,
    stdin=b"\x00\xffdata",
)
IDS = ((0, 9, 1), (20, 30, 5))
SELECTOR = requests.Selector("ids", IDS)
SUMMARY = responses.JobSummary(7, "job name", True, "user asked", 12, (1, 2, 3, 4, 1, 1))
TASK_VIEW = details.TaskView(
    id=3,
    state="FAILED",
    instance=2,
    worker_ids=(1, 4),
    hostnames=("a", "b"),
    started_at=1.25,
    ended_at=None,
    error="Program terminated with exit code 1.",
    cwd="/w",
    stdout="/w/3.out",
    stderr=None,
    stdout_kind="file",
    stderr_kind="none",
    submit_index=1,
)
SUBMIT_VIEW = details.SubmitView(TEMPLATE, "/w/out", None, "/w", IDS, is_array=False)
DETAIL = details.JobDetail(
    summary=SUMMARY,
    max_fails=None,
    submitted_at=10.0,
    finished_at=12.5,
    submit_dir="/w",
    submits=(SUBMIT_VIEW,),
    task_ids=IDS,
    workers=("a",),
    n_workers=3,
    failed=(TASK_VIEW,),
    n_failed=1,
    tasks=(TASK_VIEW, TASK_VIEW),
)
WORKER_VIEW = details.WorkerView(2, "RUNNING", CONFIG, 5.0, None, 3, 1, (7, 3, 6.5))
BIG_KEY = (2**32 - 1) << 32 | (2**32 - 1)

NODE_SAMPLES: list[Any] = [
    protocol.RegisterNode("0.1.0", "cn017", DESCRIPTOR, "rack1", 3600.0, 8.0, None, b"\x01opaque"),
    protocol.RegisterNode("0.1.0", "h", DESCRIPTOR, "default", None, 0.5, 300.0, b""),
    protocol.TaskUpdates(
        started=((1, 0, 1.5, 0), (BIG_KEY, 3, 2.0, 1)),
        finished=((1, 0, 1.5, 2.5, 0),),
        failed=((BIG_KEY, 3, 2.0, 4.0, 1, "Program terminated with exit code 1.", True),),
    ),
    protocol.TaskUpdates(results=((1, 0, 0, 17, b"HQR1" + bytes(13)), (BIG_KEY, 3, 0, 9 << 20, b""))),
    protocol.TaskUpdates(),
    protocol.ReleaseResults((1, 2**32 - 1)),
    protocol.TasksRetracted((5, BIG_KEY)),
    protocol.Heartbeat(),
    protocol.NodeStopping(protocol.StopReason.IDLE_TIMEOUT),
    protocol.NodeRegistered(3, "aB3xQ9", 30.0),
    protocol.DefineGroup(9, REQUEST, -5, b"\x00body"),
    protocol.ComputeTasks(9, (1, 2, BIG_KEY)),
    protocol.ComputeTasks(9, (1, 2), (0, 4), (b"line a", b"")),
    protocol.CancelTasks((1, 2)),
    protocol.RetractTasks((BIG_KEY,)),
    protocol.StopNode(protocol.StopReason.STOPPED),
    protocol.ServerHeartbeat(),
    protocol.ForgetGroups((1, 9, 2**40)),
    protocol.TaskNotification(BIG_KEY, 2, b"hello"),
    protocol.ReserveNode(BIG_KEY),
    protocol.ComputeTasks(7, (BIG_KEY,), (), (), ("root.cluster", "node2")),
    protocol.ComputeTasks(7, (3,), results=((BIG_KEY, 0, b"HQR1" + bytes(8)), (5, 1, b""))),
    protocol.TaskUpdates(results=((1, 0, protocol.RESULT_HELD, 5 << 20, b""),
                                  (2, 0, 1 | protocol.RESULT_OVER_CAP, 70 << 20, b"1048576"))),
    protocol.FetchResult(BIG_KEY, 2, 8 << 20, 8 << 20),
    protocol.ResultPart(BIG_KEY, 2, 0, 5 << 20, b"HQR1" + bytes(12)),
    protocol.ResultPart(1, 0, 0, 0, b"", "no such result on this worker"),
    protocol.StoreResult(BIG_KEY, 0, 8 << 20, (8 << 20) + 16, b"HQR1" + bytes(12)),
    protocol.StoreResult(5, protocol.STORE_UNAVAILABLE, 0, 13, b"worker 2 gone"),
]

CLIENT_SAMPLES: list[Any] = [
    requests.JobInfoRequest(SELECTOR),
    requests.ServerInfoRequest(),
    requests.StopServerRequest(),
    submitrequests.SubmitRequest(
        submission.ArraySubmission("array", 3, "/home/u", TEMPLATE, IDS, (b"a", b"b"), 4)),
    submitrequests.SubmitRequest(submission.ArraySubmission("plain", None, "/home/u", TEMPLATE, ())),
    requests.JobListRequest(("running", "failed"), True),
    requests.JobInfoRequest(requests.Selector("last"), include_tasks=True),
    requests.CancelJobsRequest(SELECTOR, "because"),
    requests.WaitJobsRequest(requests.Selector("all"), without_close=True),
    requests.JobProgressRequest(SELECTOR),
    requests.TaskListRequest(SELECTOR, IDS, ("waiting",)),
    requests.TaskListRequest(SELECTOR),
    requests.TaskInfoRequest(requests.Selector("ids", ((4, 4, 1),)), IDS),
    requests.WorkerListRequest(include_offline=True, include_online=False),
    requests.WorkerInfoRequest(SELECTOR),
    requests.StopWorkersRequest(requests.Selector("all")),
    responses.ErrorResponse("Job 123 not found."),
    responses.ServerInfo(
        "aB3xQ9", "login1", 6789, "login1", 6790, "0.1.0", 77, 1.7e9, "/var/journal"
    ),
    responses.Ack(),
    responses.SubmitResponse(7),
    responses.JobListResponse((SUMMARY, SUMMARY), 40),
    details.JobInfoResponse((DETAIL,), (8, 9)),
    responses.CancelJobsResponse(((7, 6, 4),), (3,), (99,)),
    responses.WaitJobsResponse((SUMMARY,), (5,)),
    responses.JobProgressResponse((SUMMARY,)),
    details.TaskListResponse(((7, (TASK_VIEW,)), (8, ())), (9,)),
    details.TaskInfoResponse(7, (TASK_VIEW,), (SUBMIT_VIEW,), (11,)),
    details.TaskInfoResponse(None, (), ()),
    details.WorkerListResponse((WORKER_VIEW,), (12,)),
    responses.StopWorkersResponse(((1, "stopped"), (2, "not-found"))),
    submitrequests.SubmitRequest(submission.ArraySubmission(
        "after", None, "/home/u", TEMPLATE, IDS, None, None, "log-%{JOB_ID}",
        (submission.TaskRef(1), submission.TaskRef(2, ((0, 9, 1),))))),
    submitrequests.SubmitGraphRequest(submission.GraphSubmission(
        "graph", 1, "/home/u",
        (submission.GraphTask(1, TEMPLATE), submission.GraphTask(2, TEMPLATE, (1,), b"entry")),
        job_id=3, stream_dir="/tmp/s")),
    requests.OpenJobRequest("job", 2),
    requests.CloseJobsRequest(requests.Selector("all")),
    requests.ForgetJobsRequest(requests.Selector("ids", ((1, 3, 1),)), ("finished",)),
    requests.JobSummaryRequest(),
    requests.TaskIdsRequest(requests.Selector("last"), ("failed",)),
    requests.TaskExplainRequest(requests.Selector("ids", ((1, 1, 1),)), 0),
    requests.ResubmitRequest(1, ("failed", "canceled")),
    responses.CloseJobsResponse(((1, "closed"), (2, "not-found"))),
    responses.ForgetJobsResponse(2, 1),
    requests.TaskResultsRequest(3, (0, 1, 2**32 - 1)),
    responses.TaskResultsResponse(((0, responses.ResultStatus.VALUE, 3, b"abc", ""),
                                   (1, responses.ResultStatus.PENDING, 0, b"", ""))),
    responses.Notification(1, 2, 3, b"message"),
    responses.JobSummaryResponse((("RUNNING", 1), ("FINISHED", 3))),
    responses.TaskIdsResponse(((1, ((0, 4, 1),)),), (9,)),
    details.TaskExplainResponse(
        1, 0, 2, 1,
        (details.ExplainWorker(1, (details.ExplainVariant((("Resources", "cpus", 40000,
                                                               10000),), True),), 12.5, 0),),
        (0.0,), (0,)),
    requests.JournalReadRequest(16, 2),
    requests.JournalFlushRequest(),
    requests.JournalPruneRequest(),
    responses.JournalRecords((b"\x93\x01\x01", b""), 40, 2, False),
    responses.JournalPruned(1000, 100),
]

LINKS = [(NODE_LINK, NODE_SAMPLES, (protocol,)),
         (CLIENT_LINK, CLIENT_SAMPLES, (requests, responses, details, submitrequests)),
         (workerconfig.WORKER_CONFIG, [CONFIG], (workerconfig,))]
ALL_SAMPLES = [(link, s) for link, samples, _ in LINKS for s in samples]


def _ids(samples: list[tuple[Registry, Any]]) -> list[str]:
    return [f"{link.name}-{type(s).__name__}-{i}" for i, (link, s) in enumerate(samples)]


def frame(*items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def fields_of(link: Registry, message: Any) -> list[Any]:
    """The raw field values of a message as they travel (after the protocol and tag)."""
    return msgpack.unpackb(link.encode(message), raw=False)[2:]


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(("link", "samples", "modules"), LINKS,
                         ids=["node", "client", "worker-config"])
def test_samples_cover_every_message_of_the_link(
    link: Registry, samples: list[Any], modules: tuple[Any, ...]
) -> None:
    registered = {
        v
        for module in modules
        for v in vars(module).values()
        if isinstance(v, type) and "TAG" in v.__dict__ and dataclasses.is_dataclass(v)
        and v.__module__ == module.__name__
    }
    assert registered == {type(s) for s in samples}


@pytest.mark.parametrize(("link", "message"), ALL_SAMPLES, ids=_ids(ALL_SAMPLES))
def test_every_message_round_trips(link: Registry, message: Any) -> None:
    decoded = link.decode(link.encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize(("link", "message"), ALL_SAMPLES, ids=_ids(ALL_SAMPLES))
def test_every_truncation_and_any_trailing_byte_is_refused(link: Registry, message: Any) -> None:
    data = link.encode(message)
    for end in range(len(data)):
        with pytest.raises(PeerError):
            link.decode(data[:end])
    with pytest.raises(PeerError):
        link.decode(data + b"\xc0")


def test_tags_are_unique_and_integers_per_link() -> None:
    link = Registry("test", 1)

    @link.message
    @dataclasses.dataclass(frozen=True, slots=True)
    class One:
        TAG = 1

    with pytest.raises(LocalProtocolError, match="tag 1 used by One and Two"):

        @link.message
        @dataclasses.dataclass(frozen=True, slots=True)
        class Two:
            TAG = 1

    with pytest.raises(LocalProtocolError, match="no integer TAG"):
        link.message(dataclasses.dataclass(type("NoTag", (), {})))


def test_encoding_a_message_of_another_link_is_our_bug() -> None:
    with pytest.raises(LocalProtocolError, match="is not a node message"):
        NODE_LINK.encode(responses.Ack())
    with pytest.raises(LocalProtocolError):
        CLIENT_LINK.encode(protocol.Heartbeat())


Pool = NewType("Pool", ResourcePool)
TYPED_LINK = Registry("typed", 1)


@TYPED_LINK.message
@dataclasses.dataclass(frozen=True, slots=True)
class Typed:
    TAG: ClassVar[int] = 1
    worker: WorkerId
    keys: tuple[TaskKey, ...]
    pool: Pool


def test_new_types_travel_as_their_supertype() -> None:
    msg = Typed(WorkerId(3), (TaskKey(7 << 32 | 1),), Pool(DESCRIPTOR.pools[0]))
    assert fields_of(TYPED_LINK, msg)[:2] == [3, [7 << 32 | 1]]
    assert TYPED_LINK.decode(TYPED_LINK.encode(msg)) == msg
    with pytest.raises(PeerError, match="Typed.worker: expected an integer"):
        TYPED_LINK.decode(frame(1, Typed.TAG, True, [], fields_of(TYPED_LINK, msg)[2]))


def test_optional_trailing_fields_may_be_omitted() -> None:
    msg = NODE_LINK.decode(frame(PROTOCOL, protocol.ComputeTasks.TAG, 9, [1, 2]))
    assert msg == protocol.ComputeTasks(9, (1, 2))


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(("link", "ours"), [(NODE_LINK, PROTOCOL), (CLIENT_LINK, CLIENT_PROTOCOL)])
def test_another_protocol_number_is_a_version_mismatch_naming_both(
    link: Registry, ours: int
) -> None:
    with pytest.raises(VersionMismatch) as caught:
        link.decode(frame(ours + 1, 4))
    assert (caught.value.ours, caught.value.theirs) == (ours, ours + 1)
    assert str(caught.value) == f"protocol version mismatch: ours {ours}, theirs {ours + 1}"


def test_a_non_integer_protocol_number_is_a_version_mismatch() -> None:
    with pytest.raises(VersionMismatch) as caught:
        NODE_LINK.decode(frame("1", 4))
    assert caught.value.theirs == -1


@pytest.mark.parametrize("protocol_number", [True, 1.0], ids=["bool", "float"])
def test_protocol_number_must_be_an_integer(protocol_number: Any) -> None:
    with pytest.raises((PeerError, VersionMismatch)):
        NODE_LINK.decode(frame(protocol_number, protocol.Heartbeat.TAG))


def test_a_boolean_tag_is_not_tag_one() -> None:
    fields = fields_of(NODE_LINK, NODE_SAMPLES[0])
    with pytest.raises(PeerError):
        NODE_LINK.decode(frame(PROTOCOL, True, *fields))


@pytest.mark.parametrize("tag", [999, -1, "4", None, 4.0, [4]])
def test_unknown_tags_are_refused(tag: Any) -> None:
    with pytest.raises(PeerError, match="unknown node message tag"):
        NODE_LINK.decode(frame(PROTOCOL, tag))


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb({"protocol": 1, "tag": 4}),
        msgpack.packb(4),
        msgpack.packb("frame"),
        msgpack.packb(None),
        msgpack.packb(b"\x01\x04"),
        msgpack.packb([]),
        msgpack.packb([1]),
        b"",
        b"\xc1",  # never used by msgpack
        b"\x92\x01\xd4",  # fixext without its data
    ],
)
def test_frames_that_are_not_messages_are_refused(data: bytes) -> None:
    with pytest.raises(PeerError):
        NODE_LINK.decode(data)


# (message, index of the field, bad raw value): each must be refused as the peer's fault.
BAD_FIELDS = [
    (protocol.NodeRegistered(3, "u", 1.0), 0, True),  # bool for int
    (protocol.NodeRegistered(3, "u", 1.0), 0, 3.0),  # float for int
    (protocol.NodeRegistered(3, "u", 1.0), 0, "3"),
    (protocol.NodeRegistered(3, "u", 1.0), 0, None),  # null for a required int
    (protocol.NodeRegistered(3, "u", 1.0), 1, b"u"),  # bytes for str
    (protocol.NodeRegistered(3, "u", 1.0), 2, "soon"),  # str for float | None
    (protocol.NodeRegistered(3, "u", 1.0), 2, False),  # bool for float
    (NODE_SAMPLES[0], 7, "opaque"),  # str for bytes
    (NODE_SAMPLES[0], 2, {"pools": []}),  # map for a nested message
    (NODE_SAMPLES[0], 2, [[["cpus"]]]),  # a nested pool without its kind
    (protocol.TasksRetracted((1,)), 0, 5),  # int for tuple
    (protocol.TasksRetracted((1,)), 0, [1, "2"]),
    (protocol.TasksRetracted((1,)), 0, {"1": 1}),
    (protocol.TaskUpdates(), 0, [[1, 0, 1.0]]),  # started triple missing its variant
    (protocol.TaskUpdates(), 0, [[1, 0, 1.0, 0, 9]]),  # one too many
    (protocol.TaskUpdates(), 2, [[1, 0, 1.0, 2.0, 0, b"err"]]),
    (protocol.TaskUpdates(), 3, [[1, 0, 0, 3, "abc"]]),  # str for a result's bytes
    (protocol.TaskUpdates(), 3, [[1, 0, 7, 3, b"abc"]]),  # no such result kind
    (protocol.TaskUpdates(), 3, [[1, 0, 0, -1, b""]]),  # a negative size
    (requests.TaskResultsRequest(1, ()), 1, [2**32]),  # a task id past u32
    (CLIENT_SAMPLES[3], 0, "submission"),
    (responses.ErrorResponse("x"), 0, ["x"]),
    (requests.JobListRequest(), 0, [1]),  # tuple[str, ...] with an int
    (responses.StopWorkersResponse(()), 0, [[1, 2]]),  # (int, str) with an int
]


@pytest.mark.parametrize(("message", "index", "bad"), BAD_FIELDS)
def test_wrongly_typed_fields_are_refused(message: Any, index: int, bad: Any) -> None:
    link = NODE_LINK if type(message).__module__ == protocol.__name__ else CLIENT_LINK
    fields = fields_of(link, message)
    fields[index] = bad
    with pytest.raises(PeerError):
        link.decode(frame(link.protocol, type(message).TAG, *fields))


def test_wrongly_typed_map_entries_are_refused() -> None:
    fields = fields_of(CLIENT_LINK, CLIENT_SAMPLES[3])
    fields[0][3][1] = {"TOKEN": 1}  # ArraySubmission.template.env: dict[str, str]
    with pytest.raises(PeerError):
        CLIENT_LINK.decode(frame(CLIENT_PROTOCOL, submitrequests.SubmitRequest.TAG, *fields))


@pytest.mark.parametrize(("link", "message"), ALL_SAMPLES, ids=_ids(ALL_SAMPLES))
def test_missing_and_extra_fields_are_refused(link: Registry, message: Any) -> None:
    fields = fields_of(link, message)
    required = sum(
        1
        for f in dataclasses.fields(message)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if required:
        with pytest.raises(PeerError, match="expected"):
            link.decode(frame(link.protocol, message.TAG, *fields[: required - 1]))
    with pytest.raises(PeerError, match="expected"):
        link.decode(frame(link.protocol, message.TAG, *fields, 0))


def test_validation_in_post_init_becomes_a_peer_error() -> None:
    data = frame(PROTOCOL, protocol.ComputeTasks.TAG, 9, [1, 2], [0])
    with pytest.raises(PeerError, match="ComputeTasks: instances do not align with keys"):
        NODE_LINK.decode(data)
    with pytest.raises(PeerError, match="entries do not align"):
        NODE_LINK.decode(frame(PROTOCOL, protocol.ComputeTasks.TAG, 9, [1], [], [b"a", b"b"]))


@pytest.mark.parametrize("item", [
    (1, 0, 3 | protocol.RESULT_HELD, 10, b""),  # a value its node could not keep is not held
    (1, 0, protocol.RESULT_HELD, 10, b"x"),  # held, yet with a blob
    (1, 0, 2 | protocol.RESULT_HELD, 10, b""),  # an unpicklable value is never held
    (1, 0, protocol.RESULT_HELD, (64 << 20) + 1, b""),  # held above the most a node may hold
    (1, 0, protocol.RESULT_HELD | protocol.RESULT_OVER_CAP, 10, b""),  # both flags
    (1, 0, protocol.RESULT_OVER_CAP, 10, b"ten"),  # the cap is not a number
    (1, 0, 16, 10, b""),  # an unknown flag
])
def test_invalid_result_items_are_refused_on_arrival(item: tuple) -> None:
    with pytest.raises(PeerError, match="invalid task result"):
        NODE_LINK.decode(frame(PROTOCOL, protocol.TaskUpdates.TAG, [], [], [], [list(item)]))


def test_result_parts_and_fetches_are_bounded() -> None:
    """A node's answer larger than one part, or a fetch asking for more, never decodes."""
    big = bytes(protocol.MAX_PART + 1)
    with pytest.raises(PeerError, match="invalid result part"):
        NODE_LINK.decode(frame(PROTOCOL, protocol.ResultPart.TAG, 1, 0, 0, len(big), big, ""))
    with pytest.raises(PeerError, match="invalid result part"):
        NODE_LINK.decode(frame(PROTOCOL, protocol.ResultPart.TAG, 1, 0, -1, 5, b"", ""))
    with pytest.raises(PeerError, match="invalid result fetch"):
        NODE_LINK.decode(frame(PROTOCOL, protocol.FetchResult.TAG, 1, 0, 0,
                               protocol.MAX_PART + 1))


@pytest.mark.parametrize("bad", [[1, 5, 0], [-5, 3, 1], [9, 1, 1], [0, 2**33, 1]])
def test_id_ranges_out_of_shape_are_refused_on_arrival(bad: list[int]) -> None:
    """A step below 1, a negative id, a start after its end, an id past 2^32-1."""
    ranges = [[1, 2, 1], bad]
    for tag, fields in [
        (requests.WaitJobsRequest.TAG, [["ids", ranges]]),
        (requests.TaskListRequest.TAG, [["all", []], ranges]),
        (requests.TaskInfoRequest.TAG, [["last", []], ranges]),
    ]:
        with pytest.raises(PeerError, match="invalid id range"):
            CLIENT_LINK.decode(frame(CLIENT_PROTOCOL, tag, *fields))
    with pytest.raises(ValueError, match="invalid id range"):
        submission.TaskRef(submission.JobId(1), tuple(tuple(r) for r in ranges))


def test_frames_over_the_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = NODE_LINK.encode(NODE_SAMPLES[2])
    monkeypatch.setattr(hqshm.cluster.codec, "MAX_FRAME", len(data))
    assert NODE_LINK.decode(data) == NODE_SAMPLES[2]  # exactly at the limit: fine
    monkeypatch.setattr(hqshm.cluster.codec, "MAX_FRAME", len(data) - 1)
    with pytest.raises(PeerError, match="exceeds the limit"):
        NODE_LINK.decode(data)


def test_invalid_utf8_in_a_string_is_refused() -> None:
    data = bytearray(NODE_LINK.encode(protocol.StopNode("stopped")))
    data[-1] = 0xFF  # last byte of the reason string
    with pytest.raises(PeerError):
        NODE_LINK.decode(bytes(data))


# --- fuzzing --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_peer_errors(data: bytes) -> None:
    for link in (NODE_LINK, CLIENT_LINK):
        with contextlib.suppress(PeerError, VersionMismatch):
            link.decode(data)


MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 9), inner, max_size=3)
    ),
    max_leaves=12,
)
ALL_TAGS = sorted({(link, type(s).TAG) for link, s in ALL_SAMPLES}, key=lambda x: (x[0].name, x[1]))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ALL_TAGS), st.lists(MSGPACK_VALUES, max_size=12))
def test_random_fields_are_refused_or_give_a_valid_message(
    link_tag: tuple[Registry, int], fields: list[Any]
) -> None:
    link, tag = link_tag
    try:
        msg = link.decode(frame(link.protocol, tag, *fields))
    except PeerError:
        return
    assert link.decode(link.encode(msg)) == msg  # anything accepted is a valid message


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL_SAMPLES), st.data())
def test_mutated_sample_fields_are_refused_or_give_a_valid_message(
    sample: tuple[Registry, Any], data: st.DataObject
) -> None:
    link, message = sample
    fields = fields_of(link, message)
    if fields:
        index = data.draw(st.integers(0, len(fields) - 1))
        fields[index] = data.draw(MSGPACK_VALUES)
    try:
        msg = link.decode(frame(link.protocol, message.TAG, *fields))
    except PeerError:
        return
    assert link.decode(link.encode(msg)) == msg


def test_a_graph_travels_packed_and_arrives_as_tasks() -> None:
    """Each distinct template once (GraphSubmission.packed_form): decoded, the tasks share
    the template object; an index past the templates is refused."""
    plain = submission.GraphSubmission(
        "graph", 1, "/home/u",
        (submission.GraphTask(1, TEMPLATE), submission.GraphTask(2, TEMPLATE, (1,), b"entry"),
         submission.GraphTask(3, TEMPLATE)))
    packed = plain.packed_form()
    assert len(packed.templates) == 1 and not packed.tasks
    frame_bytes = CLIENT_LINK.encode(submitrequests.SubmitGraphRequest(packed))
    back = CLIENT_LINK.decode(frame_bytes).submission
    assert back == plain
    assert back.tasks[0].template is back.tasks[2].template
    fields = fields_of(CLIENT_LINK, submitrequests.SubmitGraphRequest(packed))
    fields[0][7][1][1] = 5  # the second task's template index
    with pytest.raises(PeerError, match="template 5"):
        CLIENT_LINK.decode(frame(CLIENT_PROTOCOL, submitrequests.SubmitGraphRequest.TAG,
                                 *fields))


@pytest.mark.parametrize(("value", "expected"), [
    ([7, 1, 2.5, 3.5, 0], (7, 1, 2.5, 3.5, 0)),  # every item exact: taken as it is
    ([7, 1, 2, 3, 0], (7, 1, 2.0, 3.0, 0)),  # integers for floats are converted
    ([7, True, 2.5, 3.5, 0], PeerError),  # a boolean is not an integer
    ([7, 1, "2.5", 3.5, 0], PeerError),
    ([7, 1, 2.5, 3.5], PeerError),
])
def test_a_tuple_of_scalars_decodes_as_its_converters_would(value: list[Any],
                                                            expected: Any) -> None:
    decode = hqshm.cluster.codec._value_decoder(protocol.Finished, "Finished")
    if expected is PeerError:
        with pytest.raises(PeerError):
            decode(value)
    else:
        result = decode(value)
        assert result == expected and [type(x) for x in result] == [type(x) for x in expected]


@pytest.mark.parametrize(("rows", "expected"), [
    ([[7, 1, 2.5, 3.5, 0], [8, 0, 1.0, 2.0, 1]], ((7, 1, 2.5, 3.5, 0), (8, 0, 1.0, 2.0, 1))),
    ([[7, 1, 2.5, 3.5, 0], [8, 0, 1, 2, 1]], ((7, 1, 2.5, 3.5, 0), (8, 0, 1.0, 2.0, 1))),
    ([], ()),
    ([[7, 1, 2.5, 3.5, 0], [8, False, 1.0, 2.0, 1]], PeerError),
    ([[7, 1, 2.5, 3.5, 0], [8, 0, 1.0, 2.0]], PeerError),
    ([[7, 1, 2.5, 3.5, 0], [8, 0, 1.0, 2.0, 1, 9]], PeerError),
    ([[7, 1, 2.5, 3.5, 0], "row"], PeerError),
    ([[7, 1, 2.5, 3.5, 0], {"a": 1}], PeerError),
])
def test_rows_of_scalars_decode_as_their_converters_would(rows: list[Any],
                                                          expected: Any) -> None:
    """A report's rows are checked in one sweep when all are exact, else row by row."""
    decode = hqshm.cluster.codec._value_decoder(tuple[protocol.Finished, ...], "finished")
    if expected is PeerError:
        with pytest.raises(PeerError):
            decode(rows)
    else:
        result = decode(rows)
        assert result == expected
        assert [[type(x) for x in row] for row in result] == [[type(x) for x in row]
                                                            for row in expected]


PACKED_TASK = tuple[int, int, tuple[int, ...], bytes | None]  # a graph's packed task


@pytest.mark.parametrize(("value", "expected"), [
    ([3, 0, [], None], (3, 0, (), None)),  # scalars exact: only the dependencies converted
    ([3, 0, [1, 2], b"e"], (3, 0, (1, 2), b"e")),
    ([3, 0, [1, True], None], PeerError),  # a boolean is no id, in a list too
    ([3, 0, [1, "2"], None], PeerError),
    ([3, False, [], None], PeerError),
    ([3, 0, [], "text"], PeerError),
    ([3, 0, (), None], PeerError),  # msgpack gives lists; a tuple is not what came
    ([3, 0, []], PeerError),
])
def test_a_mixed_tuple_decodes_as_its_converters_would(value: list[Any], expected: Any) -> None:
    decode = hqshm.cluster.codec._value_decoder(PACKED_TASK, "packed")
    if expected is PeerError:
        with pytest.raises(PeerError):
            decode(value)
    else:
        assert decode(value) == expected and type(decode(value)[2]) is tuple
        assert value[2] == list(expected[2])  # the list it came as is left as it was


def _task_view(**changes: Any) -> details.TaskView:
    row = details.TaskView(3, "finished", 1, (2,), ("node1",), 1.5, 2.5, "", "/w", None, None)
    return dataclasses.replace(row, **changes)


@pytest.mark.parametrize(("field", "sent", "arrives"), [
    ("started_at", 1.5, 1.5),  # exact: taken as it came
    ("started_at", None, None),
    ("started_at", 2, 2.0),  # an integer for a float: converted
    ("instance", True, PeerError),  # a boolean is not an integer
    ("state", None, PeerError),  # not optional
    ("stdout", 7, PeerError),
    ("worker_ids", [1, 2], (1, 2)),  # other fields always go through their converters
    ("worker_ids", [1, "2"], PeerError),
])
def test_struct_fields_decode_as_their_converters_would(field: str, sent: Any,
                                                        arrives: Any) -> None:
    """Scalar fields of exact types skip their converters (``_struct_decoder``)."""
    view = _task_view()
    values = hqshm.cluster.codec.struct_encoder(details.TaskView)(view)
    values[[f.name for f in dataclasses.fields(details.TaskView)].index(field)] = sent
    frame = msgpack.packb([requests.CLIENT_LINK.protocol, details.TaskListResponse.TAG,
                           [[1, [values]]]], use_bin_type=True)
    if arrives is PeerError:
        with pytest.raises(PeerError):
            requests.CLIENT_LINK.decode(frame)
        return
    (decoded,) = requests.CLIENT_LINK.decode(frame).jobs[0][1]
    assert getattr(decoded, field) == arrives
    assert type(getattr(decoded, field)) is type(arrives)


def test_large_frames_pause_the_collector_and_always_restart_it() -> None:
    import gc

    rows = tuple(_task_view(id=i) for i in range(3000))
    frame = requests.CLIENT_LINK.encode(details.TaskListResponse(((1, rows),)))
    assert len(frame) >= hqshm.cluster.codec.LARGE_FRAME
    assert requests.CLIENT_LINK.decode(frame).jobs[0][1] == rows
    assert gc.isenabled()
    with pytest.raises(PeerError):
        requests.CLIENT_LINK.decode(frame[:-1])
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that paused it keeps it paused
        requests.CLIENT_LINK.decode(frame)
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- type hints ---------------------------------------------------------------------------------


def _record_classes() -> set[type]:
    """Every message of every registry, and every record class their fields nest."""
    import typing

    import hqshm.link.allocrequests  # noqa: F401 - registers its messages
    import hqshm.model.program as program
    import hqshm.server.journal.records as records

    seen: set[type] = set()
    stack: list[Any] = [cls for registry in (NODE_LINK, CLIENT_LINK, workerconfig.WORKER_CONFIG,
                                             program.PROGRAM, records.JOURNAL)
                        for cls in registry._by_tag.values()]
    while stack:
        hint = stack.pop()
        if isinstance(hint, typing.NewType):
            stack.append(hint.__supertype__)
        elif hqshm.cluster.codec.is_record_class(hint):
            if hint not in seen:
                seen.add(hint)
                stack.extend(typing.get_type_hints(hint).values())
        else:
            stack.extend(typing.get_args(hint))
    return seen


def test_type_hints_are_get_type_hints_for_every_record_class(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-eval reading of annotations gives what typing.get_type_hints gives, for every
    class the codec meets on any link, and never needs get_type_hints for them."""
    import typing

    classes = _record_classes()
    assert len(classes) > 100
    real = typing.get_type_hints
    with monkeypatch.context() as patch:
        patch.setattr(typing, "get_type_hints", lambda cls: pytest.fail(f"fell back: {cls}"))
        fast = {cls: hqshm.cluster.codec._evaluated(cls) for cls in classes}
    for cls in classes:
        assert fast[cls] == real(cls), cls


@dataclasses.dataclass
class _QuotedInside:
    items: tuple[Any, ...]
    inner: list["int"]  # noqa: UP037 - a quoted name inside an annotation, on purpose


@dataclasses.dataclass
class _PlainBase:
    a: int


@dataclasses.dataclass
class _Derived(_PlainBase):
    b: str | None
    c: None


def test_type_hints_fall_back_and_follow_bases() -> None:
    import typing

    for cls in (_QuotedInside, _Derived):
        assert hqshm.cluster.codec.type_hints(cls) == typing.get_type_hints(cls)
    assert hqshm.cluster.codec.type_hints(_Derived) == {"a": int, "b": str | None,
                                                        "c": type(None)}
    assert hqshm.cluster.codec.type_hints(_Derived) is hqshm.cluster.codec.type_hints(_Derived)
