"""The node's resource allocator: picks concrete CPU ids, GPU ids and resource indices.

It only answers and remembers: ``try_allocate`` returns an ``Allocation`` or None ("not now" is
an answer, not an error), ``release`` gives one back, and ``check`` verifies the invariants.
Amounts are fixed point (``FRACTIONS`` per unit). Indexed pools track the free fraction of every
item, so fractional requests share items; whole units always take fully free items.

Policies on grouped pools (spec/resources.md §3): ``compact`` uses the fewest groups possible
now and takes evenly from them, ``tight`` uses the fewest groups and fills the fullest first,
``scatter`` spreads over as many groups as it can, and the strict forms (``compact!``,
``tight!``) wait until they can use as few groups as an idle node could give them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.resources import (
    FRACTIONS,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
    ResourcePool,
)


@dataclass(frozen=True, slots=True)
class Taken:
    """What one task holds of one pool: (item index, amount) pairs, or an amount of a sum."""

    name: str
    items: tuple[tuple[int, int], ...] = ()
    amount: int = 0  # sum pools only


@dataclass(frozen=True, slots=True)
class Allocation:
    variant: int
    taken: tuple[Taken, ...]

    def of(self, name: str) -> Taken | None:
        for taken in self.taken:
            if taken.name == name:
                return taken
        return None


class _IndexedPool:
    def __init__(self, pool: ResourcePool) -> None:
        self.pool = pool
        self.labels: list[str] = list(pool.labels)
        self.groups: list[list[int]] = []
        index = 0
        for group in pool.label_groups:
            self.groups.append(list(range(index, index + len(group))))
            index += len(group)
        self.group_of: list[int] = [g for g, items in enumerate(self.groups) for _ in items]
        self.free: list[int] = [FRACTIONS] * len(self.labels)
        self.min_groups_idle: dict[int, int] = {}

    def whole_free(self, group: int) -> list[int]:
        return [i for i in self.groups[group] if self.free[i] == FRACTIONS]

    def minimal_groups(self, whole: int) -> int:
        """Fewest groups an idle node needs for ``whole`` items (the strict policies' target)."""
        if whole not in self.min_groups_idle:
            sizes = sorted((len(g) for g in self.groups), reverse=True)
            total, k = 0, 0
            for size in sizes:
                if total >= whole:
                    break
                total += size
                k += 1
            self.min_groups_idle[whole] = max(k, 1)
        return self.min_groups_idle[whole]

    def choose_whole(self, whole: int, policy: int) -> list[int] | None:
        if whole == 0:
            return []
        free_by_group = [(g, self.whole_free(g)) for g in range(len(self.groups))]
        if sum(len(f) for _, f in free_by_group) < whole:
            return None
        if policy == Policy.SCATTER:
            return _scatter(free_by_group, whole)
        # Fewest groups: take the groups with most free items first (lower index on ties).
        ranked = sorted(free_by_group, key=lambda gf: (-len(gf[1]), gf[0]))
        chosen, count = [], 0
        for group, items in ranked:
            if count >= whole:
                break
            chosen.append((group, items))
            count += len(items)
        if policy in (Policy.FORCE_COMPACT, Policy.FORCE_TIGHT) and \
                len(chosen) > self.minimal_groups(whole):
            return None
        if policy in (Policy.TIGHT, Policy.FORCE_TIGHT):
            picked: list[int] = []
            for _, items in chosen:
                picked.extend(items[: whole - len(picked)])
            return picked
        return _even(chosen, whole)

    def choose_fraction(self, fraction: int, exclude: set[int], prefer_groups: set[int]
                        ) -> int | None:
        """An item with at least ``fraction`` free: the tightest fit, in preferred groups first."""
        best = None
        for i, free in enumerate(self.free):
            if i in exclude or free < fraction:
                continue
            rank = (self.group_of[i] not in prefer_groups, free, i)
            if best is None or rank < best[0]:
                best = (rank, i)
        return None if best is None else best[1]


def _even(chosen: list[tuple[int, list[int]]], whole: int) -> list[int]:
    """Take ``whole`` items as evenly as the chosen groups allow."""
    share = {g: 0 for g, _ in chosen}
    capacity = {g: len(items) for g, items in chosen}
    remaining = whole
    while remaining:
        open_groups = [g for g in share if share[g] < capacity[g]]
        per = max(1, remaining // len(open_groups))
        for g in open_groups:
            add = min(per, capacity[g] - share[g], remaining)
            share[g] += add
            remaining -= add
            if not remaining:
                break
    picked: list[int] = []
    for g, items in chosen:
        picked.extend(items[: share[g]])
    return picked


def _scatter(free_by_group: Sequence[tuple[int, list[int]]], whole: int) -> list[int]:
    """Round-robin over the groups, one item from each in turn."""
    queues = [list(items) for _, items in free_by_group if items]
    picked: list[int] = []
    while len(picked) < whole:
        for queue in queues:
            if queue and len(picked) < whole:
                picked.append(queue.pop(0))
    return picked


class Allocator:
    def __init__(self, descriptor: ResourceDescriptor) -> None:
        self.indexed: dict[str, _IndexedPool] = {}
        self.sums: dict[str, int] = {}
        self.sum_size: dict[str, int] = {}
        for pool in descriptor.pools:
            if pool.kind == PoolKind.SUM:
                self.sums[pool.name] = pool.size
                self.sum_size[pool.name] = pool.size
            else:
                self.indexed[pool.name] = _IndexedPool(pool)

    def labels(self, name: str, taken: Taken) -> list[str]:
        """Labels of the items taken, fractional (shared) item last, as HQ exports them."""
        pool = self.indexed[name]
        whole = [pool.labels[i] for i, amount in taken.items if amount == FRACTIONS]
        part = [pool.labels[i] for i, amount in taken.items if amount != FRACTIONS]
        return whole + part

    def group_of_items(self, name: str, taken: Taken) -> set[int]:
        pool = self.indexed[name]
        return {pool.group_of[i] for i, _ in taken.items}

    def try_allocate(self, variants: Sequence[RequestVariant]) -> Allocation | None:
        for index, variant in enumerate(variants):
            if variant.n_nodes:
                continue
            taken = self._try_variant(variant)
            if taken is not None:
                return Allocation(index, taken)
        return None

    def _try_variant(self, variant: RequestVariant) -> tuple[Taken, ...] | None:
        plan: list[Taken] = []
        for entry in variant.entries:
            taken = self._plan_entry(entry)
            if taken is None:
                return None
            plan.append(taken)
        for taken in plan:
            self._apply(taken, -1)
        return tuple(plan)

    def _plan_entry(self, entry: ResourceEntry) -> Taken | None:
        if entry.name in self.sums:
            free = self.sums[entry.name]
            amount = self.sum_size[entry.name] if entry.all else entry.amount
            if entry.all and free != amount:
                return None
            return Taken(entry.name, amount=amount) if amount <= free else None
        pool = self.indexed.get(entry.name)
        if pool is None:
            return None
        if entry.all:
            if any(f != FRACTIONS for f in pool.free):
                return None
            return Taken(entry.name, tuple((i, FRACTIONS) for i in range(len(pool.free))))
        whole, fraction = divmod(entry.amount, FRACTIONS)
        items = pool.choose_whole(whole, entry.policy)
        if items is None:
            return None
        taken = [(i, FRACTIONS) for i in items]
        if fraction:
            groups = {pool.group_of[i] for i in items}
            part = pool.choose_fraction(fraction, set(items), groups)
            if part is None:
                return None
            taken.append((part, fraction))
        return Taken(entry.name, tuple(taken))

    def _apply(self, taken: Taken, sign: int) -> None:
        if taken.name in self.sums:
            self.sums[taken.name] += sign * taken.amount
            return
        pool = self.indexed[taken.name]
        for i, amount in taken.items:
            pool.free[i] += sign * amount

    def release(self, allocation: Allocation) -> None:
        for taken in allocation.taken:
            self._apply(taken, +1)

    def is_idle(self) -> bool:
        return all(
            all(f == FRACTIONS for f in pool.free) for pool in self.indexed.values()
        ) and all(self.sums[n] == self.sum_size[n] for n in self.sums)

    def check(self) -> None:
        for name, pool in self.indexed.items():
            assert all(0 <= f <= FRACTIONS for f in pool.free), name
        for name, free in self.sums.items():
            assert 0 <= free <= self.sum_size[name], name
