"""A node's settings and the resources it detects on its machine.

Detection follows spec/resources.md §1.3: CPUs from the sysfs topology (through the C module),
filtered by the process's affinity mask and grouped by NUMA node; memory from the kernel (or
Slurm's ``SLURM_MEM_PER_NODE``); GPUs as hqshm/node/gpus.py says.

A synthetic machine for tests: ``HQSHM_SYSFS_ROOT=<root>`` makes detection read
``<root>/sys`` instead of ``/sys`` (CPUs, NUMA nodes, thread siblings, the KFD topology) and
``<root>/proc`` instead of ``/proc`` for NVIDIA's GPU entries. Its CPUs are not filtered by this
process's affinity mask, since they are not this machine's CPUs (the node then does not pin
tasks to them). Memory and the GPU tools (`nvidia-smi`, `rocm-smi` on PATH) still come from
the real machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

from hqshm.cluster.frozen import field, frozen
from hqshm.cluster.resources import FRACTIONS, PoolKind, ResourceDescriptor, ResourcePool
from hqshm.model.arrays import compress_ids
from hqshm.model.descriptor import CouplingLink, build_descriptor

logger = logging.getLogger(__name__)

DETECTABLE = ("cpus", "mem", "gpus/nvidia", "gpus/amd")
SYSTEM_ROOT_VARIABLE = "HQSHM_SYSFS_ROOT"


@frozen
class ServerEndpoint:
    """Where the node connects, and the worker secret of the server's access file (None: the
    server accepts workers without authentication). The node's caller reads the access file."""

    host: str
    port: int
    secret: bytes | None = field(default=None, repr=False)


@frozen
class NodeOptions:
    server: ServerEndpoint
    cpus: ResourcePool | None = None
    resources: tuple[ResourcePool, ...] = ()
    coupling: tuple[CouplingLink, ...] = ()
    detect: frozenset[str] = frozenset(DETECTABLE)
    no_hyper_threading: bool = False
    hostname: str | None = None
    work_dir: str | None = None
    heartbeat: float = 8.0
    idle_timeout: float | None = None
    time_limit: float | None = None
    on_server_lost: str = "stop"  # stop | finish-running | reconnect (not in HQ)
    group: str | None = None
    manager: str = "detect"  # detect | none | pbs | slurm: hqshm/node/batchsystem.py
    overview_interval: float | None = None
    min_utilization: float = 0.0
    pin: bool = True
    memory_binding: str = "bind"  # bind | prefer | none: a task's memory to its CPUs' NUMA node
    system_root: str | None = None  # HQSHM_SYSFS_ROOT: a synthetic machine; None: this one
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    # Where the server is now, for a node that lost it (reconnect): a restarted server has new
    # ports and maybe new keys. The caller reads its access file (the node never does); None
    # when it cannot tell yet. Without one, the node tries ``server`` again.
    rediscover: Callable[[], ServerEndpoint | None] | None = field(default=None, repr=False,
                                                                   compare=False)


def system_root(env: Mapping[str, str]) -> str | None:
    """The synthetic machine named by ``HQSHM_SYSFS_ROOT``, if any."""
    return env.get(SYSTEM_ROOT_VARIABLE) or None


@frozen
class DetectedCpus:
    pool: ResourcePool
    numa_of_group: tuple[int, ...]  # NUMA node id of each group of the pool
    filtered: tuple[int, ...] = ()  # every CPU, when some were outside the affinity mask


