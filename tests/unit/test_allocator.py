"""The node's allocator: policies, fractions, variants and coupling of spec/resources.md §3, as
scenarios. The properties (random nodes, requests and release orders) are in
test_allocator_properties.py."""

from __future__ import annotations

import pytest
from allocator_queries import groups_of_items, taken_of
from hqshm.cluster.resources import FRACTIONS, CouplingWeight, RequestVariant, ResourceDescriptor

from hqshm.model.resourcespec import parse_cpus, parse_pool, parse_request_amount
from hqshm.node.allocator import Allocation, Allocator

THREE_BY_FOUR = "[[1,2,3,4],[11,12,13,14],[21,22,23,24]]"


def allocator(coupling: str = "", **pools: str) -> Allocator:
    """``allocator(cpus="3x4", foo="[a,b]")``: pools written as on `hq worker start`;
    ``coupling="cpus[0]:foo[0]=64,cpus[1]:foo[1]"`` as `--coupling` (weight 256 by default)."""
    parsed = sorted(
        [parse_cpus(t) if n == "cpus" else parse_pool(n, t) for n, t in pools.items()],
        key=lambda p: p.name,
    )
    names = [p.name for p in parsed]
    weights = []
    for pair in filter(None, coupling.split(",")):
        link, _, weight = pair.partition("=")
        (r1, g1), (r2, g2) = (side.rstrip("]").split("[") for side in link.split(":"))
        weights.append(
            CouplingWeight(names.index(r1), int(g1), names.index(r2), int(g2), int(weight or 256))
        )
    return Allocator(ResourceDescriptor(tuple(parsed), tuple(weights)))


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
    taken = taken_of(allocation, name)
    assert taken is not None
    pool = alloc.indexed[name]
    sizes: dict[int, int] = {}
    for item, _amount in taken.items:
        sizes[pool.group_of[item]] = sizes.get(pool.group_of[item], 0) + 1
    return sorted(sizes.values(), reverse=True)


def labels(alloc: Allocator, allocation: Allocation | None, name: str = "cpus") -> list[str]:
    assert allocation is not None
    taken = taken_of(allocation, name)
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
    assert got is not None and taken_of(got, "foo").amount == 6_000  # type: ignore[union-attr]


def test_all_of_a_sum_pool_waits_until_it_is_whole() -> None:
    alloc = allocator(cpus="1", mem="sum(4)")
    bit = take(alloc, mem="1")
    assert take(alloc, mem="all") is None
    alloc.release(bit)  # type: ignore[arg-type]
    everything = take(alloc, mem="all")
    assert everything is not None and taken_of(everything, "mem").amount == 4 * FRACTIONS  # type: ignore[union-attr]


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
    assert taken_of(got, "gpus") is not None


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


def groups_of(alloc: Allocator, allocation: Allocation | None, name: str) -> set[int]:
    assert allocation is not None
    taken = taken_of(allocation, name)
    assert taken is not None
    return groups_of_items(alloc, name, taken)


# --- fractions inside groups ----------------------------------------------------------------


def test_compact_counts_the_fractional_item_when_it_evens_out() -> None:
    """3.5 needs four items and no single group of three holds them: compact takes 2 + 2
    (the shared item in the emptier share), tight fills the first group: 3 + 1."""
    alloc = allocator(cpus="[[1,2,3],[11,12,13]]")
    assert group_sizes(alloc, take(alloc, cpus="3.5 compact")) == [2, 2]
    alloc = allocator(cpus="[[1,2,3],[11,12,13]]")
    assert labels(alloc, take(alloc, cpus="3.5 tight")) == ["1", "2", "3", "11"]


def test_fraction_uses_a_partly_used_item_of_the_chosen_group() -> None:
    alloc = allocator(cpus="1", foo="[[a,b],[c,d]]")
    assert labels(alloc, take(alloc, foo="0.5"), "foo") == ["a"]
    # b whole and half of a: one group, instead of breaking c or d.
    assert labels(alloc, take(alloc, foo="1.5"), "foo") == ["b", "a"]


def test_fraction_takes_the_tightest_fit() -> None:
    alloc = allocator(cpus="1", foo="[a,b,c]")
    assert labels(alloc, take(alloc, foo="0.7"), "foo") == ["a"]  # 0.3 left
    assert labels(alloc, take(alloc, foo="0.4"), "foo") == ["b"]  # 0.6 left
    assert labels(alloc, take(alloc, foo="0.3"), "foo") == ["a"]  # fits exactly
    assert labels(alloc, take(alloc, foo="0.5"), "foo") == ["b"]  # c stays whole
    assert alloc.indexed["foo"].free == [0, 1_000, FRACTIONS]


