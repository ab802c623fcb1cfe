"""Resources as the cluster sees them: worker pools, task requests, and whether one fits the other.

Amounts are integers in fixed point, ``FRACTIONS`` per unit (HQ's 1/10000), never floats, so
that fractional requests add up exactly. Pools keep their kind (list, range, groups, sum) because
users see it; the server only needs totals to decide where a task can go, while the node's
allocator (in hqshm) picks concrete indices.
"""

from __future__ import annotations

import enum

from .frozen import field, frozen

FRACTIONS = 10_000


def format_amount(amount: int) -> str:
    """A fixed-point amount as users write it: `2`, `0.5`, `105.1` (also weights)."""
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), FRACTIONS)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:04d}".rstrip("0")


class Policy(enum.IntEnum):
    """Allocation policy of a request on grouped pools (spec/resources.md §3)."""

    COMPACT = 0
    FORCE_COMPACT = 1
    TIGHT = 2
    FORCE_TIGHT = 3
    SCATTER = 4


class PoolKind(enum.IntEnum):
    LIST = 0
    RANGE = 1
    GROUPS = 2
    SUM = 3


@frozen
class ResourcePool:
    """One named pool of a worker.

    ``groups`` holds the labels of list and group pools (one group for a list). A range keeps
    only ``start``/``end`` (``groups`` empty), so ``range(1-1000000)`` costs nothing until a node
    allocates from it. ``size`` is the amount of a sum pool in fixed point.
    """

    name: str
    kind: int
    groups: tuple[tuple[str, ...], ...] = ()
    start: int = 0
    end: int = 0
    size: int = 0

    @property
    def count(self) -> int:
        """Number of whole units (items) in the pool."""
        if self.kind == PoolKind.SUM:
            return self.size // FRACTIONS
        if self.kind == PoolKind.RANGE:
            return self.end - self.start + 1
        return sum(len(g) for g in self.groups)

    @property
    def total(self) -> int:
        """Capacity in fixed point."""
        if self.kind == PoolKind.SUM:
            return self.size
        return self.count * FRACTIONS

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for group in self.label_groups for label in group)

    @property
    def label_groups(self) -> tuple[tuple[str, ...], ...]:
        """Labels by group; a range expands here, so only nodes (which allocate) call this."""
        if self.kind == PoolKind.RANGE:
            return (tuple(str(i) for i in range(self.start, self.end + 1)),)
        return self.groups


@frozen
class CouplingWeight:
    resource1_idx: int
    group1_idx: int
    resource2_idx: int
    group2_idx: int
    weight: int = 256


@frozen
class ResourceDescriptor:
    """All pools of a worker, sorted by name (HQ sorts them at worker start)."""

    pools: tuple[ResourcePool, ...]
    coupling: tuple[CouplingWeight, ...] = ()

    def pool(self, name: str) -> ResourcePool | None:
        for pool in self.pools:
            if pool.name == name:
                return pool
        return None

    def totals(self) -> dict[str, int]:
        return {pool.name: pool.total for pool in self.pools}


@frozen
class ResourceEntry:
    """One requested resource: an amount with a policy, or everything (``all``)."""

    name: str
    amount: int
    policy: int = Policy.COMPACT
    all: bool = False


@frozen
class RequestVariant:
    """One alternative of a request. ``n_nodes > 0`` means a multi-node task."""

    entries: tuple[ResourceEntry, ...] = ()
    n_nodes: int = 0
    min_time: float = 0.0
    weight: int = FRACTIONS

    def amount_on(self, totals: dict[str, int]) -> dict[str, int] | None:
        """What this variant takes from a worker with these totals; None if it never fits."""
        taken: dict[str, int] = {}
        for entry in self.entries:
            total = totals.get(entry.name, 0)
            if entry.all:
                if total <= 0:
                    return None
                taken[entry.name] = total
            elif entry.amount > total:
                return None
            else:
                taken[entry.name] = entry.amount
        return taken


@frozen
class ResourceRequest:
    """A task's request: one or more variants, earlier ones preferred."""

    variants: tuple[RequestVariant, ...] = field(default_factory=lambda: (RequestVariant(),))

    @property
    def is_multi_node(self) -> bool:
        return any(v.n_nodes > 0 for v in self.variants)


def cpus_request(units: int = 1, policy: Policy = Policy.COMPACT) -> ResourceRequest:
    """The default CLI request, ``cpus=1 compact``."""
    return ResourceRequest(
        (RequestVariant((ResourceEntry("cpus", units * FRACTIONS, int(policy)),)),)
    )
