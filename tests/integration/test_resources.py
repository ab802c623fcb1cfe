"""Resources as users see them through `hq` (spec/resources.md): what a task is given, in its
environment, for every pool kind; fractions; `all`; the policies on grouped pools; coupling;
the scheduling rule; GPUs a worker detects; and a synthetic 2 sockets x 2 NUMA nodes x 8 cores
x 2 threads machine.

Most workers here declare CPUs this 2-CPU machine does not have (`3x4`, `[[1,2,3],[4,5,6]]`),
so their tasks get the labels but are not pinned; pinning itself is tested in test_pinning.py.
Tasks that must run at the same time wait at a gate: each touches a file, then waits for the
test to release it, so "N at once" is observed rather than timed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures.machines import add_nvidia_gpus, write_machine, write_tool
from harness import HqEnv
from job_helpers import submit

GPU_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "ROCR_VISIBLE_DEVICES",
    "HQSHM_SYSFS_ROOT",
)


@pytest.fixture(autouse=True)
def no_gpu_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers inherit the test's environment; GPU settings made outside must not leak in."""
    for name in GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# --- helpers ---------------------------------------------------------------------------------


def env_of(hq_env: HqEnv, job: int, task: int = 0) -> dict[str, str]:
    """The `env` a task printed, as a dict."""
    text = (hq_env.work / f"job-{job}" / f"{task}.stdout").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def labels(value: str) -> list[str]:
    return value.split(",") if value else []


class Gate:
    """Tasks that report they started, then block until the test opens the gate."""

    def __init__(self, hq_env: HqEnv, name: str = "gate") -> None:
        self.hq_env = hq_env
        self.started = hq_env.work / f"{name}-started"
        self.started.mkdir()
        self.release = hq_env.work / f"{name}-open"

    def command(self, report: str = "env") -> list[str]:
        script = (
            f"{report} > {self.started}/$HQ_TASK_ID.$HQ_JOB_ID.part && "
            f"mv {self.started}/$HQ_TASK_ID.$HQ_JOB_ID.part {self.started}/$HQ_JOB_ID.$HQ_TASK_ID; "
            f"for i in $(seq 600); do [ -e {self.release} ] && exit 0; sleep 0.05; done; exit 1"
        )
        return ["bash", "-c", script]

    def names(self) -> list[str]:
        return sorted(p.name for p in self.started.iterdir() if not p.name.endswith(".part"))

    def wait_started(self, count: int) -> list[str]:
        self.hq_env.wait_until(lambda: len(self.names()) >= count, f"{count} tasks to start")
        return self.names()

    def env(self, name: str) -> dict[str, str]:
        text = (self.started / name).read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def stays_at(self, count: int, seconds: float = 1.0) -> None:
        """No further task starts within ``seconds`` (they are waiting for resources)."""
        try:
            self.hq_env.wait_until(lambda: len(self.names()) > count, "", timeout=seconds)
        except AssertionError:
            return
        raise AssertionError(f"more than {count} tasks started: {self.names()}")

    def open(self) -> None:
        self.release.touch()


def group_sizes(values: str, groups: list[list[int]]) -> list[int]:
    """How many of the labels fall in each group it touches, sorted (spec's `group sizes`)."""
    taken = {int(v) for v in labels(values)}
    return sorted(len(taken & set(g)) for g in groups if taken & set(g))


def run_one(hq_env: HqEnv, *options: str, report: str = "env") -> dict[str, str]:
    """Submit one task with ``options``, wait for it, and return the environment it printed."""
    job = submit(hq_env, [*options, "--", "bash", "-c", report])
    hq_env.wait_for_job_state(job, "FINISHED")
    return env_of(hq_env, job)


# --- environment for every pool kind ---------------------------------------------------------