def test_strict_fraction_waits_for_one_group() -> None:
    alloc = allocator(cpus="[[a,b],[c,d]]")
    first, second = take(alloc, cpus="1"), take(alloc, cpus="1")
    assert groups_of(alloc, first, "cpus") != groups_of(alloc, second, "cpus")
    assert take(alloc, cpus="1.5 compact!") is None  # one whole item in each group
    assert group_sizes(alloc, take(alloc, cpus="1.5 compact")) == [1, 1]
    alloc = allocator(cpus="[[a,b],[c,d]]")
    held = take(alloc, cpus="0.5")
    assert group_sizes(alloc, take(alloc, cpus="1.5 compact!")) == [2]  # b + half of a
    alloc.release(held)  # type: ignore[arg-type]


def test_idle_and_check() -> None:
    alloc = allocator(cpus="3x4", mem="sum(2)")
    assert alloc.is_idle()
    bit = take(alloc, cpus="0.1", mem="0.5")
    assert not alloc.is_idle()
    alloc.release(bit)  # type: ignore[arg-type]
    assert alloc.is_idle()
    alloc.indexed["cpus"].whole[1] -= 1  # the books no longer match the items
    with pytest.raises(AssertionError):
        alloc.check()


# --- coupling (spec/resources.md §3.3) ------------------------------------------------------

PAIRS = "cpus[0]:foo[0],cpus[1]:foo[1]"
TRIPLES = "cpus[0]:foo[0],cpus[1]:foo[1],cpus[2]:foo[2]"


def test_coupled_pairs_with_a_strict_foo_request() -> None:
    """Every `--cpus=1 --resource=foo=3 compact!` task gets CPU and foo from one NUMA pair."""
    alloc = allocator(PAIRS, cpus="[[1,2,3],[4,5,6]]", foo="[[10,20,30,40],[50,60,70,80]]")
    running = [take(alloc, cpus="1", foo="3 compact!") for _ in range(3)]
    assert running[2] is None  # foo has three of four left in neither group
    for allocation in running[:2]:
        assert groups_of(alloc, allocation, "cpus") == groups_of(alloc, allocation, "foo")
    assert groups_of(alloc, running[0], "foo") != groups_of(alloc, running[1], "foo")


def test_coupled_pairs_with_one_foo_each() -> None:
    """`foo=1 compact!` with the default `cpus=1 compact`: six run, each on one pair, and
    again after any of them ends."""
    alloc = allocator(PAIRS, cpus="[[1,2,3],[4,5,6]]", foo="[[10,20,30,40],[50,60,70,80]]")
    running = [take(alloc, cpus="1", foo="1 compact!") for _ in range(6)]
    assert take(alloc, cpus="1", foo="1 compact!") is None  # no CPU left
    for index in (4, 0, 2):
        alloc.release(running.pop(index))  # type: ignore[arg-type]
        running.append(take(alloc, cpus="1", foo="1 compact!"))
    for allocation in running:
        assert groups_of(alloc, allocation, "cpus") == groups_of(alloc, allocation, "foo")


@pytest.mark.parametrize(
    ("cpus", "foo", "cpu_sizes", "foo_sizes"),
    [
        ("6 tight", "2 tight", [4, 2], [2]),
        ("6 scatter", "2 scatter", [2, 2, 2], [1, 1]),
        ("6 compact", "2 compact", [3, 3], [2]),
        ("6 tight", "2 compact", [4, 2], [2]),
        ("6 compact", "2 tight", [3, 3], [2]),
        ("6 scatter", "2 tight", [2, 2, 2], [2]),
        ("6 scatter", "2 compact", [2, 2, 2], [2]),
    ],
)
def test_policies_on_three_coupled_groups(
    cpus: str, foo: str, cpu_sizes: list[int], foo_sizes: list[int]
) -> None:
    """spec/resources.md §3.3: the seven (policy, policy) outcomes; foo sits next to CPUs."""
    alloc = allocator(TRIPLES, cpus=THREE_BY_FOUR, foo="[[a,b,c],[d,e,f],[g,h,i]]")
    got = take(alloc, cpus=cpus, foo=foo)
    assert group_sizes(alloc, got) == cpu_sizes
    assert group_sizes(alloc, got, "foo") == foo_sizes
    if "scatter" not in foo:
        assert groups_of(alloc, got, "foo") <= groups_of(alloc, got, "cpus")


