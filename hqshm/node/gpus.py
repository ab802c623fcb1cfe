"""GPU detection for `hq worker start` and `hq worker hwdetect` (spec/resources.md §1.3).

Sources, first found wins. NVIDIA: `CUDA_VISIBLE_DEVICES` (labels as given), else `nvidia-smi`
(indices), else the entries of `/proc/driver/nvidia/gpus` (a range). AMD: `ROCR_VISIBLE_DEVICES`,
else the KFD topology in sysfs (nodes with SIMD units are GPUs; a range), else `rocm-smi` (card
numbers). HQ reads only the variables and /proc; the tools and KFD find GPUs on nodes whose
batch system sets no variable.

A worker must start on a machine whose tools are missing, broken or hung, so each tool runs at
most `TOOL_TIMEOUT` seconds (hqshm/node/tools.py) and any failure only logs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from hqshm.cluster.resources import PoolKind, ResourcePool
from hqshm.node import tools

logger = logging.getLogger(__name__)

NVIDIA = "gpus/nvidia"
AMD = "gpus/amd"
TOOL_TIMEOUT = 2.0
_VARIABLE = {NVIDIA: "CUDA_VISIBLE_DEVICES", AMD: "ROCR_VISIBLE_DEVICES"}


def detect_gpus(
    family: str,
    env: Mapping[str, str],
    sysfs: str = "/sys",
    proc: str = "/proc",
    timeout: float = TOOL_TIMEOUT,
) -> ResourcePool | None:
    """The GPU pool of `family` (`gpus/nvidia` or `gpus/amd`), or None when there is none.

    ``env`` is the worker's environment: its visibility variable and the PATH the tools are
    looked up in. ``sysfs``/``proc`` are where the kernel's trees are (a synthetic root in tests).
    """
    variable = _VARIABLE[family]
    value = env.get(variable)
    if value is not None:
        # Set but empty hides every GPU, as it does for CUDA and ROCm themselves.
        return _listed(family, labels_from_variable(value, variable))
    if family == NVIDIA:
        text = run_tool(
            ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"], env, timeout
        )
        labels = parse_nvidia_smi(text) if text is not None else ()
        return _listed(family, labels) or _counted(
            family, count_entries(f"{proc}/driver/nvidia/gpus")
        )
    pool = _counted(family, kfd_gpu_count(f"{sysfs}/class/kfd/kfd/topology/nodes"))
    if pool is not None:
        return pool
    text = run_tool(["rocm-smi", "--showuniqueid", "--json"], env, timeout)
    return _listed(family, parse_rocm_smi(text) if text is not None else ())


def labels_from_variable(value: str, variable: str) -> tuple[str, ...]:
    """Comma-separated labels (indices or UUIDs); a repeated one is warned about and dropped."""
    labels: list[str] = []
    for label in (item.strip() for item in value.split(",")):
        if not label:
            continue
        if label in labels:
            logger.warning("Duplicate GPU %s in %s is ignored", label, variable)
        else:
            labels.append(label)
    return tuple(labels)


def parse_nvidia_smi(text: str) -> tuple[str, ...]:
    """Indices from `index, uuid` CSV lines; the UUIDs are logged to match devices by hand."""
    labels = []
    for line in text.splitlines():
        index, _, uuid = (part.strip() for part in line.partition(","))
        if not index:
            continue
        if not index.isdigit():
            logger.warning("Unexpected line from nvidia-smi ignored: %r", line)
            continue
        logger.debug("NVIDIA GPU %s is %s", index, uuid)
        labels.append(index)
    return tuple(labels)


def parse_rocm_smi(text: str) -> tuple[str, ...]:
    """Card numbers from `rocm-smi --showuniqueid --json` (`{"card0": {...}, ...}`)."""
    try:
        data = json.loads(text)
    except ValueError:
        logger.warning("rocm-smi printed no JSON; AMD GPUs are not detected from it")
        return ()
    if not isinstance(data, dict):
        return ()
    cards = [key[4:] for key in data if key.startswith("card") and key[4:].isdigit()]
    return tuple(sorted(cards, key=int))


def kfd_gpu_count(nodes_dir: str) -> int:
    """KFD topology nodes with SIMD units (CPU nodes have `simd_count 0`)."""
    try:
        names = os.listdir(nodes_dir)
    except OSError:
        return 0
    return sum(1 for name in names if _simd_count(os.path.join(nodes_dir, name)) > 0)


def _simd_count(node_dir: str) -> int:
    try:
        with open(os.path.join(node_dir, "properties")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "simd_count":
                    return int(value) if value.strip().isdigit() else 0
    except OSError:
        pass
    return 0


def count_entries(directory: str) -> int:
    try:
        return len(os.listdir(directory))
    except OSError:
        return 0


def run_tool(argv: list[str], env: Mapping[str, str], timeout: float) -> str | None:
    """Stdout of a tool found on the worker's PATH, or None (absent, failed or too slow)."""
    try:
        return tools.call(argv, env, timeout)
    except tools.ToolError as exc:
        if exc.missing:
            logger.debug("%s", exc)
        elif exc.timed_out:
            logger.warning("%s; its GPUs are not detected", exc)
        else:
            logger.warning("%s", exc)
        return None


def _listed(family: str, labels: tuple[str, ...]) -> ResourcePool | None:
    return ResourcePool(family, PoolKind.LIST, (labels,)) if labels else None


def _counted(family: str, count: int) -> ResourcePool | None:
    return ResourcePool(family, PoolKind.RANGE, start=0, end=count - 1) if count else None
