"""The bounds of what a client may send (hqshm/model/limits.py), checked by the job model's and
the client link's dataclasses, and the server's matching of id ranges against existing ids,
whose cost follows the ids that exist, never the span of the ranges."""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any

import msgpack
import numpy as np
import pytest
from hqshm.cluster.errors import PeerError
from hqshm.cluster.resources import (
    RequestVariant,
    ResourceEntry,
    ResourceRequest,
    cpus_request,
)
from hypothesis import given
from hypothesis import strategies as st

from hqshm.errors import UserError
from hqshm.link.requests import (
    CLIENT_LINK,
    CLIENT_PROTOCOL,
    CancelJobsRequest,
    OpenJobRequest,
    Selector,
    TaskInfoRequest,
    TaskListRequest,
)
from hqshm.link.submitrequests import SubmitRequest
from hqshm.model import limits
from hqshm.model import submit as builder
from hqshm.model.program import ProgramSpec, Stdio
from hqshm.model.submission import (
    ArraySubmission,
    GraphSubmission,
    GraphTask,
    StdioDesc,
    TaskRef,
    TaskTemplate,
)
from hqshm.model.tasktable import TaskTable
from hqshm.server.jobs import Job, Submit, expand_ranges, match_ranges, missing_in_ranges
from hqshm.server.rpc import located_tasks, resolve_ids

U32_MAX = 2**32 - 1
TEMPLATE = TaskTemplate(args=("true",), env={"A": "1"}, cwd="%{SUBMIT_DIR}",
                        stdout=StdioDesc("file", "out"), stderr=StdioDesc("none"),
                        request=cpus_request())


def template(**changes: Any) -> TaskTemplate:
    return dataclasses.replace(TEMPLATE, **changes)


def variant(*entries: ResourceEntry, **fields: Any) -> ResourceRequest:
    return ResourceRequest((RequestVariant(entries, **fields),))


# --- the checks of the model ----------------------------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"args": ()}, "the command cannot be empty"),
    ({"args": ("echo", "a\0b")}, "a command argument contains a NUL character"),
    ({"args": ("x" * (limits.MAX_ARG + 1),)}, "a command argument is too long: 131073 "
                                              r"characters \(the limit is 131072\)"),
    ({"args": ("a",) * (limits.MAX_ARGS + 1)}, r"too many command arguments: 100001 \(the "
                                               r"limit is 100000\)"),
    ({"env": {"A\0": "1"}}, "an environment variable name contains a NUL character"),
    ({"env": {"A": "1\0"}}, "the value of environment variable A contains a NUL character"),
    ({"env": {str(i): "" for i in range(limits.MAX_ENV + 1)}}, "too many environment variables"),
    ({"cwd": "/tmp/\0"}, "the working directory contains a NUL character"),
    ({"cwd": "/" * 4097}, r"the working directory is too long: 4097 characters \(the limit is "
                          r"4096\)"),
    ({"request": ResourceRequest(())}, "a resource request needs at least one variant"),
    ({"request": ResourceRequest((RequestVariant(),) * 65)},
     r"too many resource request variants: 65 \(the limit is 64\)"),
    ({"request": variant(ResourceEntry("cpus", -10_000))},
     "the amount of cpus -10000 is out of range"),
    ({"request": variant(ResourceEntry("cpus", 0))}, "the amount of cpus 0 is out of range"),
    ({"request": variant(ResourceEntry("cpus", 1, policy=9))}, "invalid allocation policy 9"),
    ({"request": variant(ResourceEntry("c\0", 1))}, "a resource name contains a NUL"),
    ({"request": variant(n_nodes=-1)}, "a number of nodes -1 is out of range"),
    ({"request": variant(weight=0)}, "a resource weight 0 is out of range"),
    ({"request": variant(min_time=float("nan"))}, "a time request nan is not a finite"),
    ({"priority": 2**31}, "the priority 2147483648 is out of range"),
    ({"time_limit": float("inf")}, "the time limit inf is not a finite number"),
    ({"time_limit": -1.0}, "the time limit -1.0 is not a finite number"),
    ({"crash_limit": -2}, "the crash limit -2 is out of range"),
    ({"pin": "nope"}, "invalid pin mode 'nope'"),
    ({"retries": -1}, "the number of retries -1 is out of range"),
    ({"stdin": b"x" * (limits.MAX_STDIN + 1)}, "the standard input is too long"),
])
def test_a_template_that_cannot_run_is_refused_naming_the_problem(changes: dict[str, Any],
                                                                  message: str) -> None:
    with pytest.raises(limits.LimitError, match=message):
        template(**changes)


