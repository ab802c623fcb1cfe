"""Detection of a node's resources (spec/resources.md §1.3) on synthetic machines, and the
`--coupling` grammar and its checks against a worker's pools (resources.md §3.3, output.md §4.2).

GPU tools are fake shell scripts on a PATH the test controls: the real `nvidia-smi` and
`rocm-smi` are outside the project and cannot run on a test machine without GPUs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from fixtures.machines import (
    add_kfd_nodes,
    add_nvidia_gpus,
    write_cpus,
    write_machine,
    write_tool,
)
from harness import wait_for_pid_exit
from hqshm.cluster.resources import FRACTIONS, CouplingWeight, PoolKind, ResourcePool

from hqshm.cli.resourceview import descriptor_json, descriptor_summary
from hqshm.errors import UsageError, UserError
from hqshm.model.descriptor import CouplingLink, build_descriptor, parse_coupling, resolve_coupling
from hqshm.model.resourcespec import parse_cpus, parse_pool
from hqshm.node import affinity, gpus
from hqshm.node.affinity import CpuInfo
from hqshm.node.config import (
    DETECTABLE,
    NodeOptions,
    ServerEndpoint,
    detect_cpus,
    detect_memory_mib,
    detect_resources,
    node_resources,
)


def ids(*ranges: range) -> tuple[str, ...]:
    return tuple(str(i) for r in ranges for i in r)


def no_tools(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds no GPU tool (an empty directory)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty)}


def fake_tools(bin_dir: Path) -> dict[str, str]:
    """The fakes first, then the system's PATH (for the shell commands the fakes use)."""
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}


# -- CPUs ---------------------------------------------------------------------------------------


def test_two_sockets_of_two_numa_nodes_with_hyper_threads(tmp_path: Path) -> None:
    root = write_machine(tmp_path, sockets=2, nodes_per_socket=2, cores_per_node=8, threads=2)
    assert (root / "sys/devices/system/node/node0/cpulist").read_text() == "0-7,32-39\n"
    cpus = detect_cpus(str(root))
    assert cpus.pool.kind == PoolKind.GROUPS
    assert cpus.pool.groups == (
        ids(range(0, 8), range(32, 40)),
        ids(range(8, 16), range(40, 48)),
        ids(range(16, 24), range(48, 56)),
        ids(range(24, 32), range(56, 64)),
    )
    assert cpus.numa_of_group == (0, 1, 2, 3)
    assert cpus.filtered == ()  # 64 synthetic CPUs on a smaller machine: no mask applies


def test_no_hyper_threading_keeps_the_first_thread_of_each_core(tmp_path: Path) -> None:
    root = write_machine(tmp_path, sockets=2, nodes_per_socket=2, cores_per_node=8, threads=2)
    cpus = detect_cpus(str(root), no_hyper_threading=True)
    assert cpus.pool.groups == tuple(ids(range(n * 8, n * 8 + 8)) for n in range(4))
    assert cpus.numa_of_group == (0, 1, 2, 3)


def test_machine_without_numa_directories_is_one_list(tmp_path: Path) -> None:
    root = write_machine(tmp_path, cores_per_node=4, threads=2, numa=False)
    cpus = detect_cpus(str(root))
    assert (cpus.pool.kind, cpus.pool.groups) == (PoolKind.LIST, (ids(range(8)),))
    assert cpus.numa_of_group == (0,)
    assert detect_cpus(str(root), no_hyper_threading=True).pool.groups == (ids(range(4)),)


def test_interleaved_node_lists_with_ranges(tmp_path: Path) -> None:
    """Nodes listed as `0-3,8-11` and `4-7,12-15`; node 2 holds memory only; node ids with a
    gap (0, 1, 3) keep their numbers in the NUMA map."""
    siblings = [[cpu] for cpu in range(20)]
    nodes = {
        0: [*range(0, 4), *range(8, 12)],
        1: [*range(4, 8), *range(12, 16)],
        2: [],
        3: list(range(16, 20)),
    }
    root = write_cpus(tmp_path, nodes, siblings)
    assert (root / "sys/devices/system/node/node0/cpulist").read_text() == "0-3,8-11\n"
    cpus = detect_cpus(str(root))
    assert cpus.pool.groups == (
        ids(range(0, 4), range(8, 12)),
        ids(range(4, 8), range(12, 16)),
        ids(range(16, 20)),
    )
    assert cpus.numa_of_group == (0, 1, 3)


