"""The Python API's pure parts: ResourceRequest, StdioDef, Job and its tasks, and the
GraphSubmission they become (hqshm/api/build.py), without a server."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hqshm.cluster.resources import FRACTIONS, RequestVariant, ResourceEntry

from hqshm.api.build import InvalidTask, build_submission
from hqshm.api.errors import EmptyJob, ForeignDependency
from hqshm.api.function import TASK_CODE, PythonEnv
from hqshm.api.job import Job, SubmittedJob, get_job_id
from hqshm.api.output import DEFAULT_STDOUT, StdioDef
from hqshm.api.resources import ResourceRequest
from hqshm.errors import UserError
from hqshm.model.submission import GraphSubmission, StdioDesc, TaskTemplate

SUBMIT_DIR = "/home/user/work"
ENV = PythonEnv(python_bin="python3")


def build(job: Job, python_env: PythonEnv = ENV) -> GraphSubmission:
    return build_submission(job, python_env, SUBMIT_DIR)


def template(job: Job, task_id: int = 0) -> TaskTemplate:
    return build(job).tasks[task_id].template


def compact(name: str, units: int) -> ResourceEntry:
    return ResourceEntry(name, units)


# -- ResourceRequest -------------------------------------------------------------------------


def test_cpus_are_stored_under_resources_and_come_first() -> None:
    request = ResourceRequest(cpus="2", resources={"res0": 1, "res1": 105.1})
    assert request.resources == {"cpus": "2", "res0": 1, "res1": 105.1}
    assert request.variant() == RequestVariant(
        (compact("cpus", 2 * FRACTIONS), compact("res0", FRACTIONS), compact("res1", 1051000)))


def test_amounts_int_float_and_text() -> None:
    assert ResourceRequest(cpus=0.25).variant().entries == (compact("cpus", 2500),)
    # A float is rounded up to 1/10000 from the decimal written.
    assert ResourceRequest(cpus=0.00051).variant().entries == (compact("cpus", 6),)
    everything = ResourceRequest(cpus="all").variant().entries[0]
    assert everything.name == "cpus" and everything.all
    strict = ResourceRequest(cpus="4 compact!").variant().entries[0]
    assert strict == ResourceEntry("cpus", 4 * FRACTIONS, strict.policy)
    assert strict.policy != ResourceEntry("cpus", 1).policy


def test_the_cpus_argument_wins_over_a_cpus_resource() -> None:
    assert ResourceRequest(cpus=3, resources={"cpus": 8}).resources == {"cpus": 3}


def test_min_time_is_kept_in_seconds_and_becomes_the_time_request() -> None:
    request = ResourceRequest(min_time=datetime.timedelta(seconds=42))
    assert request.min_time == 42.0
    assert request.variant().min_time == 42.0
    assert ResourceRequest().min_time is None


def test_multi_node_drops_the_default_cpus_and_refuses_other_amounts() -> None:
    assert ResourceRequest(n_nodes=2).variant() == RequestVariant((), n_nodes=2)
    with pytest.raises(UserError, match="multi-node"):
        ResourceRequest(n_nodes=2, resources={"gpus": 1}).variant()


@pytest.mark.parametrize(("amount", "message"), [
    (0, "Zero resources cannot be requested"),
    (-1, "a resource amount cannot be negative"),
    ([1], "invalid amount [1] of cpus"),
])
def test_bad_amounts_are_refused_with_the_builders_texts(amount: object, message: str) -> None:
    job = Job()
    job.program(["true"], resources=ResourceRequest(cpus=amount))  # type: ignore[arg-type]
    with pytest.raises(InvalidTask) as info:
        build(job)
    assert str(info.value).startswith("Task 0 (id=0): ")
    assert message in str(info.value)


def test_variants_in_order_and_the_default_request() -> None:
    job = Job()
    job.program(["a"], resources=[ResourceRequest(cpus=2),
                                  ResourceRequest(cpus=1, resources={"gpus": 2})])
    job.program(["b"])
    variants = template(job, 0).request.variants
    assert [v.entries for v in variants] == [
        (compact("cpus", 2 * FRACTIONS),),
        (compact("cpus", FRACTIONS), compact("gpus", 2 * FRACTIONS)),
    ]
    assert template(job, 1).request.variants == (RequestVariant((compact("cpus", FRACTIONS),)),)


# -- StdioDef --------------------------------------------------------------------------------


def test_stdio_definitions() -> None:
    assert StdioDef.from_path("x") == StdioDef(path="x", on_close="none")
    assert StdioDef.remove_if_finished() == StdioDef(path=None, on_close="rm-if-finished")
    job = Job()
    job.program(["a"])
    job.program(["b"], stdout="out", stderr=None)
    job.program(["c"], stdout=StdioDef.remove_if_finished(), stderr=Path("/x/err"))
    job.program(["d"], stdout=StdioDef.remove_if_finished(path="o"))
    assert (template(job, 0).stdout, template(job, 0).stderr) == (
        StdioDesc("file", "%{CWD}/%{TASK_ID}.stdout"),
        StdioDesc("file", "%{CWD}/%{TASK_ID}.stderr"))
    assert (template(job, 1).stdout, template(job, 1).stderr) == (
        StdioDesc("file", "out"), StdioDesc("none"))
    assert template(job, 2).stdout == StdioDesc("file", "%{CWD}/%{TASK_ID}.stdout",
                                                rm_if_finished=True)
    assert template(job, 2).stderr == StdioDesc("file", "/x/err")
    assert template(job, 3).stdout == StdioDesc("file", "o", rm_if_finished=True)
    assert job.tasks[1].stdout == StdioDef.from_path("out") and job.tasks[1].stderr is None


# -- Job and its tasks -----------------------------------------------------------------------


def test_ids_in_creation_order_labels_and_lookup() -> None:
    job = Job()
    first = job.program("hostname")
    named = job.program(["echo", "x"], name="greeting")

    def foo() -> None:
        pass

    functions = [job.function(foo), job.function(foo)]
    assert [t.task_id for t in job.tasks] == [0, 1, 2, 3]
    assert [first.label, named.label] == ["0", "greeting"]
    assert [f.name for f in functions] == ["foo/2", "foo/3"]
    assert job.task_by_id(1) is named and job.task_by_id(9) is None
    assert job.task_by_id(-1) is None and job.task_by_id("1") is None  # type: ignore[arg-type]
    assert first.args == ["hostname"]  # one string is one argument, never split
    job.tasks.remove(first)  # a script that edits the list: ids are no longer positions
    assert job.task_by_id(1) is named and job.task_by_id(0) is None


def test_program_template_defaults() -> None:
    job = Job()
    job.program(["hostname"])
    submission = build(job)
    assert (submission.name, submission.max_fails, submission.submit_dir) == (
        "PyAPI job", 1, SUBMIT_DIR)
    t = submission.tasks[0].template
    assert (t.args, t.cwd, t.env, t.priority, t.crash_limit, t.task_dir, t.stdin) == (
        ("hostname",), SUBMIT_DIR, {}, 0, 5, False, b"")


def test_job_defaults_and_task_values(tmp_path: Path) -> None:
    job = Job(default_workdir=tmp_path / "sub" / "..", max_fails=None,
              default_env={"A": "1", "B": "2"}, name="Foo")
    job.program(["a", Path("/p")], env={"B": "3"}, stdin="Hello\n", priority=-3, crash_limit=2,
                task_dir=True)
    job.program(["b"], cwd="elsewhere", stdin=b"\x00raw")
    submission = build(job)
    assert (submission.name, submission.max_fails) == ("Foo", None)
    first, second = (task.template for task in submission.tasks)
    assert first.args == ("a", "/p")
    assert first.cwd == str(tmp_path)  # resolved when the job is made
    assert first.env == {"A": "1", "B": "3"}
    assert (first.stdin, first.priority, first.crash_limit, first.task_dir) == (
        b"Hello\n", -3, 2, True)
    assert (second.cwd, second.stdin) == ("elsewhere", b"\x00raw")


def test_dependencies_become_ids_once_each() -> None:
    job = Job()
    a = job.program(["a"])
    b = job.program(["b"], deps=[a, a])
    job.program(["c"], deps=(a, b))
    assert [task.deps for task in build(job).tasks] == [(), (0,), (0, 1)]


def test_a_dependency_of_another_job_is_refused() -> None:
    other = Job()
    foreign = other.program(["x"])
    job = Job()
    job.program(["a"])
    job.program(["b"], deps=[foreign])
    with pytest.raises(ForeignDependency, match="Task 1 depends on a task of another job"):
        build(job)


def test_a_cycle_made_by_editing_dependencies_is_refused_with_hqs_text() -> None:
    job = Job()
    a = job.program(["a"])
    b = job.program(["b"], deps=[a])
    a.dependencies.append(b)
    with pytest.raises(UserError, match="Task 0 is part of dependency cycle"):
        build(job)


def test_empty_job_is_refused_with_hqs_text() -> None:
    with pytest.raises(EmptyJob) as info:
        build(Job())
    assert str(info.value) == "Submitted job must have at least a single task"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"crash_limit": 0}, "Crash limit cannot be 0"),
    ({"env": {"A": 1}}, "environment variables must be strings"),
    ({"priority": "high"}, "the priority must be an integer"),
    ({"cwd": "%{CWD}/x"}, "cannot contain the working directory placeholder"),
])
def test_task_values_are_checked_by_the_builder(kwargs: dict[str, object], message: str) -> None:
    job = Job()
    job.program(["a"], name="first")
    job.program(["b"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidTask, match=r"^Task 1 \(id=1\): ") as info:
        build(job)
    assert message in str(info.value)


def test_job_name_with_a_newline_is_refused() -> None:
    job = Job(name="a\nb")
    job.program(["a"])
    with pytest.raises(UserError, match="name cannot have a newline or a tab"):
        build(job)


def test_function_tasks_run_the_python_env_with_a_task_dir() -> None:
    def work() -> None:
        pass

    job = Job()
    job.function(work, stdout=None)
    t = template(job)
    assert t.args == ("python3", "-c", TASK_CODE)
    assert t.task_dir and t.stdin and t.stdout == StdioDesc("none")
    with_prologue = build(job, PythonEnv(prologue="source init.sh")).tasks[0].template
    assert with_prologue.args == (
        "bash", "-c", f'source init.sh\n\npython3 -c "{TASK_CODE}"')


def test_submitted_job_and_its_id() -> None:
    job = Job()
    assert get_job_id(SubmittedJob(job=job, id=7)) == 7
    assert get_job_id(3) == 3


def test_a_function_task_names_its_callable_in_its_template() -> None:
    import functools

    job = Job()
    job.function(test_a_function_task_names_its_callable_in_its_template)
    job.function(functools.partial(print, "x"))
    job.program(["true"])
    names = [t.function_name for t in job.tasks]
    assert names == [f"{__name__}.test_a_function_task_names_its_callable_in_its_template",
                     "functools.partial", ""]


def _length(data: bytes) -> int:
    return len(data)


def test_a_function_task_whose_arguments_are_too_large_says_so() -> None:
    """Arguments above the entry's share travel pickled with the function (the task's stdin,
    at most 16 MiB): the error names the arguments, not a standard input the user never gave."""
    job = Job()
    job.function(_length, args=(bytes(17 << 20),))
    with pytest.raises(InvalidTask, match=r"^Task _length/0 \(id=0\): the function and its "
                                          r"arguments pickle to \d+ bytes, more than a task "
                                          r"may carry \(16777216\); pass large data in a file"):
        build_submission(job, PythonEnv(), "/tmp")


def test_tasks_share_the_stdio_definitions_of_equal_paths() -> None:
    """A job of a million function tasks holds two StdioDefs, not two million (frozen, so
    shared); what each task says is unchanged."""
    job = Job()
    first, second = (job.function(_length, args=(b"",)) for _ in range(2))
    other = job.function(_length, args=(b"",), stdout="out-%{TASK_ID}", stderr=None)
    assert first.stdout is second.stdout and first.stderr is second.stderr
    assert first.stdout == StdioDef(path=DEFAULT_STDOUT, on_close="none")
    assert other.stdout == StdioDef(path="out-%{TASK_ID}", on_close="none")
    assert other.stderr is None
