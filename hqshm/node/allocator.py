"""The node's resource allocator: picks concrete CPU ids, GPU ids and resource indices.

It only answers and remembers: ``try_allocate`` returns an ``Allocation`` or None ("not now" is
an answer, not an error), ``release`` gives one back, and ``check`` verifies the invariants.
Amounts are fixed point (``FRACTIONS`` per unit). Indexed pools track the free fraction of every
item, so fractional requests share items; whole units always take fully free items.

A decision works on per-group counts (fully free items, partly used items), kept up to date by
every take and give, so its cost grows with the number of groups, not of items: a 128-CPU node
is 8 NUMA groups, not 128 CPUs. The items themselves come from a per-group heap (lowest index
first) only once the groups are chosen.

Policies on grouped pools (spec/resources.md §3):

- ``compact`` uses the fewest groups possible now and takes evenly from them; ``tight`` uses as
  few and fills the fullest first; ``scatter`` spreads over as many groups as it can.
- The strict forms (``compact!``, ``tight!``) wait until they can use as few groups as an idle
  node would give them; a request no single group can hold therefore runs as soon as that many
  groups are free.
- A fractional part is one item with enough free capacity: the tightest fit inside the chosen
  groups (a partly used item before a whole one); its group counts among the groups used, and
  compact counts its item when it evens out the shares (3.5 on two groups of 3: 2 + 2).
- Among sets of groups of the same count, one where the fraction fits a partly used item wins,
  then the fullest groups (most free items, then lowest index), which spreads small tasks over
  NUMA nodes. Items within a group go lowest index first.

Coupling (§3.3): when a variant asks for several coupled pools with compact or tight policies
(strict or not), the groups of each keep their policy's count, and among those counts the
combination with the highest total weight wins (the sum of the weights of every coupled pair of
groups used); a strict form also waits until the weight is as high as an idle node could give.
``scatter`` and ``all`` ignore coupling. The search is exhaustive up to ``MAX_COMBINATIONS``
combinations and a local optimum beyond, so that a decision stays bounded.

One module of about 600 lines because it is one mechanism: the per-group counts, the policies
that read them and the coupling search share their invariants (``check``), and the property
tests (tests/unit/test_allocator_properties.py) hold the whole of it against brute force.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

from hqshm.cluster.frozen import frozen
from hqshm.cluster.resources import (
    FRACTIONS,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
    ResourcePool,
)

STRICT = (Policy.FORCE_COMPACT, Policy.FORCE_TIGHT)
# Above these sizes the coupling search stops being exhaustive: group sets per entry
# (``_candidate_sets``) and combinations of sets (``_best_combination``).
MAX_SETS = 512
MAX_COMBINATIONS = 1024


class Taken(NamedTuple):
    """What one task holds of one pool: (item index, amount) pairs, or an amount of a sum.

    Whole items come first in index order, the fractional item (if any) last. Named tuples,
    like ``Allocation``: the node keys a cache by each task's allocation, and a tuple hashes
    and compares in C (a frozen record did both in Python: 6% of the node's time a task).
    """

    name: str
    items: tuple[tuple[int, int], ...] = ()
    amount: int = 0  # sum pools only


class Allocation(NamedTuple):
    variant: int
    taken: tuple[Taken, ...]


@frozen
class _Plan:
    """Which groups give how many whole items, and where the fraction comes from.

    ``part_item`` is a partly used item, or -1 for "the lowest fully free item of
    ``part_group`` that the whole items leave".
    """

    shares: tuple[tuple[int, int], ...]
    fraction: int = 0
    part_item: int = -1
    part_group: int = -1
    everything: bool = False  # ``all``: every item of an idle pool, no heap search


class _IndexedPool:
    """The free state of one indexed pool, item by item and summed per group."""

    def __init__(self, pool: ResourcePool) -> None:
        self.pool = pool
        self.labels: list[str] = list(pool.labels)
        self.groups: list[range] = []
        start = 0
        for group in pool.label_groups:
            self.groups.append(range(start, start + len(group)))
            start += len(group)
        self.sizes: list[int] = [len(g) for g in self.groups]
        self.group_of: list[int] = [g for g, items in enumerate(self.groups) for _ in items]
        self.free: list[int] = [FRACTIONS] * len(self.labels)
        # Per group: how many items are fully free, and the partly used ones with what is left.
        self.whole: list[int] = list(self.sizes)
        self.partial: list[dict[int, int]] = [{} for _ in self.groups]
        self.n_whole = len(self.labels)
        # Per group: a min-heap holding every fully free item. An item taken in part stays in
        # it as a stale entry (skipped when popped, valid again once it is whole); ``queued``
        # says whether an item has an entry, so no item is ever in a heap twice.
        self.heaps: list[list[int]] = [list(g) for g in self.groups]
        self.queued = bytearray(b"\x01" * len(self.labels))
        self._idle_minimum: dict[int, int] = {}

    # --- the counts a decision reads ------------------------------------------------------

    def best_part(self, group: int, fraction: int) -> int:
        """The tightest partly used item of ``group`` with ``fraction`` free, or -1."""
        best, best_free = -1, FRACTIONS
        for item, free in self.partial[group].items():
            if fraction <= free < best_free or (free == best_free and item < best):
                best, best_free = item, free
        return best

    def fits_part(self, group: int, fraction: int) -> bool:
        return any(free >= fraction for free in self.partial[group].values())

    def idle_minimum(self, amount: int) -> int:
        """Fewest groups an idle node needs for ``amount`` (the strict policies' target)."""
        minimum = self._idle_minimum.get(amount)
        if minimum is None:
            items = -(-amount // FRACTIONS)
            total = minimum = 0
            for size in sorted(self.sizes, reverse=True):
                if total >= items:
                    break
                total += size
                minimum += 1
            self._idle_minimum[amount] = minimum = max(minimum, 1)
        return minimum

    # --- taking and giving ----------------------------------------------------------------

    def pop_whole(self, group: int, count: int) -> list[int]:
        """The ``count`` lowest fully free items of ``group`` (the caller takes them)."""
        heap, free, queued = self.heaps[group], self.free, self.queued
        items: list[int] = []
        while len(items) < count:
            item = heapq.heappop(heap)
            queued[item] = 0
            if free[item] == FRACTIONS:
                items.append(item)
        return items

    def take(self, item: int, amount: int) -> None:
        group = self.group_of[item]
        left = self.free[item]
        if left == FRACTIONS:
            self.whole[group] -= 1
            self.n_whole -= 1
        left -= amount
        self.free[item] = left
        if left:
            self.partial[group][item] = left
        else:
            self.partial[group].pop(item, None)

    def give(self, item: int, amount: int) -> None:
        group = self.group_of[item]
        left = self.free[item] + amount
        self.free[item] = left
        if left == FRACTIONS:
            self.partial[group].pop(item, None)
            self.whole[group] += 1
            self.n_whole += 1
            if not self.queued[item]:
                self.queued[item] = 1
                heapq.heappush(self.heaps[group], item)
        else:
            self.partial[group][item] = left

    def is_idle(self) -> bool:
        return self.n_whole == len(self.free)

    def check(self, name: str) -> None:
        assert all(0 <= f <= FRACTIONS for f in self.free), name
        for g, items in enumerate(self.groups):
            whole = [i for i in items if self.free[i] == FRACTIONS]
            assert self.whole[g] == len(whole), (name, g)
            assert self.partial[g] == {
                i: self.free[i] for i in items if 0 < self.free[i] < FRACTIONS
            }, (name, g)
            in_heap = self.heaps[g]
            assert len(in_heap) == len(set(in_heap)), (name, g)
            assert set(in_heap) == {i for i in items if self.queued[i]}, (name, g)
            assert set(whole) <= set(in_heap), (name, g)
        assert self.n_whole == sum(self.whole), name


# --- choosing groups: pure functions of the counts ------------------------------------------


def _by_fullness(whole: Sequence[int]) -> list[int]:
    return sorted(range(len(whole)), key=lambda g: (-whole[g], g))


def _fits(
    groups: Sequence[int], need: int, fraction: int, whole: Sequence[int], pool: _IndexedPool | None
) -> bool:
    """Can these groups hold ``need`` whole items plus ``fraction`` of one more item?"""
    total = sum(map(whole.__getitem__, groups))
    if total < need:
        return False
    if not fraction or total > need:
        return True
    return pool is not None and any(pool.fits_part(g, fraction) for g in groups)


def _fewest_groups(
    need: int, fraction: int, whole: Sequence[int], pool: _IndexedPool | None
) -> list[int] | None:
    """The smallest set of groups that holds the request now (fullest groups first).

    ``pool`` gives the partly used items; None means an idle pool (it has none).
    """
    order = _by_fullness(whole)
    if need == 0:
        if pool is not None:
            best = min(
                ((free, g) for g in order for free in pool.partial[g].values() if free >= fraction),
                default=None,
            )
            if best is not None:
                return [best[1]]
        return [order[0]] if whole[order[0]] else None
    total = k = 0
    for g in order:
        total += whole[g]
        k += 1
        if total >= need:
            break
    if total < need:
        return None
    chosen = order[:k]
    if not fraction:
        return chosen
    if pool is None:
        if total > need:
            return chosen
        return chosen + [order[k]] if k < len(order) and whole[order[k]] else None
    if any(pool.fits_part(g, fraction) for g in chosen):
        return chosen
    # Rather than break a whole item for the fraction, swap the emptiest chosen group for one
    # with a partly used item that fits, if the whole items still fit.
    rest = order[k:]
    short = total - whole[chosen[-1]]
    for g in rest:
        if short + whole[g] >= need and pool.fits_part(g, fraction):
            return chosen[:-1] + [g]
    if total == need:
        # The fraction needs an item the whole ones leave: one more group.
        for g in rest:
            if pool.fits_part(g, fraction):
                return chosen + [g]
        for g in rest:
            if whole[g]:
                return chosen + [g]
        return None
    return chosen


def _even(groups: Sequence[int], need: int, whole: Sequence[int]) -> dict[int, int]:
    """Water-fill ``need`` items over ``groups``: as even as their free counts allow; the
    remainder goes to the fuller groups (lower index on ties)."""
    shares: dict[int, int] = {}
    ascending = sorted(groups, key=lambda g: (whole[g], -g))
    left = need
    for index, g in enumerate(ascending):
        share = min(whole[g], left // (len(ascending) - index))
        shares[g] = share
        left -= share
    return shares


def _tight(groups: Sequence[int], need: int, whole: Sequence[int]) -> dict[int, int]:
    """Fill the fullest group first, then the next."""
    shares: dict[int, int] = {}
    left = need
    for g in sorted(groups, key=lambda g: (-whole[g], g)):
        shares[g] = min(whole[g], left)
        left -= shares[g]
    return shares


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
        # Coupling weights by pair of pool names, both ways: weights[(a, b)][ga][gb].
        names = sorted(pool.name for pool in descriptor.pools)
        self.weights: dict[tuple[str, str], list[list[int]]] = {}
        for c in descriptor.coupling:
            a, b = names[c.resource1_idx], names[c.resource2_idx]
            for (x, gx), (y, gy) in (
                ((a, c.group1_idx), (b, c.group2_idx)),
                ((b, c.group2_idx), (a, c.group1_idx)),
            ):
                if (x, y) not in self.weights:
                    rows = len(self.indexed[x].groups)
                    cols = len(self.indexed[y].groups)
                    self.weights[(x, y)] = [[0] * cols for _ in range(rows)]
                self.weights[(x, y)][gx][gy] = c.weight
        self.coupled = {name for pair in self.weights for name in pair}
        self._idle_weight: dict[tuple[ResourceEntry, ...], int] = {}

    def labels(self, name: str, taken: Taken) -> list[str]:
        """Labels of the items taken, fractional (shared) item last, as HQ exports them."""
        pool = self.indexed[name]
        whole = [pool.labels[i] for i, amount in taken.items if amount == FRACTIONS]
        part = [pool.labels[i] for i, amount in taken.items if amount != FRACTIONS]
        return whole + part

    def try_allocate(self, variants: Sequence[RequestVariant]) -> Allocation | None:
        for index, variant in enumerate(variants):
            if variant.n_nodes:
                continue
            taken = self._try_variant(variant)
            if taken is not None:
                return Allocation(index, taken)
        return None

    def release(self, allocation: Allocation) -> None:
        for taken in allocation.taken:
            if taken.name in self.sums:
                self.sums[taken.name] += taken.amount
                continue
            pool = self.indexed[taken.name]
            for item, amount in taken.items:
                pool.give(item, amount)

    def is_idle(self) -> bool:
        return all(pool.is_idle() for pool in self.indexed.values()) and all(
            self.sums[n] == self.sum_size[n] for n in self.sums
        )

    def check(self) -> None:
        for name, pool in self.indexed.items():
            pool.check(name)
        for name, free in self.sums.items():
            assert 0 <= free <= self.sum_size[name], name

    # --- planning a variant: nothing changes until every entry has a plan -------------------

    def _try_variant(self, variant: RequestVariant) -> tuple[Taken, ...] | None:
        plans: dict[str, _Plan | int] = {}
        coupled: list[ResourceEntry] = []
        for entry in variant.entries:
            if entry.name in self.sums:
                free = self.sums[entry.name]
                amount = self.sum_size[entry.name] if entry.all else entry.amount
                if amount > free or (entry.all and free != amount):
                    return None
                plans[entry.name] = amount
                continue
            pool = self.indexed.get(entry.name)
            if pool is None:
                return None
            if entry.all:
                if not pool.is_idle():
                    return None
                plans[entry.name] = _Plan((), everything=True)
            elif entry.name in self.coupled and entry.policy != Policy.SCATTER:
                coupled.append(entry)
            else:
                plan = self._plan(pool, entry)
                if plan is None:
                    return None
                plans[entry.name] = plan
        if len(coupled) == 1:
            plan = self._plan(self.indexed[coupled[0].name], coupled[0])
            if plan is None:
                return None
            plans[coupled[0].name] = plan
        elif coupled:
            chosen = self._couple(coupled)
            if chosen is None:
                return None
            for entry, groups in zip(coupled, chosen, strict=True):
                coupled_plan = self._plan_on(self.indexed[entry.name], entry, groups)
                if coupled_plan is None:
                    return None
                plans[entry.name] = coupled_plan
        return tuple(self._take(entry.name, plans[entry.name]) for entry in variant.entries)

    def _plan(self, pool: _IndexedPool, entry: ResourceEntry) -> _Plan | None:
        need, fraction = divmod(entry.amount, FRACTIONS)
        whole = pool.whole
        if pool.n_whole < need:
            return None
        if entry.policy == Policy.SCATTER:
            return self._scatter(pool, need, fraction)
        groups = _fewest_groups(need, fraction, whole, pool)
        if groups is None:
            return None
        if entry.policy in STRICT and len(groups) > pool.idle_minimum(entry.amount):
            return None
        return self._plan_on(pool, entry, groups)

    def _plan_on(self, pool: _IndexedPool, entry: ResourceEntry, groups: Sequence[int]
                 ) -> _Plan | None:
        """The items of a compact or tight request inside groups known to hold its whole items
        (None: no item of them has room for its fraction)."""
        need, fraction = divmod(entry.amount, FRACTIONS)
        tight = entry.policy in (Policy.TIGHT, Policy.FORCE_TIGHT)
        shares = (_tight if tight else _even)(groups, need, pool.whole)
        return self._with_fraction(pool, shares, fraction, groups)

    def _scatter(self, pool: _IndexedPool, need: int, fraction: int) -> _Plan | None:
        whole = pool.whole
        shares = _even([g for g in range(len(whole)) if whole[g]], need, whole)
        used = [g for g, n in shares.items() if n]
        plan = self._with_fraction(pool, shares, fraction, used)
        if plan is None and fraction:
            plan = self._with_fraction(pool, shares, fraction, range(len(whole)))
        return plan

    @staticmethod
    def _with_fraction(
        pool: _IndexedPool, shares: dict[int, int], fraction: int, groups: Sequence[int]
    ) -> _Plan | None:
        """Place the fraction in ``groups``: the tightest partly used item, else a fully free
        item of the group with the most left over."""
        plan_shares = tuple((g, n) for g, n in shares.items() if n)
        if not fraction:
            return _Plan(plan_shares)
        best, best_free = -1, FRACTIONS
        for g in groups:
            item = pool.best_part(g, fraction)
            if item >= 0 and (pool.free[item], item) < (best_free, best):
                best, best_free = item, pool.free[item]
        if best >= 0:
            return _Plan(plan_shares, fraction, best, pool.group_of[best])
        spare = max(groups, key=lambda g: pool.whole[g] - shares.get(g, 0), default=None)
        if spare is None or pool.whole[spare] - shares.get(spare, 0) <= 0:
            return None
        return _Plan(plan_shares, fraction, -1, spare)

    def _take(self, name: str, plan: _Plan | int) -> Taken:
        if isinstance(plan, int):
            self.sums[name] -= plan
            return Taken(name, amount=plan)
        pool = self.indexed[name]
        items: list[int] = []
        for group, count in plan.shares:
            items += pool.pop_whole(group, count)
        if plan.everything:
            items = list(range(len(pool.free)))  # their heap entries stay, valid once given
        items.sort()
        for item in items:
            pool.take(item, FRACTIONS)
        taken = [(item, FRACTIONS) for item in items]
        if plan.fraction:
            item = plan.part_item
            if item < 0:
                item = pool.pop_whole(plan.part_group, 1)[0]
            pool.take(item, plan.fraction)
            taken.append((item, plan.fraction))
        return Taken(name, tuple(taken))

    # --- coupling -------------------------------------------------------------------------

    def _couple(self, entries: list[ResourceEntry]) -> list[list[int]] | None:
        """Groups for coupled compact/tight entries: each keeps its fewest-groups count, and
        the combination of highest total weight wins (the fullest groups on ties)."""
        candidates: list[list[list[int]]] = []
        for entry in entries:
            pool = self.indexed[entry.name]
            sets = self._candidate_sets(pool, entry, pool.whole, pool)
            if not sets:
                return None
            if entry.policy in STRICT and len(sets[0]) > pool.idle_minimum(entry.amount):
                return None
            candidates.append(sets)
        best, weight = self._best_combination(entries, candidates)
        if any(entry.policy in STRICT for entry in entries):
            key = tuple(entries)
            if key not in self._idle_weight:
                idle = [
                    self._candidate_sets(self.indexed[e.name], e, self.indexed[e.name].sizes, None)
                    for e in entries
                ]
                self._idle_weight[key] = self._best_combination(entries, idle)[1]
            if weight < self._idle_weight[key]:
                return None
        return best

    @staticmethod
    def _candidate_sets(
        pool: _IndexedPool, entry: ResourceEntry, whole: Sequence[int], partial: _IndexedPool | None
    ) -> list[list[int]]:
        """Every group set of the fewest-groups size that holds the entry, the default first."""
        need, fraction = divmod(entry.amount, FRACTIONS)
        default = _fewest_groups(need, fraction, whole, partial)
        if default is None:
            return []
        sets = [default]
        n_groups = len(whole)
        if len(default) == 1:
            for g in _by_fullness(whole):
                fits = whole[g] > need or (
                    whole[g] == need
                    and (not fraction or (partial is not None and partial.fits_part(g, fraction)))
                )
                if fits and g != default[0]:
                    sets.append([g])
            return sets
        if math.comb(n_groups, len(default)) > MAX_SETS:
            return sets
        first = sorted(default)
        for groups in itertools.combinations(_by_fullness(whole), len(default)):
            if _fits(groups, need, fraction, whole, partial) and sorted(groups) != first:
                sets.append(list(groups))
        return sets

    def _best_combination(
        self, entries: list[ResourceEntry], candidates: list[list[list[int]]]
    ) -> tuple[list[list[int]], int]:
        """The heaviest combination of candidate sets (the earliest on ties): exhaustive while
        there are at most ``MAX_COMBINATIONS``, else improving one entry at a time from the
        defaults until nothing improves (a local optimum, to bound the decision time)."""
        names = [entry.name for entry in entries]
        links = [
            (a, b, matrix)
            for a, b in itertools.combinations(range(len(names)), 2)
            if (matrix := self.weights.get((names[a], names[b]))) is not None
        ]

        def weight(combination: Sequence[Sequence[int]]) -> int:
            return sum(
                matrix[ga][gb]
                for a, b, matrix in links
                for ga in combination[a]
                for gb in combination[b]
            )

        if not links:
            return [c[0] for c in candidates], 0
        if math.prod(len(c) for c in candidates) <= MAX_COMBINATIONS:
            if len(names) == 2:
                return self._best_pair(links[0][2], candidates[0], candidates[1])
            best = max(itertools.product(*candidates), key=weight)  # the first of the heaviest
            return list(best), weight(best)
        chosen = [c[0] for c in candidates]
        best_weight = weight(chosen)
        improved = True
        while improved:
            improved = False
            for index, sets in enumerate(candidates):
                for groups in sets:
                    trial = chosen[:index] + [groups] + chosen[index + 1 :]
                    if (trial_weight := weight(trial)) > best_weight:
                        chosen, best_weight, improved = trial, trial_weight, True
        return chosen, best_weight

    @staticmethod
    def _best_pair(
        matrix: list[list[int]], first: list[list[int]], second: list[list[int]]
    ) -> tuple[list[list[int]], int]:
        """Two coupled entries (the usual CPUs and GPUs): the same search, with the weights
        of each first set summed per group of the second once."""
        best, best_weight = [first[0], second[0]], -1
        size = len(second[0])
        # What each group of the first entry can add at most: skips hopeless sets unsummed.
        top = [sum(sorted(row)[-size:]) for row in matrix]
        for groups in first:
            if sum(top[g] for g in groups) <= best_weight:
                continue
            if len(groups) == 1:
                row = matrix[groups[0]]
            else:
                row = [sum(column) for column in zip(*(matrix[g] for g in groups), strict=True)]
            bound = max(row) if size == 1 else sum(sorted(row)[-size:])
            if bound <= best_weight:
                continue  # no second set can beat the best so far
            for other in second:
                weight = row[other[0]] if size == 1 else sum(row[g] for g in other)
                if weight > best_weight:
                    best, best_weight = [groups, other], weight
                    if weight == bound:
                        break
        return best, best_weight
