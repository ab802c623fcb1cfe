"""Job definition files (spec/jobs.md §12): the parser, its errors and their lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hqshm.cluster.resources import FRACTIONS, Policy, RequestVariant, ResourceEntry, cpus_request
from hypothesis import given
from hypothesis import strategies as st

from hqshm.cli.commands import jobfile as command
from hqshm.cli.resourceview import request_lines
from hqshm.cli.submit.jobfile import CannotRead, JobFileError, parse_job_file
from hqshm.cli.submit.tomlkeys import key_lines
from hqshm.errors import UserError
from hqshm.model.durations import format_humantime
from hqshm.model.placeholders import DEFAULT_STDERR, DEFAULT_STDOUT
from hqshm.model.submission import ArraySubmission, GraphSubmission, GraphTask, StdioDesc

PATH = "job.toml"
SUBMIT_DIR = "/home/user/work"


def parse(text: str, job_id: int | None = None) -> ArraySubmission | GraphSubmission:
    return parse_job_file(textwrap.dedent(text), PATH, SUBMIT_DIR, job_id)


def graph(text: str) -> dict[int, GraphTask]:
    request = parse(text)
    assert isinstance(request, GraphSubmission)
    return {task.id: task for task in request.tasks}


def array(text: str) -> ArraySubmission:
    request = parse(text)
    assert isinstance(request, ArraySubmission)
    return request


def error(text: str) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        parse(text)
    return info.value


def task_entries(request: ArraySubmission) -> dict[int, bytes | None]:
    """What the server makes of an array request (jobbook): with `entries_by_position` the n-th
    id gets the n-th entry, otherwise ids select entries by index."""
    ids = [i for start, end, step in request.ids for i in range(start, end + 1, step)]
    if request.entries is None:
        return dict.fromkeys(ids)
    if not ids:
        return dict(enumerate(request.entries))
    if request.entries_by_position:
        return dict(zip(ids, request.entries, strict=True))
    return {i: request.entries[i] for i in ids if i < len(request.entries)}


def entry(name: str, amount: float, policy: Policy = Policy.COMPACT) -> ResourceEntry:
    return ResourceEntry(name, round(amount * FRACTIONS), policy)


# -- minimal files and defaults ----------------------------------------------------------------


def test_minimal_task_gets_the_defaults_of_hq_submit() -> None:
    request = parse("""
        [[task]]
        command = ["sleep", "0"]
    """)
    assert isinstance(request, GraphSubmission)
    assert (request.name, request.max_fails, request.submit_dir) == ("", None, SUBMIT_DIR)
    assert request.job_id is None and request.stream_dir is None
    (task,) = request.tasks
    assert (task.id, task.deps, task.entry) == (1, (), None)
    t = task.template
    assert t.args == ("sleep", "0")
    assert t.env == {} and t.stdin == b""
    assert t.cwd == "%{SUBMIT_DIR}"
    assert t.stdout == StdioDesc("file", "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout")
    assert t.stderr == StdioDesc("file", "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr")
    assert t.request == cpus_request()
    assert request_lines(t.request) == "cpus: 1 compact"
    assert (t.priority, t.time_limit, t.crash_limit) == (0, None, 5)
    assert (t.pin, t.task_dir) == ("none", False)



def test_parser_stays_off_the_client_and_numpy() -> None:
    code = (
        "import sys, hqshm.cli.submit.jobfile; print(sorted(m for m in ('numpy', 'psutil', 'zmq') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_top_level_keys_and_open_job() -> None:
    request = parse(
        """
        name = "my job"
        max_fails = 3
        [[task]]
        command = ["true"]
        """,
        job_id=7,
    )
    assert (request.name, request.max_fails, request.job_id) == ("my job", 3, 7)


def test_name_with_a_tab_is_refused_on_its_line() -> None:
    assert str(error('\nname = "a\\tb"\n[[task]]\ncommand = ["x"]\n')) == (
        "job.toml:2: name cannot have a newline or a tab"
    )


# -- task ids ------------------------------------------------------------------------------


def test_ids_without_explicit_ones_start_at_one() -> None:
    tasks = parse("""
        [[task]]
        command = ["a"]
        [[task]]
        command = ["b"]
        [[task]]
        command = ["c"]
    """).tasks
    assert [(t.id, t.template.args[0]) for t in tasks] == [(1, "a"), (2, "b"), (3, "c")]


def test_missing_ids_continue_after_the_largest_explicit_one() -> None:
    # spec/jobs.md §12 test fact: without, 12, 3, without, without -> 13, 12, 3, 14, 15
    tasks = parse("""
        [[task]]
        command = ["a"]
        [[task]]
        id = 12
        command = ["b"]
        [[task]]
        id = 3
        command = ["c"]
        [[task]]
        command = ["d"]
        [[task]]
        command = ["e"]
    """).tasks
    assert [t.id for t in tasks] == [13, 12, 3, 14, 15]
    assert [t.template.args[0] for t in tasks] == ["a", "b", "c", "d", "e"]


def test_explicit_id_zero_is_kept() -> None:
    tasks = graph("""
        [[task]]
        id = 0
        command = ["a"]
        [[task]]
        command = ["b"]
    """)
    assert sorted(tasks) == [0, 1]


def test_duplicate_id_names_the_second_definition() -> None:
    err = error("""
        [[task]]
        id = 4
        command = ["a"]

        [[task]]
        command = ["b"]
        id = 4
    """)
    assert str(err) == "job.toml:8: Task 4 is defined multiple times"
    assert err.line == 8


# -- dependencies --------------------------------------------------------------------------


def test_dependencies_in_any_order() -> None:
    tasks = graph("""
        [[task]]
        id = 5
        deps = [1, 3]
        command = ["c"]
        [[task]]
        id = 1
        command = ["a"]
        [[task]]
        id = 3
        deps = [1, 1]
        command = ["b"]
    """)
    assert tasks[5].deps == (1, 3)
    assert tasks[3].deps == (1,)  # a repeated dependency counts once
    assert tasks[1].deps == ()


def test_dependency_on_an_auto_numbered_task() -> None:
    tasks = graph("""
        [[task]]
        command = ["a"]
        [[task]]
        command = ["b"]
        deps = [1]
    """)
    assert tasks[2].deps == (1,)


def test_cycle_is_refused_on_the_line_of_a_task_in_it() -> None:
    err = error("""
        [[task]]
        id = 0
        command = ["independent"]
        [[task]]
        id = 1
        deps = [2]
        command = ["a"]
        [[task]]
        id = 2
        deps = [1]
        command = ["b"]
    """)
    assert str(err) == (
        "job.toml:7: Task 1 is part of dependency cycle or has an invalid dependencies"
    )
    assert "cycle" in str(err)


def test_task_behind_a_cycle_is_not_reported_before_the_cycle_itself() -> None:
    err = error("""
        [[task]]
        id = 9
        deps = [1]
        command = ["after the cycle"]
        [[task]]
        id = 1
        deps = [1]
        command = ["self"]
    """)
    # Task 9 waits on the cycle; HQ names a task of the graph that cannot start (file order).
    assert err.detail == "Task 9 is part of dependency cycle or has an invalid dependencies"
    assert err.line == 4


def test_self_dependency_is_a_cycle() -> None:
    err = error('[[task]]\nid = 1\ndeps = [1]\ncommand = ["x"]\n')
    assert str(err) == (
        "job.toml:3: Task 1 is part of dependency cycle or has an invalid dependencies"
    )


def test_dependency_outside_the_file_is_refused() -> None:
    err = error("""
        [[task]]
        id = 1
        command = ["a"]
        [[task]]
        id = 2
        command = ["b"]
        deps = [1, 44]
    """)
    assert str(err) == (
        "job.toml:8: Task 2 is part of dependency cycle or has an invalid dependencies"
    )


def test_long_chain_is_accepted() -> None:
    text = "".join(
        f"[[task]]\nid = {i}\ncommand = ['x']\n" + (f"deps = [{i - 1}]\n" if i else "")
        for i in range(2000)
    )
    request = parse_job_file(text, PATH, SUBMIT_DIR)
    assert isinstance(request, GraphSubmission)
    assert len(request.tasks) == 2000 and request.tasks[-1].deps == (1998,)


# -- task keys -----------------------------------------------------------------------------


MAXIMAL = """
name = "test-job"
max_fails = 11