def test_coupling_picks_the_coupled_group_over_the_fullest() -> None:
    alloc = allocator(TRIPLES, cpus=THREE_BY_FOUR, foo="[[a,b,c],[d,e,f],[g,h,i]]")
    assert groups_of(alloc, take(alloc, cpus="4"), "cpus") == {0}
    # Alone, foo would take its fullest group 0, whose CPUs are all busy.
    got = take(alloc, cpus="2", foo="2")
    assert groups_of(alloc, got, "cpus") == groups_of(alloc, got, "foo") == {1}


def test_strict_coupling_waits_for_the_best_pair() -> None:
    alloc = allocator(TRIPLES, cpus=THREE_BY_FOUR, foo="[[a,b,c],[d,e,f],[g,h,i]]")
    busy_cpus = [take(alloc, cpus="4") for _ in range(2)]  # CPU groups 0 and 1
    busy_foo = [take(alloc, foo="3") for _ in range(3)]
    alloc.release(busy_foo[0])  # type: ignore[arg-type]
    alloc.release(busy_foo[1])  # type: ignore[arg-type]
    # CPUs are free in group 2 only, foo in groups 0 and 1 only.
    assert take(alloc, cpus="1", foo="1 compact!") is None
    assert take(alloc, cpus="1", foo="1 tight!") is None
    relaxed = take(alloc, cpus="1", foo="1 compact")
    assert groups_of(alloc, relaxed, "cpus") == {2} and groups_of(alloc, relaxed, "foo") == {0}
    alloc.release(busy_cpus[1])  # type: ignore[arg-type]
    got = take(alloc, cpus="1", foo="1 compact!")
    assert groups_of(alloc, got, "cpus") == groups_of(alloc, got, "foo") == {1}


def test_heaviest_coupling_wins() -> None:
    alloc = allocator(
        "cpus[0]:foo[0]=64,cpus[0]:foo[1]=200,cpus[1]:foo[1]=100",
        cpus="[[0,1],[2,3]]",
        foo="[[a,b],[c,d]]",
    )
    got = take(alloc, cpus="1", foo="1")
    assert labels(alloc, got) == ["0"] and labels(alloc, got, "foo") == ["c"]
    # With both CPU groups needed, every foo group is coupled; the heavier one wins.
    alloc = allocator(
        "cpus[0]:foo[0]=64,cpus[1]:foo[0]=64,cpus[1]:foo[1]=100",
        cpus="[[0,1],[2,3]]",
        foo="[[a,b],[c,d]]",
    )
    got = take(alloc, cpus="3", foo="1")
    assert groups_of(alloc, got, "foo") == {0}


def test_scatter_and_all_ignore_coupling() -> None:
    alloc = allocator(PAIRS, cpus="[[0,1],[2,3]]", foo="[[a,b],[c,d]]")
    take(alloc, cpus="1")  # CPU group 0 is now the emptier one
    scattered = take(alloc, cpus="1", foo="1 scatter")
    assert groups_of(alloc, scattered, "cpus") == {1}
    assert groups_of(alloc, scattered, "foo") == {0}  # the fullest foo group, not the pair
    alloc.release(scattered)  # type: ignore[arg-type]
    coupled = take(alloc, cpus="1", foo="1")
    assert groups_of(alloc, coupled, "foo") == {1}
    alloc = allocator(PAIRS, cpus="[[0,1],[2,3]]", foo="[[a,b],[c,d]]")
    take(alloc, foo="1")
    everything = take(alloc, cpus="all", foo="1 compact!")
    assert groups_of(alloc, everything, "foo") == {1}


def test_strict_request_no_group_can_hold_runs_on_the_fewest_groups() -> None:
    """A strict request larger than every group waits for the idle node's minimum only."""
    alloc = allocator(cpus="[[1,2,3],[11,12,13]]")
    assert group_sizes(alloc, take(alloc, cpus="4 compact!")) == [2, 2]
    alloc = allocator(cpus="[[1,2,3],[11,12,13],[21,22,23]]")
    singles = [take(alloc, cpus="1") for _ in range(2)]  # groups 0 and 1
    assert group_sizes(alloc, take(alloc, cpus="5 tight!")) == [3, 2]
    alloc = allocator(cpus="[[1,2,3],[11,12,13],[21,22,23]]")
    singles = [take(alloc, cpus="1") for _ in range(3)]  # one in each group
    assert take(alloc, cpus="5 tight!") is None  # 2 + 2 + 2 free: three groups
    relaxed = take(alloc, cpus="5 tight")
    assert group_sizes(alloc, relaxed) == [2, 2, 1]
    alloc.release(relaxed)  # type: ignore[arg-type]
    alloc.release(singles[1])  # type: ignore[arg-type]
    assert group_sizes(alloc, take(alloc, cpus="5 tight!")) == [3, 2]
