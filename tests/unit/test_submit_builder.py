"""The submit builder (hqshm/model/submit.py), driven with plain Python values, as the CLI, job
files and the Python API call it: defaults, every error text it owns, and its warnings."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hqshm.cluster.resources import FRACTIONS, Policy, RequestVariant, ResourceEntry, cpus_request
from hypothesis import given
from hypothesis import strategies as st

from hqshm.errors import UsageError, UserError
from hqshm.model import submit
from hqshm.model.placeholders import DEFAULT_STDERR, DEFAULT_STDOUT, CwdPlaceholderInCwd
from hqshm.model.resourcespec import CpusRequestedTwice, InvalidResourceName, ZeroRequest
from hqshm.model.submission import ArraySubmission, StdioDesc, TaskRef

SUBMIT_DIR = "/home/user/work"


def built(command: tuple[str, ...] = ("/bin/hostname",), **values: Any) -> submit.BuiltArray:
    return submit.array_submission(list(command), submit_dir=SUBMIT_DIR, **values)


def array(command: tuple[str, ...] = ("/bin/hostname",), **values: Any) -> ArraySubmission:
    return built(command, **values).submission


def refusal(build: Callable[[], object], error: type[UserError] = UserError) -> UserError:
    """The error `build` raises; a plain UserError exits with 1, never as a usage error (2)."""
    with pytest.raises(error) as info:
        build()
    if error is UserError:
        assert not isinstance(info.value, UsageError)
    return info.value


# -- defaults ------------------------------------------------------------------------------------


def test_defaults_are_hqs() -> None:
    job = array(("/bin/bash", "-c", "true"))
    assert (job.name, job.max_fails, job.submit_dir, job.job_id) == ("bash", None, SUBMIT_DIR, None)
    assert (job.ids, job.entries, job.stream_dir, job.after) == ((), None, None, ())
    t = job.template
    assert t.args == ("/bin/bash", "-c", "true")
    assert (t.env, t.cwd, t.priority, t.time_limit) == ({}, "%{SUBMIT_DIR}", 0, None)
    assert t.stdout == StdioDesc(StdioDesc.FILE, DEFAULT_STDOUT)
    assert t.stderr == StdioDesc(StdioDesc.FILE, DEFAULT_STDERR)
    assert t.request == cpus_request()
    assert (t.crash_limit, t.pin, t.task_dir, t.stdin, t.retries) == (5, "none", False, b"", 0)


def test_a_command_that_names_no_file_gives_the_job_name_job() -> None:
    assert array(("tools/",)).name == "job"
    assert array(("tools/",), name="given").name == "given"


def test_task_template_without_variants_asks_for_one_cpu() -> None:
    template = submit.task_template(["true"])
    assert template.request == cpus_request()
    assert template.stdout == StdioDesc(StdioDesc.FILE, DEFAULT_STDOUT)


def test_plain_values_are_taken_as_they_come() -> None:
    env = {"A": "1"}
    job = array(
        ("prog",),
        name="x",
        max_fails=3,
        ids=[(1, 10, 1)],
        entries=[b"a", b"b"],
        after=[TaskRef(1)],
        env=env,
        cwd="/tmp/%{TASK_ID}",
        stdout="out.txt",
        stderr=StdioDesc(StdioDesc.NONE),
        priority=-4,
        time_limit=1.5,
        crash_limit="never-restart",
        pin="omp",
        task_dir=True,
        stdin="héllo",
        retries=2,
    )
    assert (job.name, job.max_fails, job.ids, job.entries) == ("x", 3, ((1, 10, 1),), (b"a", b"b"))
    assert job.after == (TaskRef(1),)
    t = job.template
    assert t.env == env and t.env is not env
    assert (t.cwd, t.priority, t.time_limit, t.crash_limit, t.pin) == (
        "/tmp/%{TASK_ID}", -4, 1.5, -1, "omp"
    )  # fmt: skip
    assert (t.stdout, t.stderr) == (StdioDesc("file", "out.txt"), StdioDesc("none"))
    assert (t.task_dir, t.stdin, t.retries) == (True, "héllo".encode(), 2)


def test_a_streamed_job_streams_every_channel_not_redirected() -> None:
    t = array(stream_dir="logs").template
    assert (t.stdout, t.stderr) == (StdioDesc("stream"), StdioDesc("stream"))
    t = array(stream_dir="logs", stdout="out", stderr=StdioDesc("none")).template
    assert (t.stdout, t.stderr) == (StdioDesc("file", "out"), StdioDesc("none"))


# -- resources -----------------------------------------------------------------------------------


def test_cpus_come_last_and_default_to_one() -> None:
    def names(**values: Any) -> list[tuple[str, int]]:
        entries = array(**values).template.request.variants[0].entries
        return [(e.name, e.amount) for e in entries]

    assert names(resources={"gpus": 1, "mem": "0.5"}) == [
        ("gpus", FRACTIONS), ("mem", FRACTIONS // 2), ("cpus", FRACTIONS)
    ]  # fmt: skip
    assert names(cpus="4", resources={"gpus": 2}) == [("gpus", 2 * FRACTIONS), ("cpus", 40_000)]
    assert names(resources={"cpus": 2, "gpus": 1}) == [("cpus", 20_000), ("gpus", FRACTIONS)]


def test_a_multi_node_task_takes_whole_workers() -> None:
    variant = array(nodes=3, resources={"gpus": 1}, time_request=60.0).template.request.variants[0]
    assert variant == RequestVariant((), 3, 60.0, FRACTIONS)


def test_weight_and_time_request() -> None:
    variant = array(weight=2.5, time_request=90.0).template.request.variants[0]
    assert (variant.weight, variant.min_time) == (25_000, 90.0)
    assert submit.weight_units(None) == FRACTIONS
    assert submit.weight_units(1e-9) == 1  # a positive weight never becomes 0


@pytest.mark.parametrize(
    ("amount", "entry"),
    [
        (2, ResourceEntry("gpus", 20_000, Policy.COMPACT)),
        (0.0051, ResourceEntry("gpus", 51, Policy.COMPACT)),
        (105.1, ResourceEntry("gpus", 1_051_000, Policy.COMPACT)),
        (0.00001, ResourceEntry("gpus", 1, Policy.COMPACT)),  # rounded up
        ("4 compact!", ResourceEntry("gpus", 40_000, Policy.FORCE_COMPACT)),
        ("all", ResourceEntry("gpus", 0, Policy.COMPACT, all=True)),
    ],
)
def test_resource_amounts(amount: int | float | str, entry: ResourceEntry) -> None:
    assert submit.resource_entry("gpus", amount) == entry


@given(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10**6), places=4))
def test_a_float_amount_is_the_decimal_the_user_wrote(amount: Decimal) -> None:
    entry = submit.resource_entry("mem", float(amount))
    assert entry.amount == int(amount * FRACTIONS)


@given(st.floats(min_value=1e-300, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_any_positive_weight_counts(weight: float) -> None:
    units = submit.weight_units(weight)
    assert units >= 1
    assert units == max(1, round(weight * FRACTIONS))


# -- crash limits --------------------------------------------------------------------------------


def test_crash_limit_words_and_counts() -> None:
    assert submit.resolve_crash_limit(None) == 5
    assert submit.resolve_crash_limit("never-restart") == -1
    assert submit.resolve_crash_limit("unlimited") == 0
    assert submit.resolve_crash_limit(1) == 1


@given(st.integers(min_value=1, max_value=2**32 - 1))
def test_a_positive_crash_limit_is_itself(limit: int) -> None:
    assert submit.resolve_crash_limit(limit) == limit


# -- every error text the builder owns -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ({"job_id": 2, "name": "x"}, "Parameter --name is not allowed when submitting to an open job."),
        ({"job_id": 2, "max_fails": 1}, "Parameter --max-fails is not allowed when submitting to an open job."),
        ({"name": "a\tb"}, "name cannot have a newline or a tab"),
        ({"name": "a\nb"}, "name cannot have a newline or a tab"),
        ({"nodes": 2, "cpus": "1"}, "--nodes cannot be combined with --cpus or --pin"),
        ({"nodes": 2, "pin": "taskset"}, "--nodes cannot be combined with --cpus or --pin"),
        ({"weight": 0.0}, "Resource weight has to be positive number"),
        ({"weight": -1.5}, "Resource weight has to be positive number"),
        ({"weight": math.nan}, "Resource weight has to be positive number"),
        ({"weight": math.inf}, "Resource weight has to be positive number"),
        ({"crash_limit": 0}, "Crash limit cannot be 0. Use `never-restart` or `unlimited` instead."),
        ({"crash_limit": -1}, "invalid crash limit -1: a positive integer, never-restart or unlimited"),
        ({"crash_limit": "3"}, "invalid crash limit '3': a positive integer, never-restart or unlimited"),
        ({"crash_limit": True}, "invalid crash limit True: a positive integer, never-restart or unlimited"),
        ({"retries": -1}, "--retries must be 0 or more"),
        ({"pin": "cores"}, "unknown pin mode 'cores': none, taskset or omp"),
        ({"cpus": 2, "resources": {"cpus": 1}}, "--cpus and --resource cpus=... cannot be combined"),
        ({"resources": {"gpus": 2**32}}, "the amount 4294967296 is larger than 4294967295"),
        ({"resources": {"gpus": 5e9}}, "the amount 5000000000.0 is larger than 4294967295"),
        ({"resources": {"gpus": -1}}, "a resource amount cannot be negative"),
        ({"resources": {"gpus": -0.5}}, "a resource amount cannot be negative"),
        ({"resources": {"gpus": 0}}, "Zero resources cannot be requested"),
        ({"resources": {"gpus": [1]}}, 'invalid amount [1] of gpus: an integer, a finite float or a text such as "2 compact"'),
        ({"resources": {"gpus": False}}, 'invalid amount False of gpus: an integer, a finite float or a text such as "2 compact"'),
        ({"resources": {"gpus": math.nan}}, 'invalid amount nan of gpus: an integer, a finite float or a text such as "2 compact"'),
        ({"cwd": "%{CWD}/x"}, "Working directory path cannot contain the working directory placeholder `%{CWD}`."),
    ],
)  # fmt: skip
def test_refusals(values: dict[str, Any], text: str) -> None:
    assert str(refusal(lambda: built(**values))) == text


def test_refusals_have_their_own_classes() -> None:
    """Job files and the Python API tell errors apart by class, not by text."""
    assert isinstance(refusal(lambda: built(name="a\tb")), submit.InvalidName)
    assert isinstance(refusal(lambda: built(crash_limit=0)), submit.CrashLimitZero)
    assert isinstance(refusal(lambda: built(cwd="%{CWD}")), CwdPlaceholderInCwd)
    assert isinstance(refusal(lambda: built(cpus=1, resources={"cpus": 1})), CpusRequestedTwice)
    assert isinstance(refusal(lambda: built(resources={"gpus": 0})), ZeroRequest)
    syntax = refusal(lambda: built(resources={"g": "x"}), UsageError)
    assert str(syntax) == 'Invalid resource request "x": expected a number at position 0'
    bad_name = refusal(lambda: submit.resource_entry("1gpu", 1), InvalidResourceName)
    assert str(bad_name) == 'Invalid resource name "1gpu": it has to start with an ASCII letter'


def test_an_empty_command_is_refused() -> None:
    assert str(refusal(lambda: built(()))) == "the command cannot be empty"
    assert str(refusal(lambda: submit.task_template([]))) == "the command cannot be empty"


def test_a_multi_node_request_cannot_list_resources() -> None:
    gpus = (ResourceEntry("gpus", FRACTIONS, Policy.COMPACT),)
    assert str(refusal(lambda: submit.request_variant(gpus, n_nodes=2))) == (
        "a multi-node request (`n_nodes` > 0) cannot list `resources`"
    )
    assert submit.request_variant((), n_nodes=2) == RequestVariant((), 2)


def test_the_open_job_check_comes_first() -> None:
    """`hq submit`'s order: the open job's parameters, then the name, then the rest."""
    assert "open job" in str(refusal(lambda: built(job_id=1, name="a\tb", retries=-1)))
    assert "name" in str(refusal(lambda: built(name="a\tb", retries=-1)))


# -- warnings (spec/cli.md §5.3) -----------------------------------------------------------------

MANY = (
    "The job will create {n} files for {channels}. Consider using the `--stream` option to "
    "stream all outputs into a single file"
)
NO_TASK_ID = (
    "You have submitted an array job, but the `{channel}` path does not contain the task ID"
    " placeholder.\nIndividual tasks might thus overwrite the file. Consider adding"
    " `%{{TASK_ID}}` to the `--{channel}` value."
)


def test_no_warnings_for_a_plain_job() -> None:
    assert built().warnings == ()
    assert built(ids=[(1, 999, 1)], stderr=StdioDesc("none")).warnings == ()


def test_warnings_in_hqs_order() -> None:
    warnings = built(
        ids=[(0, 999, 1)],
        stream_dir="logs/%{X}",
        stdout="%{FOO}/out",
        stderr="err.%{BAR}.%{BAZ}",
        cwd="%{QUX}",
    ).warnings
    assert warnings == (
        "Found unknown placeholder `X` in log path",
        MANY.format(n=2000, channels="stdout and stderr"),
        "Found unknown placeholder `FOO` in stdout path",
        NO_TASK_ID.format(channel="stdout"),
        "Found unknown placeholders `BAR, BAZ` in stderr path",
        NO_TASK_ID.format(channel="stderr"),
        "Found unknown placeholder `QUX` in working directory path",
    )


def test_entries_count_as_tasks_and_make_an_array() -> None:
    warnings = built(entries=[b"x"] * 1000, stdout="out", stderr=StdioDesc("none")).warnings
    assert warnings == (MANY.format(n=1000, channels="stdout"), NO_TASK_ID.format(channel="stdout"))


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 3000), st.integers(1, 5)), max_size=3
    ),
    st.sampled_from([(None, None), (StdioDesc("none"), None), (StdioDesc("none"),) * 2]),
)
def test_the_many_files_warning_counts_tasks_times_files(
    shapes: list[tuple[int, int, int]], outputs: tuple[StdioDesc | None, StdioDesc | None]
) -> None:
    ids = [(start, start + length, step) for start, length, step in shapes]
    stdout, stderr = outputs
    files = (stdout is None) + (stderr is None)
    tasks = sum(length // step + 1 for _, length, step in shapes) if ids else 1
    warnings = built(ids=ids, stdout=stdout, stderr=stderr).warnings
    many = [w for w in warnings if w.startswith("The job will create")]
    assert len(many) == (1 if files and tasks * files > submit.MANY_FILES else 0)


# -- start-up ------------------------------------------------------------------------------------


def test_the_builder_imports_nothing_heavy() -> None:
    """`hq submit` builds here before it connects: numpy, psutil and zmq stay out."""
    code = (
        "import sys, hqshm.model.submit;"
        " print(sorted({'numpy', 'psutil', 'zmq'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"
