"""The node's allocator: policies and fractions of spec/resources.md §3, and a property test that
allocations and releases in any order never over-commit an item and leave it whole again."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.resources import (
    FRACTIONS,
    Policy,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
)
from hqshm.node.allocator import Allocation, Allocator
from hqshm.resourcespec import parse_cpus, parse_pool, parse_request_amount

THREE_BY_FOUR = "[[1,2,3,4],[11,12,13,14],[21,22,23,24]]"


def allocator(**pools: str) -> Allocator:
    """``allocator(cpus="3x4", foo="[a,b]")``: pools written as on `hq worker start`."""
    parsed = [
        parse_cpus(text) if name == "cpus" else parse_pool(name, text)
        for name, text in pools.items()
    ]
    return Allocator(ResourceDescriptor(tuple(sorted(parsed, key=lambda p: p.name))))


def variant(**requests: str) -> RequestVariant:
    """``variant(cpus="6 tight", foo="0.4")``: requests written as on `hq submit`."""
    return RequestVariant(
        tuple(parse_request_amount(text, name) for name, text in requests.items())
    )


def take(alloc: Allocator, **requests: str) -> Allocation | None:
    result = alloc.try_allocate([variant(**requests)])
    alloc.check()
    return result


def group_sizes(alloc: Allocator, allocation: Allocation | None, name: str = "cpus") -> list[int]:
    """How many items the allocation holds in each group it touches, largest first."""
    assert allocation is not None
    taken = allocation.of(name)
    assert taken is not None
    pool = alloc.indexed[name]
    sizes: dict[int, int] = {}
    for item, _amount in taken.items:
        sizes[pool.group_of[item]] = sizes.get(pool.group_of[item], 0) + 1
    return sorted(sizes.values(), reverse=True)


def labels(alloc: Allocator, allocation: Allocation | None, name: str = "cpus") -> list[str]:
    assert allocation is not None
    taken = allocation.of(name)
    assert taken is not None
    return alloc.labels(name, taken)


# --- policies on grouped pools --------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "sizes"),
    [
        ("6 compact", [3, 3]),
        ("6 compact!", [3, 3]),
        ("6 tight", [4, 2]),
        ("6 tight!", [4, 2]),
        ("6 scatter", [2, 2, 2]),
        ("2 scatter", [1, 1]),
        ("4 compact!", [4]),
        ("5 compact!", [3, 2]),
        ("12 compact", [4, 4, 4]),
    ],
)
def test_policies_on_three_groups_of_four(request_text: str, sizes: list[int]) -> None:
    """spec/resources.md §3: the examples and test facts on an idle 3x4 worker."""
    alloc = allocator(cpus=THREE_BY_FOUR)
    got = take(alloc, cpus=request_text)
    assert group_sizes(alloc, got) == sizes
    assert len(set(labels(alloc, got))) == sum(sizes)


def test_3x4_shorthand_is_the_same_shape() -> None:
    alloc = allocator(cpus="3x4")
    assert labels(alloc, take(alloc, cpus="6 tight")) == ["0", "1", "2", "3", "4", "5"]


def test_compact_uses_fewest_groups_now_while_strict_waits_for_the_idle_minimum() -> None:
    alloc = allocator(cpus=THREE_BY_FOUR)
    singles = [take(alloc, cpus="1") for _ in range(3)]
    assert sorted(group_sizes(alloc, s)[0] for s in singles) == [1, 1, 1]
    assert {labels(alloc, s)[0][0] for s in singles} == {"1", "2"}  # one in each group
    assert take(alloc, cpus="4 compact!") is None  # needs one whole group: wait
    assert take(alloc, cpus="4 tight!") is None
    relaxed = take(alloc, cpus="4 compact")
    assert group_sizes(alloc, relaxed) == [2, 2]  # two groups now, evenly
    alloc.release(relaxed)  # type: ignore[arg-type]
    alloc.release(singles[0])  # type: ignore[arg-type]
    assert group_sizes(alloc, take(alloc, cpus="4 compact!")) == [4]


def test_strict_request_larger_than_any_group_runs_at_the_idle_minimum() -> None:
    """spec/resources.md §3: `2 compact!` on [[1,2,3],[11,12,13]], three tasks complete."""
    alloc = allocator(cpus="[[1,2,3],[11,12,13]]")
    first = take(alloc, cpus="2 compact!")
    second = take(alloc, cpus="2 compact!")
    assert group_sizes(alloc, first) == group_sizes(alloc, second) == [2]
    assert take(alloc, cpus="2 compact!") is None  # 1 + 1 left in two groups: wait
    alloc.release(first)  # type: ignore[arg-type]
    assert group_sizes(alloc, take(alloc, cpus="2 compact!")) == [2]


def test_policies_do_not_matter_on_a_single_group() -> None:
    for policy in ("compact", "compact!", "tight", "tight!", "scatter"):
        alloc = allocator(cpus="8")
        assert labels(alloc, take(alloc, cpus=f"3 {policy}")) == ["0", "1", "2"]


# --- fractions, all, sums -------------------------------------------------------------------


def test_fractions_share_items() -> None:
    """spec/resources.md §3.1: foo=[a,b], four 0.4 tasks run at once, two per item."""
    alloc = allocator(cpus="1", foo="[a,b]")
    got = [take(alloc, foo="0.4") for _ in range(4)]
    assert sorted(labels(alloc, g, "foo")[0] for g in got) == ["a", "a", "b", "b"]
    assert take(alloc, foo="0.4") is None
    assert take(alloc, foo="0.2") is not None  # 0.2 is left on each item


def test_two_and_a_half_on_ten_items() -> None:
    """Four 2.5 tasks fit: 8 distinct whole items and 2 half items, each shared by two."""
    alloc = allocator(cpus="1", foo="[a,b,c,d,e,f,g,h,i,j]")
    got = [take(alloc, foo="2.5") for _ in range(4)]
    assert take(alloc, foo="2.5") is None
    whole: list[str] = []
    halves: list[str] = []
    for allocation in got:
        names = labels(alloc, allocation, "foo")
        assert len(names) == 3
        whole += names[:2]
        halves.append(names[2])  # the partially used item is listed last
    assert len(set(whole)) == 8
    assert len(set(halves)) == 2 and all(halves.count(h) == 2 for h in halves)
    assert set(whole).isdisjoint(halves)


def test_fraction_over_groups_gives_distinct_labels() -> None:
    alloc = allocator(cpus="1", foo="[[a,b,c],[i,j,k],[x,y],[v,w]]")
    assert len(set(labels(alloc, take(alloc, foo="3.5"), "foo"))) == 4


def test_strict_policies_accept_fractions() -> None:
    alloc = allocator(cpus="[[1,2],[11,12],[21,22]]")
    assert group_sizes(alloc, take(alloc, cpus="2.5 compact!")) == [2, 1]
    assert take(alloc, cpus="0.3 compact!") is not None


def test_all_takes_every_item_and_waits_for_a_fully_idle_pool() -> None:
    alloc = allocator(cpus=THREE_BY_FOUR)
    everything = take(alloc, cpus="all")
    assert len(labels(alloc, everything)) == 12
    assert take(alloc, cpus="0.1") is None
    alloc.release(everything)  # type: ignore[arg-type]
    small = take(alloc, cpus="0.1")
    assert take(alloc, cpus="all") is None  # one item is partly used
    alloc.release(small)  # type: ignore[arg-type]
    assert take(alloc, cpus="all") is not None


def test_sum_pools_subtract_exact_amounts() -> None:
    """spec/resources.md §3.1: sum(2) runs four 0.5 at once; sum(2.2) three 0.6."""
    alloc = allocator(cpus="1", foo="sum(2)")
    halves = [take(alloc, foo="0.5") for _ in range(4)]
    assert all(h is not None for h in halves)
    assert take(alloc, foo="0.5") is None
    alloc2 = allocator(cpus="1", foo="sum(2.2)")
    parts = [take(alloc2, foo="0.6") for _ in range(4)]
    assert [p is not None for p in parts] == [True, True, True, False]
    alloc2.release(parts[0])  # type: ignore[arg-type]
    got = take(alloc2, foo="0.6")
    assert got is not None and got.of("foo").amount == 6_000  # type: ignore[union-attr]


def test_all_of_a_sum_pool_waits_until_it_is_whole() -> None:
    alloc = allocator(cpus="1", mem="sum(4)")
    bit = take(alloc, mem="1")
    assert take(alloc, mem="all") is None
    alloc.release(bit)  # type: ignore[arg-type]
    everything = take(alloc, mem="all")
    assert everything is not None and everything.of("mem").amount == 4 * FRACTIONS  # type: ignore[union-attr]


def test_a_pool_the_node_lacks_is_never_allocated() -> None:
    alloc = allocator(cpus="4")
    assert take(alloc, gpus="1") is None
    assert alloc.is_idle()


# --- variants -------------------------------------------------------------------------------


def test_first_variant_that_fits_wins() -> None:
    """spec/resources.md §3.2: {cpus 8} / {cpus 1, gpus 1} on 4 CPUs with gpus: variant 1."""
    alloc = allocator(cpus="4", gpus="[0,1]")
    variants = [variant(cpus="8"), variant(cpus="1", gpus="1")]
    got = alloc.try_allocate(variants)
    assert got is not None and got.variant == 1
    assert got.of("gpus") is not None


def test_later_variants_take_over_when_earlier_ones_are_busy() -> None:
    """spec/resources.md §3.2: {cpus 1, x 1} / {cpus 4} on 16 CPUs and x=[0,1]: 2 + 3."""
    alloc = allocator(cpus="16", x="[0,1]")
    variants = [variant(cpus="1", x="1"), variant(cpus="4")]
    got = [alloc.try_allocate(variants) for _ in range(6)]
    assert [g.variant if g else None for g in got] == [0, 0, 1, 1, 1, None]
    alloc.check()


def test_multi_node_variants_are_not_for_the_node_allocator() -> None:
    alloc = allocator(cpus="4")
    got = alloc.try_allocate([RequestVariant(n_nodes=2), variant(cpus="1")])
    assert got is not None and got.variant == 1


# --- property: any order of allocate and release --------------------------------------------

SHAPES = ["4", "3x4", "[[1,2,3],[11,12,13]]", "[[a,b,c],[i,j,k],[x,y],[v,w]]", "[a,b]"]
POLICIES = [Policy.COMPACT, Policy.FORCE_COMPACT, Policy.TIGHT, Policy.FORCE_TIGHT, Policy.SCATTER]


def _min_groups(sizes: list[int], whole: int) -> int:
    """Fewest groups holding ``whole`` items, given each group's count."""
    total = k = 0
    for size in sorted(sizes, reverse=True):
        if total >= whole:
            break
        total += size
        k += 1
    return max(k, 1)


