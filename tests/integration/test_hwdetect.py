"""Resource detection as users see it: `hq worker hwdetect` (spec/output.md §3.4, §4.2), the
pools `hq worker start` detects (resources.md §1.3, conformance.md "Workers", "Resources and
CPUs"), and `--coupling` (resources.md §3.3).

Synthetic machines come from tests/fixtures/machines.py through `HQSHM_SYSFS_ROOT`. GPU tools
are fake shell scripts put first on PATH: the real `nvidia-smi` and `rocm-smi` are outside the
project and cannot run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.machines import add_kfd_nodes, add_nvidia_gpus, write_machine, write_tool
from harness import HqEnv, hq_executable

# Variables that would change what is detected; every test starts without them.
DETECTION_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HQSHM_SYSFS_ROOT",
    "SLURM_MEM_PER_NODE",
)


def hwdetect(
    *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`hq worker hwdetect ARGS` with exactly these detection variables (no server needed)."""
    full_env = {k: v for k, v in os.environ.items() if k not in DETECTION_VARIABLES}
    full_env.update(env or {})
    result = subprocess.run(
        [*prefix, *hq_executable(), "worker", "hwdetect", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def sections(stdout: str) -> tuple[list[str], list[str]]:
    """The lines of `Summary:` and of `Full Description:`, checking the layout between."""
    summary, sep, full = stdout.partition("\n\nFull Description:\n")
    assert sep, stdout
    assert summary.startswith("Summary:\n"), stdout
    assert full.endswith("\n") and not full.endswith("\n\n"), stdout
    return summary.splitlines()[1:], full.splitlines()


def fake_path(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """32 CPUs: 2 sockets x 2 NUMA nodes x 4 cores x 2 threads."""
    return write_machine(
        tmp_path / "machine", sockets=2, nodes_per_socket=2, cores_per_node=4, threads=2
    )


# -- hwdetect ---------------------------------------------------------------------------------


def test_hwdetect_layout_with_cuda_visible_devices() -> None:
    summary, full = sections(hwdetect(env={"CUDA_VISIBLE_DEVICES": "1,3"}).stdout)
    mine = sorted(os.sched_getaffinity(0))
    assert [line.split(":")[0] for line in summary] == ["cpus", "gpus/nvidia", "mem"]
    assert [line.split(":")[0] for line in full] == ["cpus", "gpus/nvidia", "mem"]
    assert "gpus/nvidia: [1,3]" in full
    assert "gpus/nvidia: 2" in summary
    # One NUMA node prints a list, several print groups: either way, exactly our CPUs.
    assert re.fullmatch(r"cpus: \[[\[\],0-9]+\]", full[0]), full
    assert sorted(int(cpu) for cpu in re.findall(r"\d+", full[0])) == mine
    assert re.fullmatch(r"mem: \d+\.\d\d [MG]iB", summary[2]), summary
    assert re.fullmatch(r"mem: sum\(\d+(\.\d{1,4})?\)", full[2]), full


def test_hwdetect_amd_gpus_from_rocr_visible_devices() -> None:
    _, full = sections(hwdetect(env={"ROCR_VISIBLE_DEVICES": "1"}).stdout)
    assert "gpus/amd: [1]" in full


def test_hwdetect_gpu_labels_and_duplicates() -> None:
    result = hwdetect(env={"CUDA_VISIBLE_DEVICES": "foo,bar"})
    assert "gpus/nvidia: [foo,bar]" in sections(result.stdout)[1]
    result = hwdetect(env={"CUDA_VISIBLE_DEVICES": "1,1,3"})
    assert "gpus/nvidia: [1,3]" in sections(result.stdout)[1]
    assert "WARN Duplicate GPU 1 in CUDA_VISIBLE_DEVICES is ignored" in result.stderr


@pytest.mark.skipif(
    1 not in os.sched_getaffinity(0) or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPUs 0 and 1",
)
def test_hwdetect_under_taskset_sees_only_the_allowed_cpu() -> None:
    result = hwdetect(prefix=("taskset", "-c", "1"))
    summary, full = sections(result.stdout)
    assert "cpus: [1]" in full
    assert "cpus: 1" in summary
    assert "INFO Some cores were filtered by a CPU mask." in result.stderr


def test_hwdetect_of_a_synthetic_machine(machine: Path) -> None:
    summary, full = sections(hwdetect(env={"HQSHM_SYSFS_ROOT": str(machine)}).stdout)
    assert summary[0] == "cpus: 4x8"
    assert full[0] == (
        "cpus: [[0,1,2,3,16,17,18,19],[4,5,6,7,20,21,22,23],"
        "[8,9,10,11,24,25,26,27],[12,13,14,15,28,29,30,31]]"
    )


def test_hwdetect_without_hyper_threading_keeps_one_thread_per_core(machine: Path) -> None:
    result = hwdetect("--no-hyper-threading", env={"HQSHM_SYSFS_ROOT": str(machine)})
    summary, full = sections(result.stdout)
    assert summary[0] == "cpus: 4x4"
    assert full[0] == "cpus: [[0,1,2,3],[4,5,6,7],[8,9,10,11],[12,13,14,15]]"


def test_hwdetect_json_is_the_descriptor(machine: Path, tmp_path: Path) -> None:
    add_nvidia_gpus(machine, 2)
    # A broken nvidia-smi must not stop detection: the /proc entries are counted instead.
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir, "nvidia-smi", "echo 'Failed to initialize NVML' >&2\nexit 9\n")
    result = hwdetect(
        "--output-mode=json",
        "--no-hyper-threading",
        env={"HQSHM_SYSFS_ROOT": str(machine), "PATH": fake_path(bin_dir)},
    )
    data = json.loads(result.stdout)
    assert list(data) == ["coupling", "resources"]
    assert data["coupling"] == {"weights": []}
    cpus, nvidia, mem = data["resources"]
    assert cpus == {
        "name": "cpus",
        "kind": "groups",
        "groups": [[str(i) for i in range(g * 4, g * 4 + 4)] for g in range(4)],
    }
    assert nvidia == {"name": "gpus/nvidia", "kind": "range", "start": 0, "end": 1}
    assert mem["name"] == "mem" and mem["kind"] == "sum" and mem["size"] > 0
    assert "nvidia-smi exited with 9" in result.stderr


def test_hwdetect_gpus_from_fake_tools(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir, "nvidia-smi", 'echo "0, GPU-11111111"\necho "1, GPU-22222222"\n')
    write_tool(bin_dir, "rocm-smi", 'echo \'{"card0": {"Unique ID": "0xabc"}}\'\n')
    # A synthetic root without KFD nodes, so that the tool is what finds the AMD GPU.
    root = write_machine(tmp_path / "machine", cores_per_node=2)
    _, full = sections(
        hwdetect(env={"PATH": fake_path(bin_dir), "HQSHM_SYSFS_ROOT": str(root)}).stdout
    )
    assert "gpus/nvidia: [0,1]" in full
    assert "gpus/amd: [0]" in full


def test_hwdetect_amd_gpus_from_kfd(machine: Path, tmp_path: Path) -> None:
    add_kfd_nodes(machine, cpu_nodes=2, gpus=4)
    _, full = sections(
        hwdetect(env={"HQSHM_SYSFS_ROOT": str(machine), "PATH": str(tmp_path)}).stdout
    )
    assert "gpus/amd: range(0-3)" in full


def test_hwdetect_does_not_wait_for_a_hung_tool(machine: Path, tmp_path: Path) -> None:
    add_nvidia_gpus(machine, 1)
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir, "nvidia-smi", "exec sleep 60\n")
    begin = time.monotonic()
    result = hwdetect(env={"HQSHM_SYSFS_ROOT": str(machine), "PATH": fake_path(bin_dir)})
    elapsed = time.monotonic() - begin
    assert "gpus/nvidia: [0]" in sections(result.stdout)[1]  # range(0-0), from /proc
    assert "nvidia-smi did not answer within 2 s" in result.stderr
    # It gave up at its 2 s timeout: long before the tool's 60 s (a sanity bound, not a speed).
    assert 2.0 <= elapsed < 30.0


# -- worker start -----------------------------------------------------------------------------


def resources_of(hq_env: HqEnv, worker_id: int) -> str:
    return hq_env.command(["worker", "info", str(worker_id)], as_table=True).get("Resources")


def test_worker_on_a_synthetic_machine(hq_env: HqEnv, machine: Path) -> None:
    hq_env.start_server()
    root = {"HQSHM_SYSFS_ROOT": str(machine)}
    hq_env.start_worker(cpus=None, args=["--detect-resources=cpus"], env=root)
    hq_env.start_worker(
        cpus=None, args=["--detect-resources=cpus", "--no-hyper-threading"], env=root
    )
    table = hq_env.command(["worker", "list"], as_table=True)
    assert table.column("Resources") == ["cpus 4x8", "cpus 4x4"]
    assert resources_of(hq_env, 1) == "cpus: 4x8"
    [worker] = hq_env.json(["worker", "info", "2"])
    assert worker["configuration"]["resources"]["resources"] == [
        {
            "name": "cpus",
            "kind": "groups",
            "groups": [[str(i) for i in range(g * 4, g * 4 + 4)] for g in range(4)],
        }
    ]


def test_tasks_run_on_a_synthetic_machine(hq_env: HqEnv, machine: Path) -> None:
    """Its CPUs are not this machine's: tasks get their labels but are not pinned to them."""
    hq_env.start_server()
    hq_env.start_worker(
        cpus=None, args=["--detect-resources=cpus"], env={"HQSHM_SYSFS_ROOT": str(machine)}
    )
    hq_env.command(
        ["submit", "--cpus=8 compact!", "--wait", "--", "bash", "-c", "echo $HQ_CPUS"], timeout=30
    )
    cpus = (hq_env.work / "job-1" / "0.stdout").read_text().strip()
    groups = [
        [0, 1, 2, 3, 16, 17, 18, 19],
        [4, 5, 6, 7, 20, 21, 22, 23],
        [8, 9, 10, 11, 24, 25, 26, 27],
        [12, 13, 14, 15, 28, 29, 30, 31],
    ]
    assert sorted(int(c) for c in cpus.split(",")) in groups


def test_worker_detects_what_hwdetect_shows(hq_env: HqEnv, machine: Path) -> None:
    add_nvidia_gpus(machine, 2)
    add_kfd_nodes(machine, gpus=1)
    env = {"HQSHM_SYSFS_ROOT": str(machine), "CUDA_VISIBLE_DEVICES": "5,7"}
    expected = json.loads(hwdetect("--output-mode=json", env=env).stdout)
    hq_env.start_server()
    hq_env.start_worker(cpus=None, args=["--detect-resources=all"], env=env)
    [worker] = hq_env.json(["worker", "info", "1"])
    assert worker["configuration"]["resources"] == expected
    assert resources_of(hq_env, 1).splitlines()[:3] == [
        "cpus: 4x8",
        "gpus/amd: 1",
        "gpus/nvidia: 2",
    ]


def test_detect_resources_lists(hq_env: HqEnv) -> None:
    """resources.md §1.3 test facts, on this machine's CPUs."""
    hq_env.start_server()
    gpu = {"CUDA_VISIBLE_DEVICES": "1"}
    hq_env.start_worker(cpus=None, args=["--detect-resources=cpus,mem"])
    hq_env.start_worker(cpus=None, args=["--detect-resources=cpus"], env=gpu)
    hq_env.start_worker(cpus=None, args=["--detect-resources=cpus,gpus/nvidia"], env=gpu)
    names = [
        [line.split(":")[0] for line in resources_of(hq_env, wid).splitlines()] for wid in (1, 2, 3)
    ]
    assert names == [["cpus", "mem"], ["cpus"], ["cpus", "gpus/nvidia"]]
    assert "gpus/nvidia: 1" in resources_of(hq_env, 3)


def test_explicit_pools_are_not_detected_again(hq_env: HqEnv, machine: Path) -> None:
    hq_env.start_server()
    hq_env.start_worker(
        cpus="2",
        args=[
            "--detect-resources=all",
            "--resource",
            "gpus/nvidia=[a]",
            "--resource",
            "mem=sum(100)",
        ],
        env={"HQSHM_SYSFS_ROOT": str(machine), "CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert resources_of(hq_env, 1) == "cpus: 2\ngpus/nvidia: 1\nmem: 100.00 MiB"


def test_detection_errors(hq_env: HqEnv) -> None:
    hq_env.command(
        ["worker", "start", "--detect-resources=none"],
        expect_fail="You have to specify --cpus explicitly when opting out of CPU "
        "automatic detection",
        timeout=20,
    )
    result = hq_env.run(["worker", "start", "--detect-resources=cpus,gpus"], timeout=20)
    assert result.returncode == 2
    assert b"invalid value 'cpus,gpus' for '--detect-resources" in result.stderr


def test_coupled_resources_display(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(
        cpus="[[1,2,3],[4,5,6]]",
        args=[
            "--resource",
            "ddd=sum(123)",
            "--resource",
            "foo=2x3",
            "--coupling=cpus[0]:foo[0],cpus[1]:foo[1]",
        ],
    )
    table = hq_env.command(["worker", "list"], as_table=True)
    assert table.column("Resources") == ["cpus 2x3 [coupled]; ddd 123; foo 2x3 [coupled]"]
    assert resources_of(hq_env, 1) == "cpus: 2x3 [coupled]\nddd: 123\nfoo: 2x3 [coupled]"
    [worker] = hq_env.json(["worker", "info", "1"])
    assert worker["configuration"]["resources"]["coupling"]["weights"] == [
        {"group1_idx": 0, "group2_idx": 0, "resource1_idx": 0, "resource2_idx": 2, "weight": 256},
        {"group1_idx": 1, "group2_idx": 1, "resource1_idx": 0, "resource2_idx": 2, "weight": 256},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resource", "yyy=2x2", "--coupling=cpus[0]:foo[0]"], "Resource not found: foo"),
        (
            ["--resource", "xxx=[a,b]", "--coupling=cpus[0]:xxx[0]"],
            "Resource 'xxx' has only a single group",
        ),
        (
            ["--resource", "yyy=2x2", "--coupling=cpus[1]:yyy[3]"],
            "Invalid group id 3 for resource 'yyy'",
        ),
    ],
)
def test_coupling_errors_at_worker_start(hq_env: HqEnv, args: list[str], message: str) -> None:
    hq_env.start_server()
    result = hq_env.run(
        [
            "worker",
            "start",
            "--detect-resources=none",
            "--cpus=2x2",
            f"--work-dir={hq_env.root / 'w'}",
            *args,
        ],
        timeout=20,
    )
    assert result.returncode == 1, result
    assert message in result.stderr.decode()
    assert not hq_env.command(["worker", "list"], as_table=True).rows


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        ("cpus0]:foo[0]", "Missing '['"),
        ("cpus[0:foo[0]", "Missing ']'"),
        ("cpus[0]foo[0]", "Missing ':'"),
        ("cpus[a]:foo[0]", "Invalid group index: a"),
        ("cpus[0]:foo[0]=x", "Invalid weight: x"),
    ],
)
def test_coupling_syntax_errors_at_worker_start(hq_env: HqEnv, spec: str, detail: str) -> None:
    result = hq_env.run(["worker", "start", "--cpus=2x2", f"--coupling={spec}"], timeout=20)
    assert result.returncode == 2
    assert f"invalid value '{spec}' for '--coupling <COUPLING>': {detail}" in (
        result.stderr.decode()
    )