def test_single_numa_node_is_a_list(tmp_path: Path) -> None:
    root = write_machine(tmp_path, cores_per_node=3)
    cpus = detect_cpus(str(root))
    assert (cpus.pool.kind, cpus.pool.groups, cpus.numa_of_group) == (
        PoolKind.LIST,
        (("0", "1", "2"),),
        (0,),
    )


def test_this_machine_is_filtered_by_the_affinity_mask() -> None:
    cpus = detect_cpus(None)
    assert sorted(int(label) for label in cpus.pool.labels) == sorted(os.sched_getaffinity(0))


def test_mask_filters_this_machine_and_hyper_threading_keeps_an_allowed_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two cores of two threads (0,2 and 1,3) seen through the mask {1,2,3}: the kernel's
    answers are faked, since this machine's mask and topology are not the test's to choose."""
    topology = [CpuInfo(cpu, cpu % 2, 0, 0, cpu % 2) for cpu in range(4)]
    monkeypatch.setattr(affinity, "read_topology", lambda root: topology)
    monkeypatch.setattr(affinity, "get_affinity", lambda: [1, 2, 3])
    with caplog.at_level(logging.INFO):
        cpus = detect_cpus(None)
    assert cpus.pool.groups == (("1", "2", "3"),)
    assert cpus.filtered == (0, 1, 2, 3)
    assert "Some cores were filtered by a CPU mask. All cores: 0-3. Allowed cores: 1-3." in (
        caplog.text
    )
    # Core 0's first thread (0) is masked out: its thread 2 stands for it.
    assert detect_cpus(None, no_hyper_threading=True).pool.groups == (("1", "2"),)


def test_a_missing_synthetic_root_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        cpus = detect_cpus(str(tmp_path / "nothing"))
    assert "Cannot read the CPU topology" in caplog.text
    assert cpus.pool.count >= 1  # still a usable node: what this process may run on


# -- memory -------------------------------------------------------------------------------------


def test_memory_from_meminfo_in_mib(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16253056 kB\nMemFree:         1000 kB\n")
    pool = detect_memory_mib({}, str(meminfo))
    assert pool == ResourcePool("mem", PoolKind.SUM, size=158_721_250)  # 15872.125 MiB
    assert descriptor_summary(build_descriptor([parse_cpus("1"), pool]), multiline=True) == (
        "cpus: 1\nmem: 15.50 GiB"
    )


def test_memory_from_slurm_wins(tmp_path: Path) -> None:
    pool = detect_memory_mib({"SLURM_MEM_PER_NODE": "4096"}, str(tmp_path / "missing"))
    assert pool == ResourcePool("mem", PoolKind.SUM, size=4096 * FRACTIONS)


def test_no_meminfo_no_memory(tmp_path: Path) -> None:
    assert detect_memory_mib({}, str(tmp_path / "missing")) is None


# -- GPUs ---------------------------------------------------------------------------------------


def test_cuda_visible_devices_labels_and_duplicates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**no_tools(tmp_path), "CUDA_VISIBLE_DEVICES": "1,3,1"}
    with caplog.at_level(logging.WARNING):
        pool = gpus.detect_gpus(gpus.NVIDIA, env)
    assert pool == ResourcePool("gpus/nvidia", PoolKind.LIST, (("1", "3"),))
    assert "Duplicate GPU 1 in CUDA_VISIBLE_DEVICES is ignored" in caplog.text
    env["CUDA_VISIBLE_DEVICES"] = "foo,bar"
    assert gpus.detect_gpus(gpus.NVIDIA, env).groups == (("foo", "bar"),)


def test_rocr_visible_devices(tmp_path: Path) -> None:
    env = {**no_tools(tmp_path), "ROCR_VISIBLE_DEVICES": "1"}
    assert gpus.detect_gpus(gpus.AMD, env) == ResourcePool("gpus/amd", PoolKind.LIST, (("1",),))


def test_an_empty_variable_hides_every_gpu(tmp_path: Path) -> None:
    add_nvidia_gpus(tmp_path, 2)
    env = {**no_tools(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    assert gpus.detect_gpus(gpus.NVIDIA, env, proc=str(tmp_path / "proc")) is None


def test_nvidia_gpus_counted_in_proc(tmp_path: Path) -> None:
    add_nvidia_gpus(tmp_path, 3)
    pool = gpus.detect_gpus(gpus.NVIDIA, no_tools(tmp_path), proc=str(tmp_path / "proc"))
    assert pool == ResourcePool("gpus/nvidia", PoolKind.RANGE, start=0, end=2)


def test_no_nvidia_gpus_anywhere(tmp_path: Path) -> None:
    assert gpus.detect_gpus(gpus.NVIDIA, no_tools(tmp_path), proc=str(tmp_path / "proc")) is None


def test_nvidia_smi_wins_over_proc(tmp_path: Path) -> None:
    add_nvidia_gpus(tmp_path, 4)
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir, "nvidia-smi", 'echo "0, GPU-aaa"\necho "2, GPU-ccc"\n')
    pool = gpus.detect_gpus(gpus.NVIDIA, fake_tools(bin_dir), proc=str(tmp_path / "proc"))
    assert pool == ResourcePool("gpus/nvidia", PoolKind.LIST, (("0", "2"),))


def test_broken_nvidia_smi_falls_back_to_proc(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_nvidia_gpus(tmp_path, 2)
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir, "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    with caplog.at_level(logging.WARNING):
        pool = gpus.detect_gpus(gpus.NVIDIA, fake_tools(bin_dir), proc=str(tmp_path / "proc"))
    assert pool == ResourcePool("gpus/nvidia", PoolKind.RANGE, start=0, end=1)
    assert "nvidia-smi exited with 9: NVIDIA-SMI has failed" in caplog.text


def test_hung_tool_is_killed_after_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_nvidia_gpus(tmp_path, 1)
    bin_dir = tmp_path / "bin"
    pid_file = tmp_path / "pid"
    # The tool's own child keeps the pipe open: killing only the tool would not end the read.
    write_tool(bin_dir, "nvidia-smi", f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    begin = time.monotonic()
    with caplog.at_level(logging.WARNING):
        pool = gpus.detect_gpus(
            gpus.NVIDIA, fake_tools(bin_dir), proc=str(tmp_path / "proc"), timeout=0.3
        )
    assert 0.3 <= time.monotonic() - begin < 15  # its timeout, not the tool's 30 s
    assert "nvidia-smi did not answer within 0.3 s" in caplog.text
    assert pool == ResourcePool("gpus/nvidia", PoolKind.RANGE, start=0, end=0)
    sleeper = int(pid_file.read_text())
    assert wait_for_pid_exit(sleeper, timeout=5.0), "the tool's child is still alive"


def test_amd_gpus_from_kfd_topology(tmp_path: Path) -> None:
    add_kfd_nodes(tmp_path, cpu_nodes=2, gpus=2)
    env = no_tools(tmp_path)
    pool = gpus.detect_gpus(gpus.AMD, env, sysfs=str(tmp_path / "sys"))
    assert pool == ResourcePool("gpus/amd", PoolKind.RANGE, start=0, end=1)


def test_kfd_with_cpu_nodes_only_has_no_gpu(tmp_path: Path) -> None:
    add_kfd_nodes(tmp_path, cpu_nodes=1)
    assert gpus.detect_gpus(gpus.AMD, no_tools(tmp_path), sysfs=str(tmp_path / "sys")) is None


def test_rocm_smi_when_no_kfd(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    write_tool(
        bin_dir,
        "rocm-smi",
        """cat <<'EOF'
{"card1": {"Unique ID": "0x2222"}, "card0": {"Unique ID": "0x1111"}, "system": {}}
EOF
""",
    )
    pool = gpus.detect_gpus(gpus.AMD, fake_tools(bin_dir), sysfs=str(tmp_path / "sys"))
    assert pool == ResourcePool("gpus/amd", PoolKind.LIST, (("0", "1"),))
    add_kfd_nodes(tmp_path, cpu_nodes=1, gpus=3)  # the kernel's view wins over the tool
    pool = gpus.detect_gpus(gpus.AMD, fake_tools(bin_dir), sysfs=str(tmp_path / "sys"))
    assert pool == ResourcePool("gpus/amd", PoolKind.RANGE, start=0, end=2)


def test_rocm_smi_garbage_is_no_gpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir, "rocm-smi", "echo 'ERROR: no ROCm'\n")
    with caplog.at_level(logging.WARNING):
        assert gpus.detect_gpus(gpus.AMD, fake_tools(bin_dir), sysfs=str(tmp_path / "sys")) is None
    assert "rocm-smi printed no JSON" in caplog.text


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("0, GPU-5d3e\n1, GPU-77aa\n", ("0", "1")),
        ("", ()),
        ("\n3, GPU-x\nNo devices were found\n", ("3",)),
    ],
)
def test_parse_nvidia_smi(text: str, labels: tuple[str, ...]) -> None:
    assert gpus.parse_nvidia_smi(text) == labels


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ('{"card10": {}, "card2": {}}', ("2", "10")),
        ('{"system": {"x": 1}}', ()),
        ("[1, 2]", ()),
        ("not json", ()),
    ],
)
def test_parse_rocm_smi(text: str, labels: tuple[str, ...]) -> None:
    assert gpus.parse_rocm_smi(text) == labels


# -- what a node detects ------------------------------------------------------------------------


def test_detect_only_the_listed_components(tmp_path: Path) -> None:
    write_machine(tmp_path, cores_per_node=2)
    env = {**no_tools(tmp_path), "CUDA_VISIBLE_DEVICES": "1", "ROCR_VISIBLE_DEVICES": "0"}
    names = [p.name for p in detect_resources(["cpus"], env, root=str(tmp_path)).pools]
    assert names == ["cpus"]
    names = [
        p.name for p in detect_resources(["cpus", "gpus/nvidia"], env, root=str(tmp_path)).pools
    ]
    assert names == ["cpus", "gpus/nvidia"]
    names = [p.name for p in detect_resources(DETECTABLE, env, root=str(tmp_path)).pools]
    assert names == ["cpus", "mem", "gpus/nvidia", "gpus/amd"]


def test_synthetic_root_gives_gpus_of_its_proc_and_kfd(tmp_path: Path) -> None:
    write_machine(tmp_path, cores_per_node=2)
    add_nvidia_gpus(tmp_path, 2)
    add_kfd_nodes(tmp_path, gpus=1)
    found = detect_resources(["gpus/nvidia", "gpus/amd"], no_tools(tmp_path), root=str(tmp_path))
    assert found.pools == (
        ResourcePool("gpus/nvidia", PoolKind.RANGE, start=0, end=1),
        ResourcePool("gpus/amd", PoolKind.RANGE, start=0, end=0),
    )
    assert found.numa_of_group == ()


def options(tmp_path: Path, **fields: object) -> NodeOptions:
    fields.setdefault("env", no_tools(tmp_path))
    return NodeOptions(server=ServerEndpoint("localhost", 1), system_root=str(tmp_path), **fields)


def test_node_detects_only_what_was_not_given(tmp_path: Path) -> None:
    write_machine(tmp_path, sockets=2, cores_per_node=2)
    add_nvidia_gpus(tmp_path, 2)
    given = parse_pool("gpus/nvidia", "[7]")
    resources = node_resources(
        options(tmp_path, resources=(given,), detect=frozenset({"cpus", "gpus/nvidia"}))
    )
    assert [p.name for p in resources.descriptor.pools] == ["cpus", "gpus/nvidia"]
    assert resources.descriptor.pool("gpus/nvidia") == given
    assert resources.descriptor.pool("cpus").groups == (("0", "1"), ("2", "3"))
    assert resources.numa_of_group == (0, 1)
    explicit = node_resources(options(tmp_path, cpus=parse_cpus("4"), detect=frozenset()))
    assert explicit.numa_of_group == ()
    assert [p.name for p in explicit.descriptor.pools] == ["cpus"]


def test_node_resources_resolve_the_coupling(tmp_path: Path) -> None:
    write_machine(tmp_path, sockets=2, cores_per_node=2)
    opts = options(
        tmp_path,
        resources=(parse_pool("gpus", "[[a],[b]]"),),
        detect=frozenset({"cpus"}),
        coupling=parse_coupling("gpus[1]:cpus[1]=64,cpus[0]:gpus[0]"),
    )
    resources = node_resources(opts)
    assert resources.descriptor.coupling == (
        CouplingWeight(0, 0, 1, 0, 256),
        CouplingWeight(0, 1, 1, 1, 64),
    )
    assert resources.numa_of_group == (0, 1)


def test_detected_single_node_cpus_cannot_be_coupled(tmp_path: Path) -> None:
    write_machine(tmp_path, cores_per_node=4)
    opts = options(
        tmp_path,
        resources=(parse_pool("gpus", "[[a],[b]]"),),
        detect=frozenset({"cpus"}),
        coupling=parse_coupling("cpus[0]:gpus[0]"),
    )
    with pytest.raises(UserError, match="^Resource 'cpus' has only a single group$"):
        node_resources(opts)


# -- coupling (spec/resources.md §3.3) ----------------------------------------------------------


def test_coupling_fact_of_the_spec() -> None:
    """cpus [[1,2,3],[4,5,6]], `ddd`, `foo` coupled 1:1 (output.md §4.2)."""
    desc = build_descriptor(
        [parse_cpus("[[1,2,3],[4,5,6]]"), parse_pool("foo", "2x3"), parse_pool("ddd", "sum(123)")],
        parse_coupling("cpus[0]:foo[0],cpus[1]:foo[1]"),
    )
    assert descriptor_json(desc)["coupling"]["weights"] == [
        {"resource1_idx": 0, "group1_idx": 0, "resource2_idx": 2, "group2_idx": 0, "weight": 256},
        {"resource1_idx": 0, "group1_idx": 1, "resource2_idx": 2, "group2_idx": 1, "weight": 256},
    ]
    assert descriptor_summary(desc, multiline=True) == (
        "cpus: 2x3 [coupled]\nddd: 123\nfoo: 2x3 [coupled]"
    )
    assert descriptor_summary(desc, multiline=False) == (
        "cpus 2x3 [coupled]; ddd 123; foo 2x3 [coupled]"
    )


def test_coupling_is_normalised_and_sorted() -> None:
    pools = [parse_pool("a", "2x1"), parse_pool("b", "3x1"), parse_cpus("2x2")]
    weights = resolve_coupling(parse_coupling("cpus[1]:b[2]=7,b[0]:a[1],a[0]:b[1]=65535"), pools)
    assert weights == (
        CouplingWeight(0, 0, 1, 1, 65535),
        CouplingWeight(0, 1, 1, 0, 256),
        CouplingWeight(1, 2, 2, 1, 7),
    )


def test_coupling_syntax() -> None:
    assert parse_coupling(" cpus [ 0 ] : gpus/nvidia[12] = 64 ,a[1]:b[2]") == (
        CouplingLink("cpus", 0, "gpus/nvidia", 12, 64),
        CouplingLink("a", 1, "b", 2, 256),
    )


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("cpus0:foo[0]", "Missing '['"),
        ("cpus[0]:foo", "Missing '['"),
        ("cpus[0:foo[0]", "Missing ']'"),
        ("cpus[0]", "Missing ':'"),
        ("cpus[0]foo[0]", "Missing ':'"),
        ("cpus[x]:foo[0]", "Invalid group index: x"),
        ("cpus[-1]:foo[0]", "Invalid group index: -1"),
        ("cpus[0]:foo[0]=abc", "Invalid weight: abc"),
        ("cpus[0]:foo[0]=0", "Invalid weight: 0"),
        ("cpus[0]:foo[0]=65536", "Invalid weight: 65536"),
        ("cpus[0]:foo[0];cpus[1]:foo[1]", "Missing ','"),
        ("cpus[0]:_foo[0]", 'Invalid resource name "_foo"'),
    ],
)
def test_coupling_syntax_errors(text: str, detail: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_coupling(text)
    assert str(info.value).startswith(
        f"error: invalid value '{text}' for '--coupling <COUPLING>': {detail}"
    )
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpus[0]:foo[0]", "Resource not found: foo"),
        ("xxx[0]:cpus[0]", "Resource 'xxx' has only a single group"),
        ("cpus[0]:ddd[0]", "Resource 'ddd' has only a single group"),
        ("cpus[0]:yyy[3]", "Invalid group id 3 for resource 'yyy'"),
        ("cpus[2]:yyy[0]", "Invalid group id 2 for resource 'cpus'"),
        ("cpus[0]:cpus[1]", "Resource 'cpus' cannot be coupled with itself"),
        ("cpus[0]:yyy[1],yyy[1]:cpus[0]=3", "Coupling yyy[1]:cpus[0] is defined more than once"),
    ],
)
def test_coupling_checked_against_the_pools(text: str, message: str) -> None:
    pools = [
        parse_cpus("2x2"),
        parse_pool("ddd", "sum(5)"),
        parse_pool("xxx", "[a,b]"),
        parse_pool("yyy", "3x2"),
    ]
    with pytest.raises(UserError) as info:
        build_descriptor(pools, parse_coupling(text))
    assert str(info.value) == message
    assert info.value.exit_code == 1