def test_outputs_are_a_known_kind_and_a_path_the_os_takes() -> None:
    with pytest.raises(limits.LimitError, match="invalid output kind 'pipe'"):
        StdioDesc("pipe", "x")
    with pytest.raises(limits.LimitError, match="an output path contains a NUL"):
        StdioDesc("file", "o\0")


def test_requests_that_take_everything_or_whole_nodes_still_pass() -> None:
    template(request=variant(ResourceEntry("gpus", 0, all=True)))
    template(request=variant(n_nodes=2))
    template(request=variant(ResourceEntry("mem", 1)), crash_limit=-1, time_limit=0.0)


def test_a_limit_error_is_a_value_error_for_the_codec_and_a_user_error_for_the_cli() -> None:
    with pytest.raises(ValueError, match="the command cannot be empty"):
        template(args=())
    with pytest.raises(UserError, match="a command argument contains a NUL character"):
        builder.task_template(["echo", "a\0"])
    with pytest.raises(UserError, match="the value of environment variable X contains a NUL"):
        builder.task_template(["echo"], env={"X": "\0"})
    # The builder's own texts come first where it has them.
    with pytest.raises(builder.EmptyCommand):
        builder.task_template([])
    with pytest.raises(builder.NegativeAmount):
        builder.resource_entry("cpus", -1)


def test_ranges_are_counted_and_a_submission_names_a_bounded_number_of_tasks() -> None:
    many = tuple((i * 2, i * 2, 1) for i in range(limits.MAX_RANGES + 1))
    with pytest.raises(limits.LimitError, match=r"too many id ranges: 50001 \(the limit is "
                                                r"50000\)"):
        Selector("ids", many)
    with pytest.raises(limits.LimitError, match=r"too many tasks in one submission: 4294967296 "
                                                r"\(the limit is 10000000\)"):
        ArraySubmission("a", None, "/w", TEMPLATE, ((0, U32_MAX, 1),))
    ArraySubmission("a", None, "/w", TEMPLATE, ((1, limits.MAX_SUBMIT_TASKS, 1),))
    with pytest.raises(limits.LimitError, match="too many tasks named by --after"):
        TaskRef(1, ((0, U32_MAX, 1),))
    with pytest.raises(limits.LimitError, match="a job id -1 is out of range"):
        TaskRef(-1)


def test_selections_refuse_overlapping_ranges_as_the_cli_does() -> None:
    with pytest.raises(limits.LimitError, match="id ranges overlap at 3-9:1"):
        Selector("ids", ((1, 5, 1), (3, 9, 1)))
    with pytest.raises(limits.LimitError, match="id ranges overlap"):
        TaskInfoRequest(Selector("last"), ((5, 5, 1), (1, 9, 2)))
    with pytest.raises(limits.LimitError, match="id ranges overlap"):
        TaskListRequest(Selector("last"), ((0, 0, 1), (0, 0, 1)))
    Selector("ids", ((7, 9, 1), (1, 5, 2)))  # apart, in any order
    with pytest.raises(limits.LimitError, match="invalid selector 'some'"):
        Selector("some")


