from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hqshm.errors import UserError
from hqshm.model.arrays import (
    U32_MAX,
    All,
    IdRange,
    Ids,
    IdSet,
    InvalidIdSet,
    Last,
    RangesOverlap,
    compress_ids,
    parse_array,
    parse_ranges,
    parse_selector,
    parse_single,
)

# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("5", [5]),
        ("1-3", [1, 2, 3]),
        ("0-10:2", [0, 2, 4, 6, 8, 10]),
        ("0-5:2", [0, 2, 4]),
        ("2,7,9,20-23", [2, 7, 9, 20, 21, 22, 23]),
        ("2-4, 6", [2, 3, 4, 6]),
        ("  1 ,\t3 ", [1, 3]),
        ("3-4,2", [2, 3, 4]),
        ("1_0-1_2", [10, 11, 12]),
        ("0", [0]),
        ("1-2:1", [1, 2]),
    ],
)
def test_parse_array_ids(text: str, ids: list[int]) -> None:
    assert list(parse_array(text)) == ids


def test_parse_array_keeps_a_million_ids_as_one_range() -> None:
    ids = parse_array("1-1000_000")
    assert ids.ranges == (IdRange(1, 1_000_000),)
    assert len(ids) == 1_000_000
    assert ids.to_text() == "1-1000000"


def test_parse_array_accepts_the_whole_u32_range() -> None:
    ids = parse_array(f"0-{U32_MAX}")
    assert len(ids) == 2**32
    assert U32_MAX in ids
    assert 2**32 not in ids
    assert -1 not in ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("12-x", 'invalid array "12-x": expected a number at position 3'),
        ("", 'invalid array "": expected a number at position 0'),
        ("1,", 'invalid array "1,": expected a number at position 2'),
        ("x", 'invalid array "x": expected a number at position 0'),
        ("_1", 'invalid array "_1": expected a number at position 0'),
        ("1x", 'invalid array "1x": expected ",", "-" or the end at position 1'),
        ("1-3x", 'invalid array "1-3x": expected ",", ":" or the end at position 3'),
        ("1-5:2 x", 'invalid array "1-5:2 x": expected "," or the end at position 6'),
        ("5:2", 'invalid array "5:2": a step needs a range (N-M:STEP) at position 1'),
        ("5-3", 'invalid array "5-3": range end 3 is smaller than its start 5 at position 2'),
        (
            "1-3:3",
            'invalid array "1-3:3": step 3 does not fit the range 1-3 (0 < STEP <= 2) at position 4',
        ),
        (
            "1-3:0",
            'invalid array "1-3:0": step 0 does not fit the range 1-3 (0 < STEP <= 2) at position 4',
        ),
        (
            "7-7:1",
            'invalid array "7-7:1": step 1 does not fit the range 7-7 (0 < STEP <= 0) at position 4',
        ),
        (
            "1,4294967296",
            'invalid array "1,4294967296": number 4294967296 is larger than 4294967295 at position 2',
        ),
        ("1 2", 'invalid array "1 2": expected ",", "-" or the end at position 2'),
        ("1-3,,4", 'invalid array "1-3,,4": expected a number at position 4'),
    ],
)
def test_parse_array_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(InvalidIdSet) as raised:
        parse_array(text)
    assert str(raised.value) == message
    assert isinstance(raised.value, UserError)


@pytest.mark.parametrize("text", ["1-5,3", "1,1", "3-4,2-3", "0-10:2,1-9:2", "5,1-10"])
def test_overlapping_ranges_are_refused_with_hqs_text(text: str) -> None:
    with pytest.raises(RangesOverlap) as raised:
        parse_array(text)
    assert str(raised.value) == "Ranges overlap"


def test_parse_ranges_keeps_the_users_order() -> None:
    assert parse_ranges("3-4,2") == (IdRange(3, 4), IdRange(2, 2))
    assert parse_ranges("0-5:2") == (IdRange(0, 4, 2),)


# -- IdSet ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        ([], ""),
        ([5], "5"),
        ([1, 2, 3, 4, 5, 6, 10, 11, 12], "1-6,10-12"),
        ([2, 7, 9, 20, 21, 22], "2,7,9,20-22"),
        ([9, 3, 3, 1, 2], "1-3,9"),
        ([120, 2, 10, 11, 12, 13, 14], "2,10-14,120"),
    ],
)
def test_compress_ids(ids: list[int], text: str) -> None:
    assert compress_ids(ids) == text
    assert IdSet.from_ids(ids).to_text() == text


def test_to_text_joins_stepped_ranges_with_adjacent_runs() -> None:
    ids = IdSet.from_ranges([(0, 4, 2), (5, 9, 1), (11, 13, 2)])
    assert ids.to_text() == "0,2,4-9,11,13"


def test_equality_is_set_equality() -> None:
    stepped = parse_array("0-4:2")
    singles = parse_array("0,2,4")
    assert stepped.ranges != singles.ranges
    assert stepped == singles
    assert hash(stepped) == hash(singles)
    assert parse_array("0-4:2") != parse_array("0,2,3")
    assert parse_array("0-4:2") != parse_array("0-4")
    assert IdSet() == IdSet.from_ids([])
    assert IdSet() != parse_array("0")


def test_min_max_and_emptiness() -> None:
    ids = parse_array("7,20-30:5")
    assert (ids.min(), ids.max(), len(ids)) == (7, 30, 4)
    assert len(IdSet()) == 0
    with pytest.raises(ValueError):
        IdSet().min()
    with pytest.raises(ValueError):
        IdSet().max()