def _state(alloc: Allocator) -> tuple[list[int], list[list[int]]]:
    pool = alloc.indexed["cpus"]
    return list(pool.free), [list(g) for g in pool.groups]


@st.composite
def entries(draw: st.DrawFn) -> ResourceEntry:
    if draw(st.integers(0, 15)) == 0:
        return ResourceEntry("cpus", 0, all=True)
    amount = draw(st.sampled_from([1, 2, 3, 4, 5, 6]) | st.sampled_from([0.3, 0.5, 1.5, 2.5]))
    return ResourceEntry("cpus", round(amount * FRACTIONS), draw(st.sampled_from(POLICIES)))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(SHAPES),
    st.lists(st.tuples(st.booleans(), entries(), st.integers(0, 99)), max_size=25),
)
def test_any_order_of_allocations_and_releases(
    shape: str,
    ops: list[tuple[bool, ResourceEntry, int]],
) -> None:
    alloc = allocator(cpus=shape)
    held: list[Allocation] = []
    for allocate, entry, pick in ops:
        if allocate or not held:
            free, groups = _state(alloc)
            got = alloc.try_allocate([RequestVariant((entry,))])
            alloc.check()
            _check_answer(entry, got, free, groups)
            if got is not None:
                held.append(got)
        else:
            alloc.release(held.pop(pick % len(held)))
            alloc.check()
        _check_no_item_over_committed(alloc, held)
    for allocation in reversed(held):
        alloc.release(allocation)
    assert alloc.is_idle()