[[task]]
id = 12
command = ["bash", "-c", "echo $ABC"]
pin = "none"
time_limit = "1m 10s"
priority = -1
crash_limit = 12
task_dir = true
env = { "ABC" = "123", "XYZ" = "aaaa" }
stdin = "Hello world!"
stdout = "testout-%{TASK_ID}"
stderr = { path = "testerr-%{TASK_ID}", on_close = "rm-if-finished" }

[[task.request]]
n_nodes = 2

[[task]]
id = 200
command = ["sleep", "0"]
cwd = "test-200"
pin = "taskset"
crash_limit = "never-restart"
deps = [12]

[[task.request]]
resources = { "cpus" = "4 compact!", "gpus" = 2 }
time_request = "10s"
weight = 11.2

[[task]]
id = 14
command = ["sleep", "0"]
pin = "omp"
crash_limit = "unlimited"
stdout = "none"
stderr = { path = "err.txt", mode = "rm-if-finished" }

[[task.request]]
resources = { "gpus" = 1.1 }
"""


def test_maximal_example() -> None:
    request = parse(MAXIMAL)
    assert isinstance(request, GraphSubmission)
    assert (request.name, request.max_fails) == ("test-job", 11)
    tasks = {t.id: t for t in request.tasks}
    assert list(tasks) == [12, 200, 14]

    t12 = tasks[12].template
    assert t12.args == ("bash", "-c", "echo $ABC")
    assert t12.pin == "none"
    assert t12.time_limit == 70.0 and format_humantime(t12.time_limit) == "1m 10s"
    assert (t12.priority, t12.crash_limit, t12.task_dir) == (-1, 12, True)
    assert t12.env == {"ABC": "123", "XYZ": "aaaa"}
    assert t12.stdin == b"Hello world!"
    assert t12.stdout == StdioDesc("file", "testout-%{TASK_ID}")
    assert t12.stderr == StdioDesc("file", "testerr-%{TASK_ID}", rm_if_finished=True)
    assert t12.request.variants == (RequestVariant((), n_nodes=2),)
    assert request_lines(t12.request) == "nodes: 2"

    t200 = tasks[200].template
    assert tasks[200].deps == (12,)
    assert (t200.cwd, t200.pin, t200.crash_limit) == ("test-200", "taskset", -1)
    assert t200.stdout == StdioDesc("file", DEFAULT_STDOUT)
    (variant,) = t200.request.variants
    assert variant.entries == (entry("cpus", 4, Policy.FORCE_COMPACT), entry("gpus", 2))
    assert (variant.min_time, variant.weight) == (10.0, 112_000)
    assert request_lines(t200.request) == "cpus: 4 compact!\ngpus: 2 compact\n[weight: 11.2]"

    t14 = tasks[14].template
    assert (t14.pin, t14.crash_limit) == ("omp", 0)
    assert t14.stdout == StdioDesc("none")
    assert t14.stderr == StdioDesc("file", "err.txt", rm_if_finished=True)
    assert request_lines(t14.request) == "gpus: 1.1 compact"


def test_output_table_forms() -> None:
    t = graph("""
        [[task]]
        command = ["x"]
        stdout = { path = "out", on_close = "none" }
        stderr = { on_close = "rm-if-finished" }
    """)[1].template
    assert t.stdout == StdioDesc("file", "out")
    assert t.stderr == StdioDesc("file", DEFAULT_STDERR, rm_if_finished=True)


def test_stream_applies_to_outputs_not_set_explicitly() -> None:
    request = parse("""
        stream = "log-%{JOB_ID}"
        [[task]]
        command = ["a"]
        [[task]]
        command = ["b"]
        stdout = "out.txt"
        stderr = "none"
    """)
    assert request.stream_dir == "log-%{JOB_ID}"
    first, second = (t.template for t in request.tasks)
    assert first.stdout == first.stderr == StdioDesc("stream")
    assert second.stdout == StdioDesc("file", "out.txt")
    assert second.stderr == StdioDesc("none")


def test_stdin_is_utf8_bytes() -> None:
    assert graph('[[task]]\ncommand = ["cat"]\nstdin = "žluť\\n"\n')[1].template.stdin == (
        "žluť\n".encode()
    )


def test_crash_limit_forms() -> None:
    def limit(value: str) -> int:
        return graph(f'[[task]]\ncommand = ["x"]\ncrash_limit = {value}\n')[1].template.crash_limit

    assert limit("1") == 1
    assert limit('"never-restart"') == -1
    assert limit('"unlimited"') == 0
    assert str(error('[[task]]\ncommand = ["x"]\ncrash_limit = 0\n')) == (
        "job.toml:3: `task.crash_limit`: Crash limit cannot be 0. Use `never-restart` or "
        "`unlimited` instead."
    )
    assert error('[[task]]\ncommand = ["x"]\ncrash_limit = -2\n').line == 3
    assert error('[[task]]\ncommand = ["x"]\ncrash_limit = "sometimes"\n').line == 3


# -- resource requests -----------------------------------------------------------------------


def test_variants_list_only_what_they_request() -> None:
    t = graph("""
        [[task]]
        command = ["x"]
        [[task.request]]
        resources = { cpus = 8 }
        [[task.request]]
        resources = { cpus = 1, gpus = 1 }
        [[task.request]]
        resources.cpus = "4"
        resources.x = "1 scatter"
    """)[1].template
    assert [v.entries for v in t.request.variants] == [
        (entry("cpus", 8),),
        (entry("cpus", 1), entry("gpus", 1)),
        (entry("cpus", 4), entry("x", 1, Policy.SCATTER)),
    ]
    assert all(v.weight == FRACTIONS and v.min_time == 0.0 for v in t.request.variants)


def test_request_without_resources_asks_for_nothing() -> None:
    t = graph('[[task]]\ncommand = ["x"]\n[[task.request]]\ntime_request = "1h"\n')[1].template
    assert t.request.variants == (RequestVariant((), 0, 3600.0),)


@pytest.mark.parametrize(
    ("value", "units", "policy"),
    [
        ("2", 20_000, Policy.COMPACT),
        ("1.1", 11_000, Policy.COMPACT),
        ("0.0051", 51, Policy.COMPACT),  # the decimal written: 0.0051 * 10000 is 51.000...01
        ("0.25", 2_500, Policy.COMPACT),
        ("1.00001", 10_001, Policy.COMPACT),  # beyond 1/10000: rounded up
        ("0.00001", 1, Policy.COMPACT),
        ("1e-2", 100, Policy.COMPACT),
        ('"1.5"', 15_000, Policy.COMPACT),
        ('"6 tight!"', 60_000, Policy.FORCE_TIGHT),
        ('"2 scatter"', 20_000, Policy.SCATTER),
    ],
)
def test_amounts(value: str, units: int, policy: Policy) -> None:
    t = graph(f'[[task]]\ncommand = ["x"]\n[[task.request]]\nresources = {{ r = {value} }}\n')
    assert t[1].template.request.variants[0].entries == (ResourceEntry("r", units, policy),)


def test_all_amount() -> None:
    t = graph('[[task]]\ncommand = ["x"]\n[[task.request]]\nresources = { cpus = "all" }\n')
    (only,) = t[1].template.request.variants[0].entries
    assert only.all and request_lines(t[1].template.request) == "cpus: all"


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("0", "Zero resources cannot be requested"),
        ("0.0", "Zero resources cannot be requested"),
        ('"0"', "`task.request.resources.gpus`: Zero resources cannot be requested"),
        ("-1", "a resource amount cannot be negative"),
        ("-0.5", "a resource amount cannot be negative"),
        ("nan", "invalid type: float `nan`"),
        ("true", "invalid type: boolean `true`"),
        ('"2 sideways"', "unknown policy `sideways`"),
        ('"1.00001"', "Resource precision exceeded"),
        ("4294967296", "is larger than 4294967295"),
    ],
)
def test_bad_amounts_name_the_line(value: str, detail: str) -> None:
    err = error(f"""
        [[task]]
        command = ["x"]

        [[task.request]]
        n_nodes = 0
        resources = {{ gpus = {value} }}
    """)
    assert err.line == 7
    assert detail in err.detail


def test_bad_resource_name() -> None:
    err = error('[[task]]\ncommand = ["x"]\n[[task.request]]\nresources = { "1gpu" = 1 }\n')
    assert err.line == 4 and "Invalid resource name" in err.detail


def test_weight() -> None:
    def weight(value: str) -> int:
        t = graph(f'[[task]]\ncommand = ["x"]\n[[task.request]]\nweight = {value}\n')
        return t[1].template.request.variants[0].weight

    assert weight("2") == 20_000
    assert weight("0.5") == 5_000
    for bad in ("0", "-1.5"):
        err = error(f'[[task]]\ncommand = ["x"]\n[[task.request]]\nweight = {bad}\n')
        assert str(err) == (
            "job.toml:4: `task.request.weight`: Resource weight has to be positive number"
        )
    assert error('[[task]]\ncommand = ["x"]\n[[task.request]]\nweight = "2"\n').line == 4


def test_multi_node_request_cannot_list_resources() -> None:
    err = error("""
        [[task]]
        command = ["x"]
        [[task.request]]
        resources = { cpus = 1 }
        n_nodes = 2
    """)
    assert err.line == 6 and "n_nodes" in err.detail


# -- arrays --------------------------------------------------------------------------------


def test_array_ids() -> None:
    request = array("""
        [array]
        ids = "2, 10-14, 120"
        command = ["sleep", "0"]
    """)
    assert request.ids == ((2, 2, 1), (10, 14, 1), (120, 120, 1))
    assert request.entries is None
    assert len(task_entries(request)) == 7
    assert request.template.request == cpus_request()


def test_array_entries_number_tasks_from_zero() -> None:
    request = array('[array]\nentries = ["a", "bb", "ccc"]\ncommand = ["echo"]\n')
    assert request.ids == ()
    assert task_entries(request) == {0: b"a", 1: b"bb", 2: b"ccc"}


def test_array_ids_and_entries_pair_by_position() -> None:
    request = array("""
        [array]
        ids = "2,10-12"
        entries = ["a", "bb", "ccc", "x"]
        command = ["echo"]
    """)
    assert task_entries(request) == {2: b"a", 10: b"bb", 11: b"ccc", 12: b"x"}


def test_array_ids_in_the_files_order_pair_with_entries() -> None:
    request = array('[array]\nids = "10-11,2"\nentries = ["a", "b", "c"]\ncommand = ["e"]\n')
    assert task_entries(request) == {2: b"c", 10: b"a", 11: b"b"}


def test_sparse_array_with_entries_stays_one_small_array() -> None:
    far = 4_000_000_000
    request = array(f'[array]\nids = "1, {far}"\nentries = ["a", "b"]\ncommand = ["e"]\n')
    assert request.entries == (b"a", b"b") and request.entries_by_position
    assert task_entries(request) == {1: b"a", far: b"b"}


def test_array_keeps_every_template_key() -> None:
    request = array("""
        name = "arr"
        stream = "s"
        [array]
        ids = "1-3"
        command = ["x"]
        priority = 4
        stderr = "none"
        [[array.request]]
        resources = { cpus = 2 }
        [[array.request]]
        resources = { cpus = 1 }
    """)
    assert (request.name, request.stream_dir) == ("arr", "s")
    assert request.template.priority == 4
    assert request.template.stdout == StdioDesc("stream")
    assert request.template.stderr == StdioDesc("none")
    assert len(request.template.request.variants) == 2


def test_array_ids_and_entries_must_match() -> None:
    err = error("""
        [array]
        ids = "1-3"
        entries = ["a", "b"]
        command = ["x"]
    """)
    assert str(err) == "job.toml:4: Items 'ids' and 'entries' does not match"


@pytest.mark.parametrize("extra", ["", "entries = []\n"])
def test_array_needs_ids_or_entries(extra: str) -> None:
    err = error(f'\n[array]\ncommand = ["x"]\n{extra}')
    assert str(err) == "job.toml:2: One of attributes of array must be defined: 'ids', 'entries'"


def test_array_bad_ids() -> None:
    err = error('[array]\ncommand = ["x"]\nids = "1-x"\n')
    assert err.line == 3 and err.detail.startswith("`array.ids`: invalid array")
    assert str(error('[array]\nids = "1-5,3"\ncommand = ["x"]\n')) == (
        "job.toml:2: `array.ids`: Ranges overlap"
    )


def test_array_refuses_task_keys_and_tasks_refuse_array_keys() -> None:
    assert "unknown field `array.deps`" in str(error('[array]\nids="1"\ncommand=["x"]\ndeps=[]\n'))
    err = error('[[task]]\ncommand=["x"]\nentries=["a"]\n')
    assert err.line == 3 and err.detail.startswith("unknown field `task.entries`")


# -- file-level errors -----------------------------------------------------------------------


def test_array_and_tasks_cannot_be_mixed() -> None:
    err = error("""
        [[task]]
        command = ["x"]

        [array]
        ids = "1"
        command = ["y"]
    """)
    assert str(err) == "job.toml:5: Definition of array job and individual task cannot be mixed"


@pytest.mark.parametrize("text", ["", 'name = "x"\n', "task = []\n"])
def test_no_tasks(text: str) -> None:
    assert str(error(text)) == "job.toml: No tasks defined"


def test_syntax_errors_keep_tomllib_position() -> None:
    assert str(error('[[task]]\ncommand = ["x"]\ncommand = ["y"]\n')) == (
        "job.toml:3: Cannot overwrite a value (at line 3, column 16)"
    )
    assert str(error('[[task]]\ncommand = ["x",\n  "y" "z"]\n')).startswith(
        "job.toml:3: Unclosed array (at line 3, column 7)"
    )
    # What is still open at the end is reported at the last line.
    assert str(error('[[task]]\ncommand = """x\n\n')) == (
        "job.toml:3: Unterminated string (at end of document)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'nmae = "x"\n[[task]]\ncommand = ["x"]\n',
            "job.toml:1: unknown field `nmae`, expected one of `name`, `max_fails`, `stream`, "
            "`task`, `array`",
        ),
        (
            '[[task]]\ncommand = ["x"]\n\n[[task]]\ncommand = ["y"]\ncmd = 1\n',
            "job.toml:6: unknown field `task.cmd`, expected one of `id`, `deps`, `command`, "
            "`env`, `cwd`, `stdout`, `stderr`, `stdin`, `task_dir`, `pin`, `time_limit`, "
            "`priority`, `crash_limit`, `request`",
        ),
        (
            '[[task]]\ncommand = ["x"]\n[[task.request]]\nresource = {}\n',
            "job.toml:4: unknown field `task.request.resource`, expected one of `resources`, "
            "`n_nodes`, `time_request`, `weight`",
        ),
        (
            '[[task]]\ncommand = ["x"]\nstdout = { path = "a", when = "x" }\n',
            "job.toml:3: unknown field `task.stdout.when`, expected one of `path`, `on_close`, "
            "`mode`",
        ),
        (
            '[[task]]\ncommand = ["x"]\nstdout = { path = "a", on_close = "x", mode = "x" }\n',
            'job.toml:3: `task.stdout.on_close`: unknown value "x", expected one of "none", '
            '"rm-if-finished"',
        ),
        (
            '[[task]]\ncommand = ["x"]\nstdout = { on_close = "none", mode = "none" }\n',
            "job.toml:3: `task.stdout.mode`: give `on_close` or its alias `mode`, not both",
        ),
        ("[[task]]\nid = 1\n", "job.toml:1: missing field `task.command`"),
        ("[[task]]\ncommand = []\n", "job.toml:2: `task.command`: the command cannot be empty"),
        (
            '[[task]]\ncommand = "ls -l"\n',
            'job.toml:2: `task.command`: invalid type: string "ls -l", expected an array of '
            "strings",
        ),
        (
            '[[task]]\ncommand = ["ls", 1]\n',
            "job.toml:2: `task.command`: invalid type: array, expected an array of strings",
        ),
        (
            '[[task]]\ncommand = ["x"]\nenv = { A = 1 }\n',
            "job.toml:3: `task.env.A`: invalid type: integer `1`, expected a string",
        ),
        (
            '[[task]]\ncommand = ["x"]\ncwd = "%{CWD}/x"\n',
            "job.toml:3: `task.cwd`: Working directory path cannot contain the working "
            "directory placeholder `%{CWD}`.",
        ),
        (
            '[[task]]\ncommand = ["x"]\npin = "numa"\n',
            'job.toml:3: `task.pin`: unknown value "numa", expected one of "none", "taskset", '
            '"omp"',
        ),
        (
            '[[task]]\ncommand = ["x"]\ntask_dir = "yes"\n',
            'job.toml:3: `task.task_dir`: invalid type: string "yes", expected a boolean',
        ),
        (
            '[[task]]\ncommand = ["x"]\npriority = 2147483648\n',
            "job.toml:3: `task.priority`: 2147483648 is out of range -2147483648..2147483647",
        ),
        (
            '[[task]]\ncommand = ["x"]\ntime_limit = 10\n',
            "job.toml:3: `task.time_limit`: invalid type: integer `10`, expected a string",
        ),
        (
            '[[task]]\ncommand = ["x"]\ntime_limit = "10 parsecs"\n',
            'job.toml:3: `task.time_limit`: invalid duration "10 parsecs": unknown time unit '
            '"parsecs", supported units: ns, us, ms, sec, min, hours, days, weeks, months, '
            "years (and few variations)",
        ),
        (
            '[[task]]\ncommand = ["x"]\ntime_limit = ""\n',
            'job.toml:3: `task.time_limit`: invalid duration "": value was empty',
        ),
        (
            '[[task]]\ncommand = ["x"]\ntime_limit = "01:00:00"\n',
            'job.toml:3: `task.time_limit`: invalid duration "01:00:00": invalid character at 2',
        ),
        (
            '[[task]]\ncommand = ["x"]\n[[task.request]]\ntime_request = "soon"\n',
            'job.toml:4: `task.request.time_request`: invalid duration "soon": expected number '
            "at 0",
        ),
        (
            '[[task]]\ncommand = ["x"]\nid = -1\n',
            "job.toml:3: `task.id`: -1 is out of range 0..4294967295",
        ),
        (
            '[[task]]\ncommand = ["x"]\ndeps = "1"\n',
            'job.toml:3: `task.deps`: invalid type: string "1", expected an array of integers',
        ),
        (
            'max_fails = -1\n[[task]]\ncommand = ["x"]\n',
            "job.toml:1: `max_fails`: -1 is out of range 0..4294967295",
        ),
        (
            '[task]\ncommand = ["x"]\n',
            "job.toml:1: `task`: invalid type: table, expected an array of tables ([[task]])",
        ),
        (
            '[[array]]\nids = "1"\ncommand = ["x"]\n',
            "job.toml:1: `array`: invalid type: array, expected a table ([array])",
        ),
    ],
)
def test_schema_errors_name_line_and_key(text: str, expected: str) -> None:
    assert str(error(text)) == expected