def test_from_sorted_ids_refuses_unsorted_and_out_of_range() -> None:
    assert IdSet.from_sorted_ids([1, 1, 2, 5]).to_text() == "1-2,5"
    with pytest.raises(ValueError):
        IdSet.from_sorted_ids([3, 2])
    with pytest.raises(ValueError):
        IdSet.from_sorted_ids([2**32])
    with pytest.raises(ValueError):
        IdSet.from_ids([-1])


def test_invariants_are_checked_when_built() -> None:
    with pytest.raises(ValueError):
        IdSet((IdRange(1, 5), IdRange(5, 6)))
    with pytest.raises(ValueError):
        IdSet((IdRange(5, 6), IdRange(1, 2)))
    with pytest.raises(ValueError):
        IdRange(0, 5, 2)
    with pytest.raises(ValueError):
        IdRange(3, 2)
    with pytest.raises(ValueError):
        IdRange(0, 2**32)
    with pytest.raises(ValueError):
        IdSet.from_ranges([(1, 5, 1), (5, 6, 1)])


def test_union_of_interleaved_submits_is_one_run() -> None:
    # open job: `--array 10-20`, `--array 1,3,5`, `--array 2,4,6` (jobs.md §10)
    ids = parse_array("10-20").union(parse_array("1,3,5")).union(parse_array("2,4,6"))
    assert ids.to_text() == "1-6,10-20"
    assert len(ids) == 17
    assert parse_array("1-5:2").union(parse_array("2-6:2")).ranges == (IdRange(1, 6),)


def test_set_algebra_stays_compact_on_huge_ranges() -> None:
    big = parse_array(f"0-{U32_MAX}")
    assert big.union(parse_array("5")).ranges == (IdRange(0, U32_MAX),)
    thirds = parse_array("0-4000000000:3")
    fifths = parse_array("0-4000000000:5")
    both = thirds.intersection(fifths)
    assert both.ranges == (IdRange(0, 3_999_999_990, 15),)
    assert thirds.union(thirds) == thirds
    assert thirds.union(big).ranges == (IdRange(0, U32_MAX),)
    assert big.intersection(thirds) == thirds


# -- properties -----------------------------------------------------------------------------


@st.composite
def disjoint_ranges(draw: st.DrawFn, base: int = 0) -> list[IdRange]:
    ranges = []
    position = base + draw(st.integers(0, 30))
    for _ in range(draw(st.integers(0, 6))):
        step = draw(st.integers(1, 4))
        count = draw(st.integers(1, 8))
        end = position + (count - 1) * step
        ranges.append(IdRange(position, end, step))
        position = end + draw(st.integers(1, 12))
    return ranges


id_sets = disjoint_ranges().map(IdSet.from_ranges)


def expand(ranges: list[IdRange]) -> list[int]:
    return sorted(v for r in ranges for v in range(r.start, r.end + 1, r.step))


@given(disjoint_ranges())
def test_iteration_equals_the_expanded_definition(ranges: list[IdRange]) -> None:
    ids = IdSet.from_ranges(reversed(ranges))
    assert list(ids) == expand(ranges)
    assert len(ids) == len(expand(ranges))


@given(disjoint_ranges(), st.integers(0, 150))
def test_membership_agrees_with_iteration(ranges: list[IdRange], probe: int) -> None:
    ids = IdSet.from_ranges(ranges)
    assert (probe in ids) == (probe in set(ids))


@given(disjoint_ranges())
def test_text_round_trips(ranges: list[IdRange]) -> None:
    ids = IdSet.from_ranges(ranges)
    if len(ids) == 0:
        assert ids.to_text() == ""
        return
    assert parse_array(ids.to_text()) == ids
    assert list(parse_array(ids.to_text())) == list(ids)


@given(disjoint_ranges(base=U32_MAX - 400))
def test_text_round_trips_near_the_u32_limit(ranges: list[IdRange]) -> None:
    ranges = [r for r in ranges if r.end <= U32_MAX]
    ids = IdSet.from_ranges(ranges)
    if len(ids):
        assert parse_array(ids.to_text()) == ids


@given(id_sets, id_sets)
def test_union_and_intersection_agree_with_python_sets(a: IdSet, b: IdSet) -> None:
    union = a.union(b)
    intersection = a.intersection(b)
    assert list(union) == sorted(set(a) | set(b))
    assert list(intersection) == sorted(set(a) & set(b))
    assert union == b.union(a)
    assert (a == b) == (set(a) == set(b))


@given(st.lists(st.integers(0, 300)))
def test_from_ids_matches_sorted_unique(values: list[int]) -> None:
    assert list(IdSet.from_ids(values)) == sorted(set(values))


# -- selectors ------------------------------------------------------------------------------


def test_selectors() -> None:
    assert parse_selector("all") == All()
    assert parse_selector("last") == Last()
    assert parse_selector(" last ") == Last()
    assert parse_selector("1-3,7") == Ids(parse_array("1-3,7"))


def test_selector_without_all() -> None:
    assert parse_selector("last", allow_all=False) == Last()
    with pytest.raises(InvalidIdSet) as raised:
        parse_selector("all", allow_all=False)
    assert str(raised.value) == 'invalid selector "all": `all` is not accepted here at position 0'


def test_selector_errors_name_the_selector() -> None:
    with pytest.raises(InvalidIdSet) as raised:
        parse_selector("lost")
    assert str(raised.value) == 'invalid selector "lost": expected a number at position 0'
    with pytest.raises(RangesOverlap):
        parse_selector("1-3,2")


def test_single_ids() -> None:
    assert parse_single("12") == 12
    assert parse_single(" 1_000 ") == 1000
    with pytest.raises(InvalidIdSet) as raised:
        parse_single("1-3")
    assert str(raised.value) == 'invalid ID "1-3": expected a single number at position 1'
    with pytest.raises(InvalidIdSet) as raised:
        parse_single("all")
    assert str(raised.value) == 'invalid ID "all": expected a number at position 0'
