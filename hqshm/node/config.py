"""A node's settings and the resources it detects on its machine.

Detection follows spec/resources.md §1.3: CPUs from the sysfs topology (through the C module),
filtered by the process's affinity mask and grouped by NUMA node; memory from the kernel
(or Slurm's ``SLURM_MEM_PER_NODE``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cluster.resources import FRACTIONS, PoolKind, ResourcePool

logger = logging.getLogger(__name__)

DETECTABLE = ("cpus", "mem", "gpus/nvidia", "gpus/amd")


@dataclass(frozen=True, slots=True)
class NodeOptions:
    server_dir: Path
    cpus: ResourcePool | None = None
    resources: tuple[ResourcePool, ...] = ()
    detect: frozenset[str] = frozenset(DETECTABLE)
    no_hyper_threading: bool = False
    hostname: str | None = None
    work_dir: str | None = None
    heartbeat: float = 8.0
    idle_timeout: float | None = None
    time_limit: float | None = None
    on_server_lost: str = "stop"
    group: str | None = None
    manager: str = "detect"
    overview_interval: float | None = None
    min_utilization: float = 0.0
    pin: bool = True
    sysfs_root: str = "/sys"
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)


@dataclass(frozen=True, slots=True)
class DetectedCpus:
    pool: ResourcePool
    numa_of_group: tuple[int, ...]  # NUMA node id of each group of the pool
    filtered: bool  # some CPUs were outside the affinity mask


def detect_cpus(sysfs_root: str = "/sys", no_hyper_threading: bool = False) -> DetectedCpus:
    from hqshm.node import affinity

    try:
        topology = affinity.read_topology(sysfs_root)
    except OSError:
        topology = []
    allowed = set(affinity.get_affinity())
    if not topology:
        ids = sorted(allowed) or list(range(os.cpu_count() or 1))
        pool = ResourcePool("cpus", PoolKind.LIST, (tuple(str(i) for i in ids),))
        return DetectedCpus(pool, (0,), False)
    cpus = [c for c in topology if c.id in allowed]
    filtered = len(cpus) < len(topology)
    if no_hyper_threading:
        cpus = [c for c in cpus if c.id == c.first_sibling]
    by_numa: dict[int, list[int]] = {}
    for cpu in cpus:
        by_numa.setdefault(max(cpu.numa, 0), []).append(cpu.id)
    numas = sorted(by_numa)
    groups = tuple(tuple(str(i) for i in sorted(by_numa[n])) for n in numas)
    kind = PoolKind.GROUPS if len(groups) > 1 else PoolKind.LIST
    return DetectedCpus(ResourcePool("cpus", kind, groups), tuple(numas), filtered)


def detect_memory_mib(env: Mapping[str, str]) -> ResourcePool | None:
    """Total memory in MiB, as a sum pool (Slurm's per-node limit when inside Slurm)."""
    slurm = env.get("SLURM_MEM_PER_NODE")
    if slurm and slurm.isdigit():
        return ResourcePool("mem", PoolKind.SUM, size=int(slurm) * FRACTIONS)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return ResourcePool("mem", PoolKind.SUM, size=(kib * FRACTIONS) // 1024)
    except OSError:
        return None
    return None


def detect_gpus(env: Mapping[str, str], family: str) -> ResourcePool | None:
    """GPUs from the visibility variables (spec/resources.md §1.3), else /proc for NVIDIA."""
    variable = "CUDA_VISIBLE_DEVICES" if family == "gpus/nvidia" else "ROCR_VISIBLE_DEVICES"
    value = env.get(variable)
    if value is not None:
        labels: list[str] = []
        for label in (v.strip() for v in value.split(",")):
            if label and label not in labels:
                labels.append(label)
            elif label:
                logger.warning("Duplicate GPU %s in %s ignored", label, variable)
        if labels:
            return ResourcePool(family, PoolKind.LIST, (tuple(labels),))
        return None
    if family == "gpus/nvidia":
        try:
            count = len(os.listdir("/proc/driver/nvidia/gpus"))
        except OSError:
            return None
        if count:
            return ResourcePool(family, PoolKind.RANGE, start=0, end=count - 1)
    return None


def node_pools(options: NodeOptions) -> tuple[list[ResourcePool], tuple[int, ...]]:
    """Every pool of the node (explicit ones win over detected ones), and the NUMA map of CPUs."""
    pools: dict[str, ResourcePool] = {p.name: p for p in options.resources}
    numa: tuple[int, ...] = ()
    if options.cpus is not None:
        pools["cpus"] = options.cpus
    elif "cpus" not in pools and "cpus" in options.detect:
        detected = detect_cpus(options.sysfs_root, options.no_hyper_threading)
        if detected.filtered:
            logger.info("Some cores were filtered by a CPU mask. All cores: %s",
                        detected.pool.labels)
        pools["cpus"] = detected.pool
        numa = detected.numa_of_group
    if "mem" in options.detect and "mem" not in pools:
        mem = detect_memory_mib(options.env)
        if mem is not None:
            pools["mem"] = mem
    for family in ("gpus/nvidia", "gpus/amd"):
        if family in options.detect and family not in pools:
            gpus = detect_gpus(options.env, family)
            if gpus is not None:
                pools[family] = gpus
    return [pools[name] for name in sorted(pools)], numa


def cpu_ids(labels: Sequence[str]) -> list[int] | None:
    """CPU labels as ids if all are integers, else None (then tasks are not pinned)."""
    try:
        return [int(label) for label in labels]
    except ValueError:
        return None