def test_strings_states_and_entries_of_requests_are_bounded() -> None:
    with pytest.raises(limits.LimitError, match="the job name is too long"):
        OpenJobRequest("n" * 4097)
    with pytest.raises(limits.LimitError, match="the cancel reason contains a NUL"):
        CancelJobsRequest(Selector("all"), "\0")
    with pytest.raises(limits.LimitError, match="invalid task state 'sleeping'"):
        TaskListRequest(Selector("last"), None, ("sleeping",))
    TaskListRequest(Selector("last"), None, ("Waiting", "FAILED"))
    with pytest.raises(limits.LimitError, match="an entry is too long: 131073 bytes"):
        ArraySubmission("a", None, "/w", TEMPLATE, (), (b"x" * (limits.MAX_ARG + 1),))
    with pytest.raises(limits.LimitError, match="the submit directory contains a NUL"):
        ArraySubmission("a", None, "/w\0", TEMPLATE, ())
    with pytest.raises(limits.LimitError, match="max fails -1 is out of range"):
        ArraySubmission("a", -1, "/w", TEMPLATE, ())


def test_a_job_file_is_bounded_in_tasks_and_dependencies(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    tasks = tuple(GraphTask(i, TEMPLATE, tuple(range(i))) for i in range(5))
    GraphSubmission("g", None, "/w", tasks)
    monkeypatch.setattr(limits, "MAX_GRAPH_DEPS", 9)
    with pytest.raises(limits.LimitError, match=r"too many dependencies in one job file: 10 "
                                                r"\(the limit is 9\)"):
        GraphSubmission("g", None, "/w", tasks)
    monkeypatch.setattr(limits, "MAX_GRAPH_TASKS", 4)
    with pytest.raises(limits.LimitError, match="too many tasks in one job file: 5"):
        GraphSubmission("g", None, "/w", tasks)
    with pytest.raises(limits.LimitError, match="a dependency 4294967296 is out of range"):
        GraphTask(1, TEMPLATE, (2**32,))


def _checked_chain(n: int) -> float:
    """Seconds to build and check a chain of ``n`` dependent tasks, without the cyclic
    collector: its full passes over the growing heap made 100,000 tasks cost 20-50 times
    10,000 under load, whatever the checks do."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        tasks = tuple(GraphTask(i, TEMPLATE, (i - 1,) if i else ()) for i in range(n))
        GraphSubmission("big", None, "/w", tasks)
        return time.perf_counter() - started
    finally:
        gc.enable()


def test_the_checks_of_a_job_file_grow_linearly_with_its_tasks() -> None:
    """100,000 tasks cost about ten times 10,000 (a quadratic check: a hundred times). A
    ratio in one process, not a time limit, so that a slow or busy machine does not fail it."""
    small = min(_checked_chain(10_000) for _ in range(3))
    big = min(_checked_chain(100_000) for _ in range(2))
    assert big < 40 * small, f"10,000 tasks: {small:.3f} s; 100,000: {big:.3f} s"


def test_programs_refuse_what_an_executor_cannot_spawn() -> None:
    fields: dict[str, Any] = {"env": {}, "cwd": "/w", "stdout": Stdio("none"),
                              "stderr": Stdio("none"), "job_id": 1, "submit_dir": "/w",
                              "server_uid": "u"}
    ProgramSpec(args=("true",), **fields)
    with pytest.raises(limits.LimitError, match="the command cannot be empty"):
        ProgramSpec(args=(), **fields)
    with pytest.raises(limits.LimitError, match="contains a NUL"):
        ProgramSpec(args=("a\0",), **fields)
    with pytest.raises(limits.LimitError, match="an output path contains a NUL"):
        Stdio("file", "/o\0")


def test_the_codec_refuses_a_forged_submission_with_the_limit_in_its_message() -> None:
    good = CLIENT_LINK.encode(SubmitRequest(ArraySubmission("a", None, "/w", TEMPLATE, ())))
    fields = msgpack.unpackb(good, raw=False)
    fields[2][3][0] = []  # TaskTemplate.args
    with pytest.raises(PeerError, match="the command cannot be empty"):
        CLIENT_LINK.decode(msgpack.packb(fields, use_bin_type=True))
    fields[2][3][0] = ["echo"]
    fields[2][3][5] = [[]]  # TaskTemplate.request: no variant
    with pytest.raises(PeerError, match="at least one variant"):
        CLIENT_LINK.decode(msgpack.packb(fields, use_bin_type=True))
    assert fields[0] == CLIENT_PROTOCOL


# --- ranges against existing ids ------------------------------------------------------------


def test_a_range_of_billions_costs_what_the_existing_ids_cost() -> None:
    existing = [1, 2, 5, 6, 7, 900]
    started = time.perf_counter()
    present, missing = resolve_ids(Selector("ids", ((5, 4_000_000_000, 1),)), existing)
    assert time.perf_counter() - started < 0.5
    assert present == [5, 6, 7, 900]
    assert len(missing) == limits.MAX_MISSING_IDS
    assert missing[:3] == [8, 9, 10] and 900 not in missing


def test_resolved_ids_keep_the_order_of_the_ranges_and_name_missing_ones() -> None:
    selector = Selector("ids", ((10, 20, 5), (1, 3, 1)))
    assert resolve_ids(selector, {3: "a", 15: "b", 1: "c", 99: "d"}) == ([15, 1, 3], [10, 20, 2])
    assert resolve_ids(Selector("last"), [4, 2]) == ([4], [])
    assert resolve_ids(Selector("all"), [4, 2]) == ([2, 4], [])
    assert resolve_ids(Selector("ids", ((0, 2, 1),)), []) == ([], [0, 1, 2])


@st.composite
def disjoint_ranges(draw: st.DrawFn) -> tuple[tuple[int, int, int], ...]:
    cuts = sorted(draw(st.sets(st.integers(0, 300), max_size=12)))
    ranges = []
    for start, end in zip(cuts[::2], cuts[1::2], strict=False):
        ranges.append((start, end, draw(st.integers(1, 7))))
    return tuple(draw(st.permutations(ranges)))


@given(disjoint_ranges(), st.sets(st.integers(0, 320)), st.integers(0, 50))
def test_matching_ranges_equals_expanding_them(ranges: tuple[tuple[int, int, int], ...],
                                               existing: set[int], limit: int) -> None:
    wanted = expand_ranges(ranges).tolist()
    ids = np.array(sorted(existing), dtype=np.uint32)
    rows, which = match_ranges(ids, ranges)
    assert ids[rows].tolist() == [i for i in wanted if i in existing]
    expected_missing = [i for i in wanted if i not in existing][:limit]
    assert missing_in_ranges(ranges, ids[rows], which, limit) == expected_missing


@given(st.lists(st.tuples(st.integers(0, U32_MAX - 100), st.integers(0, 100),
                          st.integers(1, 9)), max_size=200))
def test_many_ranges_expand_at_once_as_one_by_one(spans: list[tuple[int, int, int]]) -> None:
    ranges = tuple((start, start + span, step) for start, span, step in spans)
    one_by_one = [i for s, e, st_ in ranges for i in range(s, e + 1, st_)]
    assert expand_ranges(ranges).tolist() == one_by_one


def test_tasks_of_several_submits_come_in_the_order_the_ranges_name_them() -> None:
    def submit(*ids: int) -> Submit:
        table = TaskTable(np.array(ids, dtype=np.uint32))
        return Submit(0, TEMPLATE, None, table)  # type: ignore[arg-type]  # no program needed

    job = Job(1, "j", None, "/w", 0.0, submits=[submit(1, 3, 5), submit(2, 4, 2_000_000)])
    ranges = ((4, 4_000_000_000, 1), (1, 2, 1))
    found = located_tasks(job, ranges)
    assert found.ids.tolist() == [4, 5, 2_000_000, 1, 2]
    assert list(zip(found.submit.tolist(), found.row.tolist(), strict=True)) == \
        [(1, 1), (0, 2), (1, 2), (0, 0), (1, 0)]
    missing = missing_in_ranges(ranges, found.ids, found.which, 3)
    assert missing == [6, 7, 8]
