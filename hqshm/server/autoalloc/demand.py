"""How many workers of a queue's shape the waiting tasks could use (pure, reads the core).

Counts only ready tasks (a group's ``pending``: neither blocked on per-task prerequisites nor
held by an `--after` barrier), whose request has a variant that fits the queue's worker
resources and whose time request is no longer than the workers live. The rest is counted by
why it does not count, so that the planner can say why it submits nothing. Cost: one pass over
the core's groups; per-variant fits are cached per request.
"""

from __future__ import annotations

from hqshm.cluster.core import Core
from hqshm.cluster.frozen import field, mutable
from hqshm.cluster.resources import RequestVariant, ResourceDescriptor, ResourceRequest


@mutable
class Demand:
    workers: float = 0.0  # workers (fractions add up across groups) the fitting tasks fill
    fitting: int = 0  # ready tasks this queue's workers could run
    multi_node: list[int] = field(default_factory=list)  # node counts of fitting multi-node tasks
    unfit: int = 0  # ready tasks no worker of this queue could run (resources)
    too_long: int = 0  # ready tasks whose time request exceeds the workers' lifetime
    blocked: int = 0  # tasks waiting on dependencies


MAX_MULTI_NODE = 10_000  # multi-node tasks looked at per tick


def tasks_per_worker(variant: RequestVariant, totals: dict[str, int]) -> int:
    """How many tasks of this variant one worker runs at once (0: none)."""
    per = None
    for entry in variant.entries:
        total = totals.get(entry.name, 0)
        if entry.all:
            count = 1 if total > 0 else 0
        elif entry.amount <= 0:
            continue
        else:
            count = total // entry.amount
        per = count if per is None else min(per, count)
    return 1 if per is None else per


def _fit(request: ResourceRequest, totals: dict[str, int] | None, lifetime: float,
         max_nodes: int) -> tuple[str, int]:
    """("fit", tasks per worker, or -nodes for multi-node) | ("unfit"|"too_long", 0)."""
    reason = "unfit"
    for variant in request.variants:
        if variant.min_time > lifetime:
            reason = "too_long" if reason == "unfit" else reason
            continue
        if variant.n_nodes:
            if variant.n_nodes <= max_nodes:
                return "fit", -variant.n_nodes
            continue
        if totals is None:  # probing: any single-node task may fit
            return "fit", 1
        per = tasks_per_worker(variant, totals)
        if per > 0:
            return "fit", per
    return reason, 0


def queue_demand(core: Core, resources: ResourceDescriptor | None, lifetime: float,
                 max_nodes: int) -> Demand:
    demand = Demand()
    totals = resources.totals() if resources is not None else None
    cache: dict[str, tuple[str, int]] = {}
    blocked_gids: dict[int, int] = {}
    if core.blocked_group:
        for gid in core.blocked_group.values():
            blocked_gids[gid] = blocked_gids.get(gid, 0) + 1
    for group in core.groups.values():
        if group.barrier:
            demand.blocked += group.active
            continue
        demand.blocked += blocked_gids.get(group.gid, 0)
        pending = group.pending
        if pending <= 0:
            continue
        key = group.placement_key[1]
        fit = cache.get(key)
        if fit is None:
            fit = cache[key] = _fit(group.request, totals, lifetime, max_nodes)
        verdict, per = fit
        if verdict == "unfit":
            demand.unfit += pending
        elif verdict == "too_long":
            demand.too_long += pending
        elif per < 0:
            demand.fitting += pending
            room = MAX_MULTI_NODE - len(demand.multi_node)
            demand.multi_node.extend([-per] * min(pending, max(room, 0)))
        else:
            demand.fitting += pending
            demand.workers += pending / per
    return demand
