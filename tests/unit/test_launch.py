"""What a node starts for a task: argv, environment (spec/jobs.md §6) and resolved paths."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hqshm.model.program import PinMode, ProgramSpec, Stdio
from hqshm.node.launch import LaunchPlan, NodeContext, plan, task_variables

UID = "aB3xQ9"
NODE = NodeContext(
    worker_id=3,
    hostname="cn1",
    work_dir="/tmp/w",
    hq_path="/opt/hq/bin/hq",
    base_env={"PATH": "/usr/bin", "HOME": "/home/u"},
)
SPEC = ProgramSpec(
    args=("prog", "--flag"),
    env={},
    cwd="/work/%{TASK_ID}",
    stdout=Stdio(Stdio.FILE, "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"),
    stderr=Stdio(Stdio.FILE, "err-%{INSTANCE_ID}.log", rm_if_finished=True),
    job_id=7,
    submit_dir="/sub",
    server_uid=UID,
)


def launch(
    spec: ProgramSpec = SPEC,
    *,
    cpus: tuple[str, ...] = ("0", "1"),
    entry: str | None = None,
    instance: int = 0,
    whole_cpus: bool = True,
    task_dir: str | None = None,
    node: NodeContext = NODE,
    resource_env: Mapping[str, str] | None = None,
) -> LaunchPlan:
    return plan(
        spec,
        task_id=5,
        instance=instance,
        entry=entry,
        resource_env=resource_env or {},
        cpus=list(cpus),
        node=node,
        whole_cpus=whole_cpus,
        task_dir=task_dir,
    )


def with_env(**env: str) -> ProgramSpec:
    return replace(SPEC, env=env)


def on_node(**env: str) -> NodeContext:
    return replace(NODE, base_env=env)


# --- HQ variables ---------------------------------------------------------------------------


def test_every_task_gets_its_ids_submit_dir_and_the_hq_path() -> None:
    env = launch(instance=2).env
    assert {
        k: env[k] for k in ("HQ_JOB_ID", "HQ_TASK_ID", "HQ_INSTANCE_ID", "HQ_SUBMIT_DIR", "HQ")
    } == {
        "HQ_JOB_ID": "7",
        "HQ_TASK_ID": "5",
        "HQ_INSTANCE_ID": "2",
        "HQ_SUBMIT_DIR": "/sub",
        "HQ": "/opt/hq/bin/hq",
    }
    assert env["PATH"] == "/usr/bin"  # the node's environment is inherited
    assert "HQ_ENTRY" not in env and "HQ_PIN" not in env and "HQ_TASK_DIR" not in env


def test_entry_is_exported_only_for_entry_tasks() -> None:
    assert launch(entry='{"x": 1}').env["HQ_ENTRY"] == '{"x": 1}'
    assert launch(entry="").env["HQ_ENTRY"] == ""  # an empty line is still an entry


def test_cpus_and_omp_num_threads_for_a_whole_cpu_request() -> None:
    env = launch(cpus=("4", "5", "6")).env
    assert env["HQ_CPUS"] == "4,5,6"
    assert env["OMP_NUM_THREADS"] == "3"


def test_no_omp_num_threads_for_a_fractional_cpu_request() -> None:
    env = launch(cpus=("2",), whole_cpus=False).env
    assert env["HQ_CPUS"] == "2"
    assert "OMP_NUM_THREADS" not in env


def test_no_cpu_variables_without_allocated_cpus() -> None:
    env = launch(cpus=()).env
    assert "HQ_CPUS" not in env and "OMP_NUM_THREADS" not in env


def test_users_omp_num_threads_is_respected() -> None:
    assert launch(with_env(OMP_NUM_THREADS="8")).env["OMP_NUM_THREADS"] == "8"


def test_omp_variables_inherited_from_the_node_do_not_block_hqs() -> None:
    """spec/jobs.md §4.4: HQ variables win over inherited ones; only --env is respected."""
    node = on_node(OMP_NUM_THREADS="1", OMP_PLACES="cores")
    env = launch(replace(SPEC, pin=PinMode.OMP), node=node).env
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["OMP_PLACES"] == "{0,1}"


def test_resource_variables_are_passed_through() -> None:
    resources = {
        "HQ_RESOURCE_REQUEST_cpus": "2 compact",
        "HQ_RESOURCE_VALUES_gpus": "1",
        "CUDA_VISIBLE_DEVICES": "1",
    }
    env = launch(resource_env=resources).env
    assert {k: env[k] for k in resources} == resources


# --- pinning --------------------------------------------------------------------------------


def test_pin_taskset_wraps_the_command() -> None:
    got = launch(replace(SPEC, pin=PinMode.TASKSET), cpus=("0", "2"))
    assert got.argv == ["taskset", "-c", "0,2", "prog", "--flag"]
    assert got.env["HQ_PIN"] == "taskset"
    assert "OMP_PLACES" not in got.env and "OMP_PROC_BIND" not in got.env


def test_pin_omp_sets_places_and_binding_unless_the_user_did() -> None:
    got = launch(replace(SPEC, pin=PinMode.OMP), cpus=("0", "2"))
    assert got.argv == ["prog", "--flag"]
    assert (got.env["HQ_PIN"], got.env["OMP_PLACES"], got.env["OMP_PROC_BIND"]) == (
        "omp",
        "{0,2}",
        "close",
    )
    mine = launch(
        replace(SPEC, pin=PinMode.OMP, env={"OMP_PLACES": "threads", "OMP_PROC_BIND": "spread"})
    )
    assert (mine.env["OMP_PLACES"], mine.env["OMP_PROC_BIND"]) == ("threads", "spread")


def test_no_pinning_leaves_argv_and_places_alone() -> None:
    got = launch()
    assert got.argv == ["prog", "--flag"]
    assert "HQ_PIN" not in got.env and "OMP_PLACES" not in got.env


# --- task dir and paths ---------------------------------------------------------------------


def test_task_dir_and_error_file_are_exported() -> None:
    env = launch(replace(SPEC, task_dir=True), task_dir="/tmp/w/t1234").env
    assert env["HQ_TASK_DIR"] == "/tmp/w/t1234"
    assert env["HQ_ERROR_FILENAME"] == "/tmp/w/t1234/hq-error"


def test_placeholders_are_resolved_in_cwd_stdout_and_stderr() -> None:
    got = launch(instance=3)
    assert got.cwd == "/work/5"
    assert got.stdout == "/work/5/job-7/5.stdout"
    assert got.stderr == "/work/5/err-3.log"  # relative: against the task's cwd
    assert (got.rm_stdout, got.rm_stderr) == (False, True)


def test_relative_cwd_is_against_the_submit_dir_and_none_discards() -> None:
    spec = replace(
        SPEC,
        cwd="runs/%{JOB_ID}",
        stdout=Stdio(Stdio.NONE),
        stderr=Stdio(Stdio.FILE, "/abs/%{SERVER_UID}.err"),
    )
    got = launch(spec)
    assert got.cwd == "/sub/runs/7"
    assert got.stdout is None
    assert got.stderr == f"/abs/{UID}.err"


# --- precedence -----------------------------------------------------------------------------


def test_user_env_wins_over_the_nodes_and_hq_wins_over_both() -> None:
    node = on_node(SHARED="node", ONLY_NODE="n", HQ_JOB_ID="999", HQ_CPUS="node-cpus")
    spec = with_env(
        SHARED="user",
        ONLY_USER="u",
        HQ_TASK_ID="user-task",
        HQ_INSTANCE_ID="user-instance",
        HQ_CPUS="user-cpus",
    )
    env = launch(spec, node=node, resource_env={"HQ_RESOURCE_VALUES_cpus": "0,1"}).env
    assert (env["SHARED"], env["ONLY_NODE"], env["ONLY_USER"]) == ("user", "n", "u")
    assert (env["HQ_JOB_ID"], env["HQ_TASK_ID"], env["HQ_INSTANCE_ID"]) == ("7", "5", "0")
    assert env["HQ_CPUS"] == "0,1"
    assert env["HQ_RESOURCE_VALUES_cpus"] == "0,1"


def test_resource_variables_win_over_the_users() -> None:
    env = launch(
        with_env(CUDA_VISIBLE_DEVICES="0,1,2,3"), resource_env={"CUDA_VISIBLE_DEVICES": "2"}
    ).env
    assert env["CUDA_VISIBLE_DEVICES"] == "2"


def test_the_plan_does_not_leak_into_the_nodes_environment() -> None:
    base = {"PATH": "/usr/bin"}
    launch(node=replace(NODE, base_env=base))
    assert base == {"PATH": "/usr/bin"}


def test_paths_of_the_task_and_instance_are_resolved_for_each_task() -> None:
    """Paths are resolved once per group only when they name neither the task nor the
    instance."""
    fixed = replace(SPEC, cwd="/work/fixed", stdout=Stdio(Stdio.FILE, "%{CWD}/out"),
                    stderr=Stdio(Stdio.FILE, "/logs/%{JOB_ID}.err"))
    for _ in range(2):
        assert (launch(fixed).cwd, launch(fixed).stdout, launch(fixed).stderr) == (
            "/work/fixed", "/work/fixed/out", "/logs/7.err")
    for task_id, instance in ((5, 0), (6, 0), (6, 2)):
        paths = plan(SPEC, task_id=task_id, instance=instance, entry=None, resource_env={},
                     cpus=[], node=NODE)
        assert (paths.cwd, paths.stdout, paths.stderr) == (
            f"/work/{task_id}", f"/work/{task_id}/job-7/{task_id}.stdout",
            f"/work/{task_id}/err-{instance}.log")


def test_only_the_task_variables_differ_between_two_tasks_of_a_group() -> None:
    """What the warm path's environment relies on (hqshm/node/warm.py, ``_Environment``)."""
    spec = replace(SPEC, pin=PinMode.OMP, env={"OWN": "x"})
    first = plan(spec, task_id=1, instance=0, entry="a", resource_env={"HQ_RESOURCE_X": "1"},
                 cpus=["0"], node=NODE, task_dir="/tmp/w/t1")
    second = plan(spec, task_id=2, instance=1, entry=None, resource_env={"HQ_RESOURCE_Y": "2"},
                  cpus=["0", "1"], node=NODE, whole_cpus=False, task_dir="/tmp/w/t2",
                  nodes=["a", "b"])
    differ = {name for name in first.env.keys() | second.env.keys()
              if first.env.get(name) != second.env.get(name)}
    assert differ <= task_variables({"HQ_RESOURCE_X": "1"}) | task_variables(
        {"HQ_RESOURCE_Y": "2"})
    assert "OWN" not in differ