def test_errors_are_user_errors() -> None:
    assert issubclass(JobFileError, UserError) and issubclass(CannotRead, UserError)


# -- lines of keys ---------------------------------------------------------------------------


def test_key_lines_follow_tables_arrays_and_dotted_keys() -> None:
    text = textwrap.dedent('''\
        name = "x"  # a comment with [[task]] and key = 1
        [[task]]
        command = [
          "a",  # id = 5
          "b",
        ]
        "quoted key".inner = 1
        [[task.request]]
        resources.cpus = 1
        [[task]]
        stdin = """
        [[task]]
        id = 99
        """
        id = 3
        env = { A = "1" }
        [ task . request ]
        weight = 2
    ''')
    lines = key_lines(text)
    assert lines[("name",)] == 1
    assert lines[("task",)] == 2
    assert lines[("task", 0)] == 2
    assert lines[("task", 0, "command")] == 3
    assert lines[("task", 0, "quoted key")] == 7
    assert lines[("task", 0, "quoted key", "inner")] == 7
    assert lines[("task", 0, "request", 0)] == 8
    assert lines[("task", 0, "request", 0, "resources", "cpus")] == 9
    assert lines[("task", 1)] == 10
    assert lines[("task", 1, "stdin")] == 11
    assert lines[("task", 1, "id")] == 15
    assert lines[("task", 1, "env")] == 16
    assert lines[("task", 1, "request")] == 17  # a plain header: not an array item
    assert ("task", 2) not in lines


