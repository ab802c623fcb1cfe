"""Properties of the node's allocator (hypothesis), judged by a brute-force oracle.

Random nodes (list, group and sum pools, fractions, coupled groups), random requests with
variants, and random release orders. After every step: no item is over-committed and no sum is
negative, ``check()`` passes, every allocation honours its policy (fewest groups, strict
minimum, tight filling, even compact, spread scatter, best coupling), and every None is truly
"not now": the oracle finds no fitting variant in the state the allocator answered from, and an
idle node of the same shape runs the request whenever the request can ever run there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from allocator_queries import groups_of_items, taken_of
from hqshm.cluster.resources import (
    FRACTIONS,
    CouplingWeight,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
    ResourcePool,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from hqshm.node.allocator import Allocation, Allocator, Taken

POLICIES = [Policy.COMPACT, Policy.FORCE_COMPACT, Policy.TIGHT, Policy.FORCE_TIGHT, Policy.SCATTER]
STRICT = (Policy.FORCE_COMPACT, Policy.FORCE_TIGHT)


# --- nodes and requests ---------------------------------------------------------------------


def indexed_pool(name: str, sizes: Sequence[int]) -> ResourcePool:
    labels = iter(range(sum(sizes)))
    groups = tuple(tuple(str(next(labels)) for _ in range(size)) for size in sizes)
    return ResourcePool(name, PoolKind.GROUPS if len(groups) > 1 else PoolKind.LIST, groups)


@st.composite
def descriptors(draw: st.DrawFn) -> ResourceDescriptor:
    group_sizes = st.lists(st.integers(1, 4), min_size=1, max_size=4)
    pools = [indexed_pool("cpus", draw(group_sizes))]
    if draw(st.booleans()):
        pools.append(indexed_pool("foo", draw(group_sizes)))
    if draw(st.booleans()):
        size = draw(st.sampled_from([0.5, 1, 2, 2.2, 4]))
        pools.append(ResourcePool("mem", PoolKind.SUM, size=round(size * FRACTIONS)))
    pools.sort(key=lambda p: p.name)
    coupling: list[CouplingWeight] = []
    names = [p.name for p in pools]
    if "foo" in names and draw(st.booleans()):
        cpus, foo = pools[names.index("cpus")], pools[names.index("foo")]
        pairs = list(itertools.product(range(len(cpus.groups)), range(len(foo.groups))))
        for gc, gf in draw(st.lists(st.sampled_from(pairs), unique=True, min_size=1)):
            weight = draw(st.sampled_from([1, 64, 256, 1000]))
            coupling.append(CouplingWeight(names.index("cpus"), gc, names.index("foo"), gf, weight))
    return ResourceDescriptor(tuple(pools), tuple(coupling))


@st.composite
def entries(draw: st.DrawFn, name: str) -> ResourceEntry:
    if draw(st.integers(0, 11)) == 0:
        return ResourceEntry(name, 0, all=True)
    amount = draw(st.integers(0, 6)) * FRACTIONS + draw(st.sampled_from([0, 0, 2500, 5000, 6000]))
    return ResourceEntry(name, amount or FRACTIONS, draw(st.sampled_from(POLICIES)))


@st.composite
def requests(draw: st.DrawFn, names: Sequence[str]) -> list[RequestVariant]:
    variants = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            chosen = list(names)  # every pool: exercises coupling and multi-pool variants
        else:
            chosen = draw(st.lists(st.sampled_from([*names, "gpus"]), min_size=1, unique=True))
        variants.append(RequestVariant(tuple(draw(entries(name)) for name in chosen)))
    return variants


# --- the oracle: brute force over group sets of a snapshot ----------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The free amount of every item (indexed pools) or of every sum, and the groups."""

    free: dict[str, tuple[int, ...]]
    sums: dict[str, int]
    groups: dict[str, tuple[tuple[int, ...], ...]]
    sizes: dict[str, int]

    @staticmethod
    def of(alloc: Allocator) -> Snapshot:
        return Snapshot(
            {name: tuple(pool.free) for name, pool in alloc.indexed.items()},
            dict(alloc.sums),
            {name: tuple(tuple(g) for g in pool.groups) for name, pool in alloc.indexed.items()},
            dict(alloc.sum_size),
        )

    def idle(self) -> Snapshot:
        free = {name: (FRACTIONS,) * len(items) for name, items in self.free.items()}
        return Snapshot(free, dict(self.sizes), self.groups, self.sizes)

    def whole(self, name: str) -> list[int]:
        free = self.free[name]
        return [sum(1 for i in g if free[i] == FRACTIONS) for g in self.groups[name]]

    def fits(self, name: str, groups: Sequence[int], amount: int) -> bool:
        need, fraction = divmod(amount, FRACTIONS)
        free = self.free[name]
        items = [i for g in groups for i in self.groups[name][g]]
        whole = sum(1 for i in items if free[i] == FRACTIONS)
        if whole < need:
            return False
        spare = whole > need or any(fraction <= free[i] < FRACTIONS for i in items)
        return not fraction or spare

    def group_sets(self, name: str, amount: int) -> list[tuple[int, ...]]:
        """All fitting group sets of the smallest size (empty when nothing fits)."""
        n = len(self.groups[name])
        for k in range(1, n + 1):
            sets = [s for s in itertools.combinations(range(n), k) if self.fits(name, s, amount)]
            if sets:
                return sets
        return []

    def idle_minimum(self, name: str, amount: int) -> int:
        return len(self.idle().group_sets(name, amount)[0])


