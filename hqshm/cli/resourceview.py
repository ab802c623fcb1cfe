"""Resources as HQ displays them: table cells and JSON (spec/output.md §1.5, §3.4, §4.2, §4.6).

Only the CLI shows resources; the parsers and the values live in hqshm/model/resourcespec.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hqshm.cli import formats
from hqshm.cluster.resources import (
    FRACTIONS,
    Policy,
    PoolKind,
    ResourceDescriptor,
    ResourcePool,
    ResourceRequest,
    format_amount,
)
from hqshm.model.resourcespec import POLICY_WORDS, ends_bare_word, item_count

# Names of HQ's `AllocationRequest` variants in JSON (output.md §4.6).
_POLICY_JSON = {
    Policy.COMPACT: "Compact",
    Policy.FORCE_COMPACT: "ForceCompact",
    Policy.TIGHT: "Tight",
    Policy.FORCE_TIGHT: "ForceTight",
    Policy.SCATTER: "Scatter",
}
_KIND_JSON = {
    PoolKind.LIST: "list",
    PoolKind.RANGE: "range",
    PoolKind.GROUPS: "groups",
    PoolKind.SUM: "sum",
}


def request_lines(request: ResourceRequest) -> str:
    """The `Resources` cell of job and task info: one block per variant."""
    return formats.format_variants(
        [
            formats.format_variant(
                [
                    (entry.name, None if entry.all else entry.amount, POLICY_WORDS[entry.policy])
                    for entry in variant.entries
                ],
                weight=variant.weight,
                n_nodes=variant.n_nodes,
            )
            for variant in request.variants
        ]
    )


def pool_summary(pool: ResourcePool) -> str:
    """Item count, group shape (`4x2`, `1x1 1x2 1x3`), amount, or memory for `mem`."""
    if pool.kind == PoolKind.SUM:
        if pool.name == "mem":
            return formats.format_mem_mib(pool.size / FRACTIONS)
        return format_amount(pool.size)
    if pool.kind == PoolKind.GROUPS:
        return formats.format_group_sizes([len(group) for group in pool.groups])
    return str(item_count(pool))


def descriptor_summary(desc: ResourceDescriptor, multiline: bool) -> str:
    """`cpus 4x2; fairy 10001000` (worker list) or `cpus: 4x2\\nfairy: 10001000` (worker
    info, hwdetect); coupled resources get ` [coupled]`."""
    coupled = {
        desc.pools[index].name
        for weight in desc.coupling
        for index in (weight.resource1_idx, weight.resource2_idx)
        if 0 <= index < len(desc.pools)
    }
    return formats.format_worker_resources(
        [(pool.name, pool_summary(pool)) for pool in desc.pools], multiline, coupled
    )


def pool_full_description(pool: ResourcePool) -> str:
    """hwdetect's "Full Description" of a pool, which `parse_pool` reads back.

    HQ prints labels bare; a label that a bare word cannot hold is quoted here so that the
    text stays a valid definition.
    """
    if pool.kind == PoolKind.SUM:
        return f"sum({format_amount(pool.size)})"
    if pool.kind == PoolKind.RANGE:
        if pool.start == pool.end:
            return f"[{pool.start}]"
        return f"range({pool.start}-{pool.end})"
    if pool.kind == PoolKind.GROUPS:
        return "[" + ",".join(_label_list(group) for group in pool.groups) + "]"
    return _label_list(tuple(label for group in pool.groups for label in group))


def _label_list(labels: Sequence[str]) -> str:
    return "[" + ",".join(_quoted(label) for label in labels) + "]"


def _quoted(label: str) -> str:
    if label and not any(ends_bare_word(char) for char in label):
        return label
    return f'"{label}"'


def descriptor_json(desc: ResourceDescriptor) -> dict[str, Any]:
    """The resource descriptor of `worker list/info/start` and `worker hwdetect` in JSON."""
    return {
        "resources": [_pool_json(pool) for pool in desc.pools],
        "coupling": {
            "weights": [
                {
                    "resource1_idx": weight.resource1_idx,
                    "group1_idx": weight.group1_idx,
                    "resource2_idx": weight.resource2_idx,
                    "group2_idx": weight.group2_idx,
                    "weight": weight.weight,
                }
                for weight in desc.coupling
            ]
        },
    }


def _pool_json(pool: ResourcePool) -> dict[str, Any]:
    item: dict[str, Any] = {"name": pool.name, "kind": _KIND_JSON[PoolKind(pool.kind)]}
    if pool.kind == PoolKind.LIST:
        item["values"] = [label for group in pool.groups for label in group]
    elif pool.kind == PoolKind.RANGE:
        item["start"] = pool.start
        item["end"] = pool.end
    elif pool.kind == PoolKind.GROUPS:
        item["groups"] = [list(group) for group in pool.groups]
    else:
        item["size"] = pool.size
    return item


def request_json(request: ResourceRequest) -> list[dict[str, Any]]:
    """The `resources` list of a task description in `job info` JSON, one item per variant."""
    return [
        {
            "n_nodes": variant.n_nodes,
            "min_time": float(variant.min_time),
            "weight": variant.weight,
            "resources": [
                {
                    "resource": entry.name,
                    "request": "All" if entry.all else {_POLICY_JSON[entry.policy]: entry.amount},
                }
                for entry in variant.entries
            ],
        }
        for variant in request.variants
    ]