def test_key_lines_skip_strings_with_quotes_and_escapes() -> None:
    text = textwrap.dedent("""\
        a = "x\\" = [\\\\"
        b = '''
        c = 1
        '''''
        d = \"\"\"q\\\"\"\"
        e = 1\"\"\"
        f = 'x # y'
        g = 2
    """)
    assert key_lines(text) == {("a",): 1, ("b",): 2, ("d",): 5, ("f",): 7, ("g",): 8}


@given(
    st.lists(
        st.tuples(
            st.booleans(),  # a multi-line command
            st.sampled_from(["", "priority = 1\n", 'env = { A = "=" }\n', "# [[task]]\n"]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_unknown_key_is_reported_on_its_own_line(
    tasks: list[tuple[bool, str]], data: st.DataObject
) -> None:
    bad = data.draw(st.integers(0, len(tasks) - 1))
    parts = []
    for index, (multiline, extra) in enumerate(tasks):
        command = '[\n  "a",\n  "b = 1",\n]' if multiline else '["a"]'
        parts.append(f"[[task]]\n{extra}command = {command}\n")
        if index == bad:
            parts.append('bogus = """\nid = 1\n"""\n')
    text = "".join(parts)
    with pytest.raises(JobFileError) as info:
        parse_job_file(text, PATH, SUBMIT_DIR)
    assert text.splitlines()[info.value.line - 1].startswith("bogus = ")


# -- the command's file reading --------------------------------------------------------------


def test_unreadable_files_in_hqs_words(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    missing = tmp_path / "missing.toml"
    with pytest.raises(CannotRead) as info:
        command.read_job_file(str(missing))
    assert str(info.value) == f"Cannot read {missing}: No such file or directory (os error 2)"
    with pytest.raises(CannotRead) as info:
        command.read_job_file(str(tmp_path))
    assert str(info.value) == f"Cannot read {tmp_path}: Is a directory (os error 21)"
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(CannotRead) as info:
        command.read_job_file(str(binary))
    assert str(info.value) == f"Cannot read {binary}: stream did not contain valid UTF-8"
    good = tmp_path / "job.toml"
    good.write_text('[[task]]\ncommand = ["ž"]\n')
    assert command.read_job_file(str(good)) == '[[task]]\ncommand = ["ž"]\n'