def coupled_entries(
    descriptor: ResourceDescriptor, variant: RequestVariant, snap: Snapshot
) -> list[ResourceEntry]:
    """The entries the coupling decides: compact/tight ones of coupled indexed pools."""
    names = sorted(p.name for p in descriptor.pools)
    in_coupling = {names[c.resource1_idx] for c in descriptor.coupling} | {
        names[c.resource2_idx] for c in descriptor.coupling
    }
    chosen = [
        e
        for e in variant.entries
        if e.name in in_coupling
        and e.name in snap.free
        and not e.all
        and e.policy != Policy.SCATTER
    ]
    return chosen if len(chosen) > 1 else []


def weight(descriptor: ResourceDescriptor, used: dict[str, set[int]]) -> int:
    names = sorted(p.name for p in descriptor.pools)
    total = 0
    for c in descriptor.coupling:
        a, b = names[c.resource1_idx], names[c.resource2_idx]
        if c.group1_idx in used.get(a, ()) and c.group2_idx in used.get(b, ()):
            total += c.weight
    return total


def best_weight(
    descriptor: ResourceDescriptor, coupled: list[ResourceEntry], snap: Snapshot
) -> int:
    options = [snap.group_sets(e.name, e.amount) for e in coupled]
    return max(
        weight(descriptor, {e.name: set(s) for e, s in zip(coupled, combo, strict=True)})
        for combo in itertools.product(*options)
    )


def variant_fits(descriptor: ResourceDescriptor, variant: RequestVariant, snap: Snapshot) -> bool:
    for entry in variant.entries:
        if entry.name in snap.sums:
            size = snap.sizes[entry.name]
            free = snap.sums[entry.name]
            if (free != size) if entry.all else (free < entry.amount):
                return False
        elif entry.name not in snap.free:
            return False
        elif entry.all:
            if any(f != FRACTIONS for f in snap.free[entry.name]):
                return False
        else:
            sets = snap.group_sets(entry.name, entry.amount)
            if not sets:
                return False
            if entry.policy in STRICT and len(sets[0]) > snap.idle_minimum(
                entry.name, entry.amount
            ):
                return False
    coupled = coupled_entries(descriptor, variant, snap)
    if any(e.policy in STRICT for e in coupled):
        return best_weight(descriptor, coupled, snap) >= best_weight(
            descriptor, coupled, snap.idle()
        )
    return True


def check_taken(entry: ResourceEntry, taken: Taken, snap: Snapshot) -> set[int]:
    """The allocation of one indexed entry against the snapshot; returns the groups it uses."""
    free = snap.free[entry.name]
    groups = snap.groups[entry.name]
    group_of = {i: g for g, items in enumerate(groups) for i in items}
    items = [i for i, _ in taken.items]
    assert len(items) == len(set(items)), "an item taken twice by one task"
    assert all(free[i] >= amount > 0 for i, amount in taken.items), "took more than was free"
    if entry.all:
        assert sorted(taken.items) == [(i, FRACTIONS) for i in range(len(free))]
        return set(range(len(groups)))
    need, fraction = divmod(entry.amount, FRACTIONS)
    assert sum(a for _, a in taken.items) == entry.amount
    whole = [i for i, a in taken.items if a == FRACTIONS]
    assert len(whole) == need
    if fraction:
        assert taken.items[-1][1] == fraction, "the partly used item comes last"
    used = {group_of[i] for i in items}
    shares = {g: sum(1 for i in whole if group_of[i] == g) for g in range(len(groups))}
    counts = snap.whole(entry.name)
    if entry.policy == Policy.SCATTER:
        spread = {g for g in shares if shares[g]}
        assert len(spread) == min(need, sum(1 for c in counts if c))
        check_even(spread, shares, counts)
        return used
    minimum = snap.group_sets(entry.name, entry.amount)
    assert len(used) == len(minimum[0]), "compact and tight use the fewest groups possible now"
    if entry.policy in STRICT:
        assert len(used) <= snap.idle_minimum(entry.name, entry.amount)
    if entry.policy in (Policy.TIGHT, Policy.FORCE_TIGHT):
        partly = [g for g in used if 0 < shares[g] < counts[g]]
        assert len(partly) <= 1, "tight fills each group before the next"
    else:
        check_even(used, shares, counts)
    return used