def test_every_pool_kind_reaches_the_task_environment(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(
        cpus=2,
        args=[
            "--resource",
            "gpus/nvidia=[a,b,c]",
            "--resource",
            "gpus/amd=range(4-5)",
            "--resource",
            "fairy=sum(1000)",
            "--resource",
            "foo=[[x1,x2],[y1,y2]]",
        ],
    )
    env = run_one(
        hq_env,
        "--resource",
        "gpus/nvidia=2",
        "--resource",
        "gpus/amd=1",
        "--resource",
        "fairy=250",
        "--resource",
        "foo=2 scatter",
    )
    assert env["HQ_RESOURCE_REQUEST_cpus"] == "1 compact"
    assert env["HQ_RESOURCE_REQUEST_gpus_nvidia"] == "2 compact"
    assert env["HQ_RESOURCE_REQUEST_gpus_amd"] == "1 compact"
    assert env["HQ_RESOURCE_REQUEST_fairy"] == "250 compact"
    assert env["HQ_RESOURCE_REQUEST_foo"] == "2 scatter"

    nvidia = labels(env["HQ_RESOURCE_VALUES_gpus_nvidia"])
    assert len(nvidia) == 2 and set(nvidia) <= {"a", "b", "c"}
    assert env["CUDA_VISIBLE_DEVICES"] == env["HQ_RESOURCE_VALUES_gpus_nvidia"]
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["HQ_RESOURCE_VALUES_gpus_amd"] in {"4", "5"}
    assert env["ROCR_VISIBLE_DEVICES"] == env["HQ_RESOURCE_VALUES_gpus_amd"]
    assert "HQ_RESOURCE_VALUES_fairy" not in env  # a sum has no labels
    assert sorted(v[0] for v in labels(env["HQ_RESOURCE_VALUES_foo"])) == ["x", "y"]  # scatter
    assert env["HQ_CPUS"] == env["HQ_RESOURCE_VALUES_cpus"]
    assert "HQ_RESOURCE_VARIANT" not in env  # only one variant


def test_gpu_variables_are_absent_without_a_gpu_request(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, args=["--resource", "gpus/nvidia=[0,1]"])
    env = run_one(hq_env, "--cpus", "1")
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert "HQ_RESOURCE_VALUES_gpus_nvidia" not in env
    assert "HQ_RESOURCE_REQUEST_gpus_nvidia" not in env


def test_detected_gpus_are_given_to_tasks_one_each(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(
        cpus=2,
        args=["--detect-resources=gpus/nvidia,gpus/amd"],
        env={"CUDA_VISIBLE_DEVICES": "3,5", "ROCR_VISIBLE_DEVICES": "7"},
    )
    gate = Gate(hq_env)
    submit(hq_env, ["--array", "1-2", "--resource", "gpus/nvidia=1", "--", *gate.command()])
    names = gate.wait_started(2)
    given = sorted(gate.env(n)["CUDA_VISIBLE_DEVICES"] for n in names)
    assert given == ["3", "5"]
    gate.open()
    hq_env.wait_for_job_state(1, "FINISHED")
    env = run_one(hq_env, "--resource", "gpus/amd=1")
    assert env["ROCR_VISIBLE_DEVICES"] == "7"


def test_gpus_found_in_proc_driver_nvidia(hq_env: HqEnv, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA_VISIBLE_DEVICES and no nvidia-smi: the worker counts /proc/driver/nvidia/gpus
    (synthetic root). On a GPU node the variable may be set and the real nvidia-smi would
    answer first: the variable is removed, and a failing nvidia-smi comes first on PATH (as on
    a node whose driver does not answer)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    broken = write_tool(tmp_path / "bin", "nvidia-smi", "echo 'NVML failed' >&2\nexit 9\n")
    path = f"{broken.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    machine = write_machine(
        tmp_path / "machine", sockets=1, nodes_per_socket=1, cores_per_node=2, threads=1
    )
    add_nvidia_gpus(machine, 2)
    hq_env.start_server()
    hq_env.start_worker(
        cpus=1,
        args=["--detect-resources=gpus/nvidia"],
        env={"HQSHM_SYSFS_ROOT": str(machine), "PATH": path},
    )
    env = run_one(hq_env, "--resource", "gpus/nvidia=2")
    assert sorted(labels(env["CUDA_VISIBLE_DEVICES"])) == ["0", "1"]


# --- fractions -------------------------------------------------------------------------------


def test_sum_pool_runs_four_halves_at_once(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4, args=["--resource", "foo=sum(2)"])
    gate = Gate(hq_env)
    submit(hq_env, ["--array", "1-4", "--resource", "foo=0.5", "--", *gate.command()])
    names = gate.wait_started(4)
    assert gate.env(names[0])["HQ_RESOURCE_REQUEST_foo"] == "0.5 compact"
    gate.open()
    hq_env.wait_for_job_state(1, "FINISHED")


def test_sum_pool_runs_three_of_four_that_do_not_fit(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4, args=["--resource", "foo=sum(2.2)"])
    gate = Gate(hq_env)
    submit(hq_env, ["--array", "1-4", "--resource", "foo=0.6", "--", *gate.command()])
    gate.wait_started(3)
    gate.stays_at(3)
    gate.open()
    hq_env.wait_for_job_state(1, "FINISHED")


def test_indexed_items_are_shared_by_fractions(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4, args=["--resource", "foo=[a,b]"])
    gate = Gate(hq_env)
    submit(hq_env, ["--array", "1-4", "--resource", "foo=0.4", "--", *gate.command()])
    names = gate.wait_started(4)
    given = sorted(gate.env(n)["HQ_RESOURCE_VALUES_foo"] for n in names)
    assert given == ["a", "a", "b", "b"]
    gate.open()
    hq_env.wait_for_job_state(1, "FINISHED")


def test_two_and_a_half_items_list_the_shared_one_last(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4, args=["--resource", "foo=range(0-9)"])
    gate = Gate(hq_env)
    submit(hq_env, ["--array", "1-4", "--resource", "foo=2.5", "--", *gate.command()])
    names = gate.wait_started(4)
    whole: list[str] = []
    halves: list[str] = []
    for name in names:
        values = labels(gate.env(name)["HQ_RESOURCE_VALUES_foo"])
        assert len(values) == 3
        whole += values[:2]
        halves.append(values[2])
    assert len(set(whole)) == 8  # eight distinct whole items
    assert sorted(set(halves)) == sorted(set(halves) - set(whole))
    assert len(set(halves)) == 2 and all(halves.count(h) == 2 for h in halves)
    gate.open()
    hq_env.wait_for_job_state(1, "FINISHED")


def test_fractional_cpus_set_no_omp_num_threads(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus="[[1,2],[11,12],[21,22]]")
    env = run_one(hq_env, "--cpus", "2.5 compact!")
    assert env["HQ_RESOURCE_REQUEST_cpus"] == "2.5 compact!"
    assert "OMP_NUM_THREADS" not in env
    groups = [[1, 2], [11, 12], [21, 22]]
    assert group_sizes(env["HQ_CPUS"], groups) == [1, 2]


# --- all, policies ---------------------------------------------------------------------------


def test_cpus_all_takes_every_cpu(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus="3x4")
    env = run_one(hq_env, "--cpus", "all")
    assert env["HQ_RESOURCE_REQUEST_cpus"] == "all"
    assert sorted(int(c) for c in labels(env["HQ_CPUS"])) == list(range(12))


def test_all_of_a_resource_runs_only_where_it_exists(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    job = submit(hq_env, ["--resource", "foo=all", "--", "true"])
    hq_env.wait_until(lambda: "waiting" in hq_env.task_states(job).values(), "task to wait")
    hq_env.start_worker(cpus=1, args=["--resource", "foo=[p,q,r]"])
    hq_env.wait_for_job_state(job, "FINISHED")
    assert "worker2" in hq_env.command(["task", "info", str(job), "0"])


CPU_GROUPS = [[1, 2, 3, 4], [11, 12, 13, 14], [21, 22, 23, 24]]
THREE_BY_FOUR = [list(range(g * 4, g * 4 + 4)) for g in range(3)]


@pytest.mark.parametrize(
    ("request_", "groups", "sizes"),
    [
        ("6 tight", CPU_GROUPS, [2, 4]),
        ("6 tight!", CPU_GROUPS, [2, 4]),
        ("6 compact", CPU_GROUPS, [3, 3]),
        ("6 compact!", CPU_GROUPS, [3, 3]),
        ("6 scatter", CPU_GROUPS, [2, 2, 2]),
        ("2 scatter", THREE_BY_FOUR, [1, 1]),
        ("4 compact!", THREE_BY_FOUR, [4]),
        ("5 compact!", THREE_BY_FOUR, [2, 3]),
    ],
)
def test_policy_on_grouped_cpus(
    hq_env: HqEnv, request_: str, groups: list[list[int]], sizes: list[int]
) -> None:
    hq_env.start_server()
    spec = "3x4" if groups is THREE_BY_FOUR else "[[1,2,3,4],[11,12,13,14],[21,22,23,24]]"
    hq_env.start_worker(cpus=spec)
    env = run_one(hq_env, "--cpus", request_)
    assert env["HQ_RESOURCE_REQUEST_cpus"] == request_
    assert group_sizes(env["HQ_CPUS"], groups) == sizes


def test_strict_request_runs_once_its_best_shape_is_free(hq_env: HqEnv) -> None:
    """`2 compact!` on groups of 3: one task per group at a time, and all of them finish."""
    hq_env.start_server()
    hq_env.start_worker(cpus="[[1,2,3],[11,12,13]]")
    job = submit(hq_env, ["--array", "1-3", "--cpus", "2 compact!", "--", "bash", "-c", "env"])
    hq_env.wait_for_job_state(job, "FINISHED")
    for task in (1, 2, 3):
        cpus = env_of(hq_env, job, task)["HQ_CPUS"]
        assert group_sizes(cpus, [[1, 2, 3], [11, 12, 13]]) == [2]


# --- coupling --------------------------------------------------------------------------------

COUPLED_CPUS = [[1, 2, 3], [4, 5, 6]]
COUPLED_FOO = [[10, 20, 30, 40], [50, 60, 70, 80]]


def start_coupled_worker(hq_env: HqEnv) -> None:
    hq_env.start_worker(
        cpus="[[1,2,3],[4,5,6]]",
        args=[
            "--resource",
            "foo=[[10,20,30,40],[50,60,70,80]]",
            "--coupling",
            "cpus[0]:foo[0],cpus[1]:foo[1]",
        ],
    )


@pytest.mark.parametrize("foo", ["3 compact!", "1 compact!"])
def test_coupled_tasks_get_cpus_and_items_of_one_pair(hq_env: HqEnv, foo: str) -> None:
    hq_env.start_server()
    start_coupled_worker(hq_env)
    job = submit(
        hq_env,
        ["--array", "1-6", "--cpus", "1", "--resource", f"foo={foo}", "--", "bash", "-c", "env"],
    )
    hq_env.wait_for_job_state(job, "FINISHED")
    for task in range(1, 7):
        env = env_of(hq_env, job, task)
        [cpu] = labels(env["HQ_CPUS"])
        pair = 0 if int(cpu) in COUPLED_CPUS[0] else 1
        items = {int(v) for v in labels(env["HQ_RESOURCE_VALUES_foo"])}
        assert items <= set(COUPLED_FOO[pair]), (cpu, items)


@pytest.mark.parametrize(
    ("cpus", "foo", "cpu_sizes", "foo_sizes"),
    [
        ("6 tight", "2 tight", [2, 4], [2]),
        ("6 scatter", "2 scatter", [2, 2, 2], [1, 1]),
        ("6 compact", "2 compact", [3, 3], [2]),
        ("6 tight", "2 compact", [2, 4], [2]),
        ("6 compact", "2 tight", [3, 3], [2]),
        ("6 scatter", "2 tight", [2, 2, 2], [2]),
        ("6 scatter", "2 compact", [2, 2, 2], [2]),
    ],
)
def test_policies_on_three_coupled_groups(
    hq_env: HqEnv, cpus: str, foo: str, cpu_sizes: list[int], foo_sizes: list[int]
) -> None:
    hq_env.start_server()
    hq_env.start_worker(
        cpus="[[1,2,3,4],[11,12,13,14],[21,22,23,24]]",
        args=[
            "--resource",
            "foo=[[101,102,103],[111,112,113],[121,122,123]]",
            "--coupling",
            "cpus[0]:foo[0],cpus[1]:foo[1],cpus[2]:foo[2]",
        ],
    )
    env = run_one(hq_env, "--cpus", cpus, "--resource", f"foo={foo}")
    assert group_sizes(env["HQ_CPUS"], CPU_GROUPS) == cpu_sizes
    foo_groups = [[101, 102, 103], [111, 112, 113], [121, 122, 123]]
    assert group_sizes(env["HQ_RESOURCE_VALUES_foo"], foo_groups) == foo_sizes
    if "scatter" not in cpus and "scatter" not in foo:
        # Coupled: the foo items come from groups whose CPUs the task also has.
        cpu_groups = {
            i for i, g in enumerate(CPU_GROUPS) if set(g) & set(map(int, labels(env["HQ_CPUS"])))
        }
        foo_used = {
            i
            for i, g in enumerate(foo_groups)
            if set(g) & set(map(int, labels(env["HQ_RESOURCE_VALUES_foo"])))
        }
        assert foo_used <= cpu_groups


# --- scheduling rule -------------------------------------------------------------------------


def test_task_waits_on_workers_without_its_resource(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1)
    hq_env.start_worker(cpus=1, args=["--resource", "potato=range(1-12)"])
    fairy = submit(hq_env, ["--resource", "fairy=1", "--", "true"])
    potato = submit(hq_env, ["--resource", "potato=1000_000", "--", "true"])
    small = submit(hq_env, ["--resource", "potato=12", "--", "true"])
    hq_env.wait_for_job_state(small, "FINISHED")
    assert hq_env.task_states(fairy) == {0: "waiting"}
    assert hq_env.task_states(potato) == {0: "waiting"}
    explained = hq_env.command(["task", "explain", str(potato), "0"])
    assert "potato" in explained


def test_lower_priority_task_uses_what_waiting_tasks_cannot(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=8, args=["--resource", "foo=[1,2,3,4]"])
    gate = Gate(hq_env)
    for _ in range(4):
        submit(hq_env, ["--resource", "foo=2", "--", *gate.command()])
    gate.wait_started(2)
    gate.stays_at(2, seconds=0.5)
    low = submit(hq_env, ["--cpus=2", "--priority=-1", "--", *gate.command()])
    names = gate.wait_started(3)
    assert f"{low}.0" in names
    states = hq_env.job_states()
    assert sorted(states[j] for j in (1, 2, 3, 4)) == ["RUNNING", "RUNNING", "WAITING", "WAITING"]
    gate.open()
    hq_env.wait_for_job_state([1, 2, 3, 4, low], "FINISHED")


def test_many_priorities_share_cpus_and_a_scarce_resource(hq_env: HqEnv) -> None:
    """9 jobs of foo=2 (priorities 10..90) and 12 one-CPU jobs (-5..-2) on 12 CPUs, foo=6.

    foo allows three of the first kind: the three highest run; the other 9 CPUs go to the
    one-CPU jobs of the highest priorities, whatever waits for foo.
    """
    hq_env.start_server()
    gate = Gate(hq_env)
    for priority in range(10, 100, 10):
        submit(hq_env, [f"--priority={priority}", "--resource", "foo=2", "--", *gate.command()])
    for priority in (-5, -5, -5, -4, -4, -4, -3, -3, -3, -2, -2, -2):
        submit(hq_env, [f"--priority={priority}", "--", *gate.command()])
    hq_env.start_worker(cpus=12, args=["--resource", "foo=range(1-6)"])
    gate.wait_started(12)
    gate.stays_at(12, seconds=0.5)
    states = hq_env.job_states()
    running = sorted(job for job, state in states.items() if state == "RUNNING")
    assert running == [7, 8, 9, *range(13, 22)]
    gate.open()
    hq_env.wait_for_job_state(list(range(1, 22)), "FINISHED")


def test_variants_share_out_a_scarce_resource(hq_env: HqEnv) -> None:
    """5 tasks, variants {cpus 1, x 1} / {cpus 4}, 16 CPUs and x=[0,1]: 2 take x, 3 take 4 CPUs."""
    hq_env.start_server()
    hq_env.start_worker(cpus=16, args=["--resource", "x=[0,1]"])
    gate = Gate(hq_env)
    script = " ".join(gate.command()[2:])
    jobfile = hq_env.work / "job.toml"
    tasks = "".join(
        f"""
[[task]]
id = {i}
command = ["bash", "-c", {json.dumps(script)}]
[[task.request]]
resources = {{ cpus = "1", x = "1" }}
[[task.request]]
resources = {{ cpus = "4" }}
"""
        for i in range(5)
    )
    jobfile.write_text(tasks)
    hq_env.command(["job", "submit-file", str(jobfile)])
    names = gate.wait_started(5)
    variants = sorted(gate.env(n).get("HQ_RESOURCE_VARIANT", "?") for n in names)
    assert variants == ["0", "0", "1", "1", "1"]
    gate.open()
    hq_env.wait_for_job_state(1, "FINISHED")


# --- a synthetic 2 x 2 x 8 x 2 machine -------------------------------------------------------


@pytest.fixture
def big_machine(tmp_path: Path) -> Path:
    """64 CPUs: 2 sockets x 2 NUMA nodes x 8 cores x 2 hyper-threads."""
    return write_machine(
        tmp_path / "machine", sockets=2, nodes_per_socket=2, cores_per_node=8, threads=2
    )


def numa_groups(hq_env: HqEnv) -> list[list[int]]:
    [worker] = hq_env.json(["worker", "info", "1"])
    [cpus] = [r for r in worker["configuration"]["resources"]["resources"] if r["name"] == "cpus"]
    return [[int(c) for c in group] for group in cpus["groups"]]


@pytest.mark.parametrize("hyper_threading", [True, False])
def test_half_node_tasks_never_split_across_numa_nodes(
    hq_env: HqEnv, big_machine: Path, hyper_threading: bool
) -> None:
    """Eight tasks of half a NUMA node each fill the four nodes exactly, none split."""
    hq_env.start_server()
    args = ["--detect-resources=cpus"] + ([] if hyper_threading else ["--no-hyper-threading"])
    hq_env.start_worker(cpus=None, args=args, env={"HQSHM_SYSFS_ROOT": str(big_machine)})
    groups = numa_groups(hq_env)
    per_node = 16 if hyper_threading else 8
    assert [len(g) for g in groups] == [per_node] * 4
    gate = Gate(hq_env)
    submit(hq_env, ["--array", "1-8", "--cpus", f"{per_node // 2} compact", "--", *gate.command()])
    names = gate.wait_started(8)
    used: set[int] = set()
    for name in names:
        cpus = [int(c) for c in labels(gate.env(name)["HQ_CPUS"])]
        assert group_sizes(",".join(map(str, cpus)), groups) == [per_node // 2], cpus
        assert not used & set(cpus)
        used |= set(cpus)
    assert used == {c for g in groups for c in g}
    gate.open()
    hq_env.wait_for_job_state(1, "FINISHED")


def test_whole_numa_nodes_with_hyper_threads(hq_env: HqEnv, big_machine: Path) -> None:
    hq_env.start_server()
    hq_env.start_worker(
        cpus=None, args=["--detect-resources=cpus"], env={"HQSHM_SYSFS_ROOT": str(big_machine)}
    )
    groups = numa_groups(hq_env)
    # Node 0 holds cores 0-7 and their siblings 32-39.
    assert groups[0] == [*range(8), *range(32, 40)]
    env = run_one(hq_env, "--cpus", "16 compact!")
    assert group_sizes(env["HQ_CPUS"], groups) == [16]
    env = run_one(hq_env, "--cpus", "4 scatter")
    assert group_sizes(env["HQ_CPUS"], groups) == [1, 1, 1, 1]
    env = run_one(hq_env, "--cpus", "20 tight")
    assert group_sizes(env["HQ_CPUS"], groups) == [4, 16]


def test_synthetic_cpus_are_not_pinned(hq_env: HqEnv, big_machine: Path) -> None:
    """Labels of a machine this is not: the task runs with the worker's own affinity."""
    hq_env.start_server()
    hq_env.start_worker(
        cpus=None, args=["--detect-resources=cpus"], env={"HQSHM_SYSFS_ROOT": str(big_machine)}
    )
    env = run_one(hq_env, "--cpus", "2", report="env; grep Cpus_allowed_list /proc/self/status")
    out = (hq_env.work / "job-1" / "0.stdout").read_text()
    assert len(labels(env["HQ_CPUS"])) == 2
    mine = sorted(os.sched_getaffinity(0))
    allowed = next(line for line in out.splitlines() if line.startswith("Cpus_allowed_list"))
    assert allowed.split(":")[1].strip() in {",".join(map(str, mine)), f"{mine[0]}-{mine[-1]}"}


def test_task_goes_where_it_fits_now(hq_env: HqEnv) -> None:
    """Both workers could run it some day; the one whose GPU is free now gets it."""
    hq_env.start_server()
    hq_env.start_worker(cpus=2, args=["--resource", "gpus/nvidia=[0]"])
    hq_env.start_worker(cpus=2, args=["--resource", "gpus/nvidia=[0]"])
    gate = Gate(hq_env)
    busy = submit(hq_env, ["--resource", "gpus/nvidia=1", "--", *gate.command()])
    gate.wait_started(1)
    busy_worker = hq_env.json(["task", "list", str(busy)])[str(busy)][0]["worker"]
    for _ in range(3):
        job = submit(hq_env, ["--resource", "gpus/nvidia=1", "--", "true"])
        hq_env.wait_for_job_state(job, "FINISHED")
        assert hq_env.json(["task", "list", str(job)])[str(job)][0]["worker"] != busy_worker
    gate.open()
    hq_env.wait_for_job_state(busy, "FINISHED")


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cpus=sum(4)"],
            "Resource kind `sum` cannot be used with CPUs. CPUs must have identity",
        ),
        (
            ["--cpus=2", "--resource", "foo=[a]", "--resource", "foo=[b]"],
            "Resource foo defined twice",
        ),
        (["--cpus=2", "--resource", "foo=[]"], "List has to contain at least a single element"),
        (["--cpus=2", "--resource", "foo=[a,a]"], "List items have to be unique"),
        (["--cpus=[[0,1],[]]"], "Each group has to contain at least a single element"),
        (["--cpus=[[0,1],[1,2]]"], "Group items have to be unique"),
        (["--cpus=2", "--resource", "foo=range(5-2)"], "Invalid resource definition for foo"),
        (["--cpus=2", "--resource", "foo=sum(x)"], "Invalid resource definition for foo"),
        (["--cpus=2", "--resource", "1foo=[a]"], 'Invalid resource name "1foo"'),
        (["--cpus=2", "--resource", "foo_bar=[a]"], 'Invalid resource name "foo_bar"'),
        (["--resource", "foo=[a]"], "You have to specify --cpus explicitly"),
    ],
)
def test_bad_pools_stop_the_worker_with_a_message(
    hq_env: HqEnv, args: list[str], message: str
) -> None:
    hq_env.start_server()
    result = hq_env.run(["worker", "start", "--detect-resources=none", *args], timeout=20)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode != 0, output
    assert message in output
    assert "Traceback" not in output
    assert hq_env.json(["worker", "list", "--all"]) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus=0"], "Zero resources cannot be requested"),
        (["--resource", "foo=0"], "Zero resources cannot be requested"),
        (["--cpus=1.00001"], "Resource precision exceeded"),
        (["--resource", "foo=1", "--resource", "foo=2"], "Resource 'foo' defined more than once"),
        (["--cpus=2 best"], "unknown policy `best`"),
        (["--resource", "foo"], 'Invalid resource "foo"'),
        (["--resource", "f_o=1"], 'Invalid resource name "f_o"'),
    ],
)
def test_bad_requests_are_refused_at_submit(hq_env: HqEnv, args: list[str], message: str) -> None:
    hq_env.start_server()
    output = hq_env.command(["submit", *args, "--", "true"], expect_fail=message)
    assert "Traceback" not in output
    assert hq_env.json(["job", "list", "--all"]) == []