def detect_cpus(root: str | None = None, no_hyper_threading: bool = False) -> DetectedCpus:
    """CPUs grouped by NUMA node: one node gives a list, several give groups."""
    from hqshm.node import affinity

    try:
        topology = affinity.read_topology(f"{root or ''}/sys")
    except OSError as exc:
        # A synthetic root that cannot be read is a broken test set-up: say so louder.
        logger.log(
            logging.DEBUG if root is None else logging.WARNING,
            "Cannot read the CPU topology: %s",
            exc,
        )
        topology = []
    if root is None:
        allowed = set(affinity.get_affinity())
        cpus = [c for c in topology if c.id in allowed]
    else:
        allowed = {c.id for c in topology}
        cpus = topology
    if not cpus:
        # No topology (or none of it is ours): what the kernel lets us run on, as one node.
        ids = sorted(allowed) or list(range(os.cpu_count() or 1))
        return DetectedCpus(ResourcePool("cpus", PoolKind.LIST, (_labels(ids),)), (0,))
    filtered = tuple(c.id for c in topology) if len(cpus) < len(topology) else ()
    if filtered:
        logger.info(
            "Some cores were filtered by a CPU mask. All cores: %s. Allowed cores: %s.",
            compress_ids(filtered),
            compress_ids(c.id for c in cpus),
        )
    if no_hyper_threading:
        # The first *allowed* thread of each core, so that a mask that excludes a core's first
        # thread does not take the whole core away (without a mask: the smallest sibling).
        first: dict[int, int] = {}
        for cpu in cpus:
            first[cpu.first_sibling] = min(first.get(cpu.first_sibling, cpu.id), cpu.id)
        kept = set(first.values())
        cpus = [c for c in cpus if c.id in kept]
    by_numa: dict[int, list[int]] = {}
    for cpu in cpus:
        by_numa.setdefault(max(cpu.numa, 0), []).append(cpu.id)
    numas = tuple(sorted(by_numa))
    groups = tuple(_labels(sorted(by_numa[n])) for n in numas)
    kind = PoolKind.GROUPS if len(groups) > 1 else PoolKind.LIST
    return DetectedCpus(ResourcePool("cpus", kind, groups), numas, filtered)


def _labels(ids: Sequence[int]) -> tuple[str, ...]:
    return tuple(str(i) for i in ids)


def detect_memory_mib(
    env: Mapping[str, str], meminfo: str = "/proc/meminfo"
) -> ResourcePool | None:
    """Total memory in MiB, as a sum pool (Slurm's per-node limit when inside Slurm)."""
    slurm = env.get("SLURM_MEM_PER_NODE")
    if slurm and slurm.isdigit():
        return ResourcePool("mem", PoolKind.SUM, size=int(slurm) * FRACTIONS)
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return ResourcePool("mem", PoolKind.SUM, size=(kib * FRACTIONS) // 1024)
    except (OSError, ValueError, IndexError):
        return None
    return None


@frozen
class DetectedResources:
    pools: tuple[ResourcePool, ...]
    numa_of_group: tuple[int, ...]  # of the detected CPU pool; () when CPUs were given


def detect_resources(
    detect: Sequence[str],
    env: Mapping[str, str],
    *,
    root: str | None = None,
    no_hyper_threading: bool = False,
) -> DetectedResources:
    """The pools of the components in ``detect`` that this (or the synthetic) machine has."""
    from hqshm.node import gpus  # subprocess and friends: not for `hq worker list`

    pools = []
    numa: tuple[int, ...] = ()
    if "cpus" in detect:
        cpus = detect_cpus(root, no_hyper_threading)
        pools.append(cpus.pool)
        numa = cpus.numa_of_group
    if "mem" in detect:
        mem = detect_memory_mib(env)
        if mem is not None:
            pools.append(mem)
    for family in (gpus.NVIDIA, gpus.AMD):
        if family in detect:
            found = gpus.detect_gpus(
                family, env, sysfs=f"{root or ''}/sys", proc=f"{root or ''}/proc"
            )
            if found is not None:
                pools.append(found)
    return DetectedResources(tuple(pools), numa)


@frozen
class NodeResources:
    descriptor: ResourceDescriptor  # pools sorted by name, with the coupling resolved
    numa_of_group: tuple[int, ...]  # NUMA node of each CPU group; () when not detected


def node_resources(options: NodeOptions) -> NodeResources:
    """Every pool of the node (explicit ones win; only missing ones are detected) and the
    coupling between them, checked as HQ checks them at worker start."""
    explicit: dict[str, ResourcePool] = {p.name: p for p in options.resources}
    if options.cpus is not None:
        explicit["cpus"] = options.cpus
    detected = detect_resources(
        [name for name in DETECTABLE if name in options.detect and name not in explicit],
        options.env,
        root=options.system_root,
        no_hyper_threading=options.no_hyper_threading,
    )
    pools = [*explicit.values(), *detected.pools]
    return NodeResources(build_descriptor(pools, options.coupling), detected.numa_of_group)


def cpu_ids(labels: Sequence[str]) -> list[int] | None:
    """CPU labels as ids if all are integers, else None (then tasks are not pinned)."""
    try:
        return [int(label) for label in labels]
    except ValueError:
        return None