def _check_no_item_over_committed(alloc: Allocator, held: list[Allocation]) -> None:
    pool = alloc.indexed["cpus"]
    used = [0] * len(pool.free)
    for allocation in held:
        taken = allocation.of("cpus")
        assert taken is not None
        items = [i for i, _ in taken.items]
        assert len(items) == len(set(items)), "an allocation holds an item twice"
        for item, amount in taken.items:
            used[item] += amount
    assert [FRACTIONS - u for u in used] == pool.free


def _check_answer(
    entry: ResourceEntry, got: Allocation | None, free: list[int], groups: list[list[int]]
) -> None:
    """What the allocator answered, judged against the free state it answered from."""
    fully_free = [i for i, f in enumerate(free) if f == FRACTIONS]
    if entry.all:
        assert (got is not None) == (len(fully_free) == len(free))
        return
    whole, fraction = divmod(entry.amount, FRACTIONS)
    free_per_group = [sum(1 for i in items if free[i] == FRACTIONS) for items in groups]
    strict = entry.policy in (Policy.FORCE_COMPACT, Policy.FORCE_TIGHT)
    idle_minimum = _min_groups([len(g) for g in groups], whole)
    if got is None:
        # "Not now" must be true: too few whole items (within the idle minimum of groups for
        # the strict policies), or no item left for the fraction.
        placeable = (
            sorted(free_per_group, reverse=True)[:idle_minimum] if strict else free_per_group
        )
        spare = len(fully_free) > whole or any(fraction <= f < FRACTIONS for f in free)
        assert sum(placeable) < whole or (fraction and not spare), (free, entry)
        return
    taken = got.of("cpus")
    assert taken is not None
    assert sum(a for _, a in taken.items) == entry.amount
    whole_items = [i for i, a in taken.items if a == FRACTIONS]
    assert len(whole_items) == whole
    assert all(free[i] == FRACTIONS for i in whole_items), "a whole item was not free"
    assert all(free[i] >= a for i, a in taken.items)
    group_of = {i: g for g, items in enumerate(groups) for i in items}
    used = {group_of[i] for i in whole_items}
    if not whole:
        return
    if entry.policy in (Policy.COMPACT, Policy.TIGHT):
        assert len(used) == _min_groups(free_per_group, whole)
    elif strict:
        assert len(used) <= idle_minimum
    else:  # scatter: as many groups as it can
        assert len(used) == min(whole, sum(1 for n in free_per_group if n))