def check_even(groups: set[int], shares: dict[int, int], counts: list[int]) -> None:
    most = max((shares[g] for g in groups), default=0)
    for g in groups:
        assert shares[g] >= min(counts[g], most - 1), ("uneven", shares, counts)


def check_allocation(
    descriptor: ResourceDescriptor,
    variants: list[RequestVariant],
    got: Allocation | None,
    snap: Snapshot,
) -> None:
    fits = [variant_fits(descriptor, v, snap) for v in variants]
    if got is None:
        assert not any(fits), "answered 'not now' to a request that fits now"
        idle = Allocator(descriptor).try_allocate(variants)
        totals = descriptor.totals()
        ever = any(v.amount_on(totals) is not None for v in variants)
        assert (idle is not None) == ever, "an idle node must run what can ever run on it"
        return
    assert fits[got.variant] and not any(fits[: got.variant]), "the first fitting variant wins"
    variant = variants[got.variant]
    assert [t.name for t in got.taken] == [e.name for e in variant.entries]
    used: dict[str, set[int]] = {}
    for entry, taken in zip(variant.entries, got.taken, strict=True):
        if entry.name in snap.sums:
            want = snap.sizes[entry.name] if entry.all else entry.amount
            assert taken.amount == want and not taken.items
        else:
            used[entry.name] = check_taken(entry, taken, snap)
    coupled = coupled_entries(descriptor, variant, snap)
    if coupled:
        chosen = weight(descriptor, {e.name: used[e.name] for e in coupled})
        assert chosen == best_weight(descriptor, coupled, snap), "not the best coupling"


def check_books(alloc: Allocator, snap: Snapshot, held: list[Allocation]) -> None:
    """The allocator's free amounts are exactly what the held allocations leave."""
    alloc.check()
    for name, pool in alloc.indexed.items():
        left = [FRACTIONS] * len(pool.free)
        for allocation in held:
            taken = taken_of(allocation, name)
            for item, amount in taken.items if taken else ():
                left[item] -= amount
        assert all(f >= 0 for f in left), "an item over 100%"
        assert left == pool.free
    for name, size in snap.sizes.items():
        used = sum(t.amount for a in held if (t := taken_of(a, name)) is not None)
        assert 0 <= alloc.sums[name] == size - used


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_requests_and_releases(data: st.DataObject) -> None:
    descriptor = data.draw(descriptors())
    names = [p.name for p in descriptor.pools]
    alloc = Allocator(descriptor)
    held: list[Allocation] = []
    for _ in range(data.draw(st.integers(0, 30))):
        if held and data.draw(st.integers(0, 2)) == 0:
            alloc.release(held.pop(data.draw(st.integers(0, len(held) - 1))))
        else:
            variants = data.draw(requests(names))
            snap = Snapshot.of(alloc)
            got = alloc.try_allocate(variants)
            check_allocation(descriptor, variants, got, snap)
            if got is not None:
                held.append(got)
        check_books(alloc, Snapshot.of(alloc), held)
        assert alloc.is_idle() == (not held)
    for allocation in data.draw(st.permutations(held)):
        alloc.release(allocation)
        alloc.check()
    assert alloc.is_idle()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 8),
    st.booleans(),
    st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=40),
)
def test_compact_never_splits_half_a_numa_node(
    half: int, odd: bool, ops: list[tuple[bool, int]]
) -> None:
    """Issue 4's target: 2 NUMA nodes, tasks of half a node each (x.5 on odd nodes), any order
    of starts and ends: ``compact`` never spreads a task over both nodes, and only says "not
    now" when four tasks already run."""
    size = 2 * half + int(odd)
    alloc = Allocator(ResourceDescriptor((indexed_pool("cpus", [size, size]),)))
    task = [RequestVariant((ResourceEntry("cpus", size * FRACTIONS // 2, Policy.COMPACT),))]
    held: list[Allocation] = []
    for start, pick in ops:
        if not start and held:
            alloc.release(held.pop(pick % len(held)))
            continue
        got = alloc.try_allocate(task)
        alloc.check()
        if got is None:
            assert len(held) == 4
            continue
        assert len(groups_of_items(alloc, "cpus", got.taken[0])) == 1, got
        held.append(got)
    for allocation in held:
        alloc.release(allocation)
    assert alloc.is_idle()
