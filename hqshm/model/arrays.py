"""ID sets and ID selectors (spec/cli.md §1.3, output.md §1.4 "ID list").

An `IdSet` is kept as sorted ranges and never expanded: a million-task array is one range, and
the server, the journal and the wire all carry it in that form. Ranges of one set never share a
span, so iteration, membership and min/max need no merging.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import pairwise
from math import gcd
from typing import ClassVar

from hqshm.cluster.frozen import frozen
from hqshm.errors import UserError
from hqshm.model.scanner import U32_MAX, Scanner


class InvalidIdSet(UserError):
    """A malformed ID list or selector; says what is wrong and where (0-based position)."""

    template: ClassVar[str] = 'invalid {what} "{text}": {detail} at position {position}'


class RangesOverlap(InvalidIdSet):
    """HQ's own text; scripts match it."""

    template: ClassVar[str] = "Ranges overlap"


@frozen
class IdRange:
    """`start`, `start+step`, ... up to `end` (inclusive, on the step grid)."""

    start: int
    end: int
    step: int = 1

    def __post_init__(self) -> None:
        if self.step < 1 or self.start < 0 or self.end > U32_MAX or self.start > self.end:
            raise ValueError(f"invalid id range {self.start}-{self.end}:{self.step}")
        if (self.end - self.start) % self.step:
            raise ValueError(f"id range {self.start}-{self.end}:{self.step} is off its step")

    @classmethod
    def clipped(cls, start: int, end: int, step: int = 1) -> IdRange:
        """The range with `end` lowered onto the step grid (`0-5:2` is `0-4:2`)."""
        if step < 1 or start > end:
            raise ValueError(f"invalid id range {start}-{end}:{step}")
        return cls(start, start + (end - start) // step * step, step)

    def _order(self) -> tuple[int, int, int]:
        """Ranges sort as ``@dataclass(order=True)`` sorted them: by (start, end, step)."""
        return (self.start, self.end, self.step)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, IdRange):
            return NotImplemented
        return self._order() < other._order()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, IdRange):
            return NotImplemented
        return self._order() <= other._order()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, IdRange):
            return NotImplemented
        return self._order() > other._order()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, IdRange):
            return NotImplemented
        return self._order() >= other._order()

    def __len__(self) -> int:
        return (self.end - self.start) // self.step + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1, self.step))

    def __contains__(self, value: object) -> bool:
        return (
            isinstance(value, int)
            and self.start <= value <= self.end
            and (value - self.start) % self.step == 0
        )


@frozen
class IdSet:
    """An immutable set of u32 IDs as sorted ranges whose spans do not overlap.

    Equality is set equality: `0-4:2` equals `0,2,4` although the ranges differ.
    """

    ranges: tuple[IdRange, ...] = ()

    def __post_init__(self) -> None:
        previous_end = -1
        for r in self.ranges:
            if not isinstance(r, IdRange):
                raise TypeError(f"IdSet ranges must be IdRange, not {type(r).__name__}")
            if r.start <= previous_end:
                raise ValueError("id ranges must be sorted and must not overlap")
            previous_end = r.end

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_ranges(cls, ranges: Iterable[IdRange | tuple[int, int, int]]) -> IdSet:
        """Build from ranges in any order (tuples are clipped onto their step grid); spans must
        not overlap (ValueError otherwise)."""
        fixed = sorted(r if isinstance(r, IdRange) else IdRange.clipped(*r) for r in ranges)
        return cls(_normalized(fixed))

    @classmethod
    def from_ids(cls, ids: Iterable[int]) -> IdSet:
        if isinstance(ids, IdSet):
            return ids
        return cls.from_sorted_ids(sorted(set(ids)))

    @classmethod
    def from_sorted_ids(cls, ids: Iterable[int]) -> IdSet:
        """Compress ascending IDs into runs in one pass; duplicates are skipped."""
        runs: list[IdRange] = []
        start = end = -2
        for value in ids:
            if value < 0 or value > U32_MAX:
                raise ValueError(f"id {value} is outside of u32")
            if value == end:
                continue
            if value < end:
                raise ValueError("ids are not sorted")
            if value == end + 1:
                end = value
                continue
            if start >= 0:
                runs.append(IdRange(start, end))
            start = end = value
        if start >= 0:
            runs.append(IdRange(start, end))
        return cls(tuple(runs))

    # -- queries ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranges)

    def __iter__(self) -> Iterator[int]:
        for r in self.ranges:
            yield from range(r.start, r.end + 1, r.step)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        index = bisect_right(self.ranges, value, key=lambda r: r.start) - 1
        return index >= 0 and value in self.ranges[index]

    def min(self) -> int:
        if not self.ranges:
            raise ValueError("min() of an empty IdSet")
        return self.ranges[0].start

    def max(self) -> int:
        if not self.ranges:
            raise ValueError("max() of an empty IdSet")
        return self.ranges[-1].end

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdSet):
            return NotImplemented
        if self.ranges == other.ranges:
            return True
        size = len(self)
        if size != len(other) or self.min() != other.min() or self.max() != other.max():
            return False
        return len(self.intersection(other)) == size

    def __hash__(self) -> int:
        if not self.ranges:
            return hash(())
        return hash((len(self), self.min(), self.max()))

    def to_text(self) -> str:
        """Canonical ID list: consecutive runs `a-b`, singles `a`, joined by `,`."""
        parts = []
        for start, end in _runs(self.ranges):
            parts.append(str(start) if start == end else f"{start}-{end}")
        return ",".join(parts)

    # -- set algebra ------------------------------------------------------------------------

    def intersection(self, other: IdSet) -> IdSet:
        a, b = self.ranges, other.ranges
        out: list[IdRange] = []
        i = j = 0
        while i < len(a) and j < len(b):
            ra, rb = a[i], b[j]
            if ra.end >= rb.start and rb.end >= ra.start:
                piece = _intersect_progressions(ra, rb)
                if piece is not None:
                    out.append(piece)
            if ra.end < rb.end:
                i += 1
            else:
                j += 1
        return IdSet(_normalized(out))

    def union(self, other: IdSet) -> IdSet:
        """Merge span by span; only where both sets interleave with different steps are the IDs
        of that stretch expanded (there is no compact form for them without overlapping spans)."""
        if not other.ranges:
            return self
        if not self.ranges:
            return other
        a, b = self.ranges, other.ranges
        points = sorted({r.start for r in a + b} | {r.end + 1 for r in a + b})
        out: list[IdRange] = []
        i = j = 0
        for lo, following in pairwise(points):
            hi = following - 1
            while i < len(a) and a[i].end < lo:
                i += 1
            while j < len(b) and b[j].end < lo:
                j += 1
            pa = _restrict(a[i], lo, hi) if i < len(a) and a[i].start <= lo else None
            pb = _restrict(b[j], lo, hi) if j < len(b) and b[j].start <= lo else None
            if pa is None:
                if pb is not None:
                    out.append(pb)
            elif pb is None:
                out.append(pa)
            elif pa.step == 1 or (pb.step == pa.step and (pb.start - pa.start) % pa.step == 0):
                out.append(pa)  # pa covers the stretch, or both are the same progression
            elif pb.step == 1:
                out.append(pb)
            else:
                out.extend(IdSet.from_sorted_ids(heapq.merge(pa, pb)).ranges)
        return IdSet(_normalized(out))


def compress_ids(ids: Iterable[int]) -> str:
    """The output format of ID lists (`1-6,10-20`); input in any order, duplicates allowed."""
    return IdSet.from_ids(ids).to_text()


def _restrict(r: IdRange, lo: int, hi: int) -> IdRange | None:
    first = r.start + -((r.start - lo) // r.step) * r.step if lo > r.start else r.start
    if first > hi:
        return None
    return IdRange(first, first + (hi - first) // r.step * r.step, r.step)


def _intersect_progressions(a: IdRange, b: IdRange) -> IdRange | None:
    """Chinese remainder: the common IDs of two progressions form one with step lcm(steps)."""
    g = gcd(a.step, b.step)
    diff = b.start - a.start
    if diff % g:
        return None
    lcm = a.step // g * b.step
    modulus = b.step // g
    t = (diff // g) * pow(a.step // g, -1, modulus) % modulus if modulus > 1 else 0
    anchor = a.start + a.step * t
    lo, hi = max(a.start, b.start), min(a.end, b.end)
    first = lo + (anchor - lo) % lcm
    if first > hi:
        return None
    return IdRange(first, first + (hi - first) // lcm * lcm, lcm)


def _normalized(ranges: list[IdRange]) -> tuple[IdRange, ...]:
    """Canonicalise sorted, span-disjoint ranges: singles get step 1, touching runs and
    continuing progressions of one step merge. Singles never merge into a stepped range, so
    the result does not depend on greedy choices."""
    out: list[IdRange] = []
    for r in ranges:
        if r.start == r.end and r.step != 1:
            r = IdRange(r.start, r.end)
        if out:
            p = out[-1]
            if p.step == 1 and r.step == 1 and p.end + 1 == r.start:
                out[-1] = IdRange(p.start, r.end)
                continue
            if p.step == r.step > 1 and p.end + p.step == r.start:
                out[-1] = IdRange(p.start, r.end, p.step)
                continue
        out.append(r)
    return tuple(out)


def _runs(ranges: Iterable[IdRange]) -> Iterator[tuple[int, int]]:
    """Maximal consecutive runs; stepped ranges contribute single IDs."""
    start = end = -2
    for r in ranges:
        pieces: Iterable[tuple[int, int]] = (
            ((r.start, r.end),) if r.step == 1 else ((v, v) for v in r)
        )
        for s, e in pieces:
            if s == end + 1:
                end = e
                continue
            if start >= 0:
                yield start, end
            start, end = s, e
    if start >= 0:
        yield start, end


# -- parsing -------------------------------------------------------------------------------


def _scanner(text: str, what: str) -> Scanner:
    return Scanner(text, lambda detail, position: InvalidIdSet(
        what=what, text=text, detail=detail, position=position))


def _parse_item(scanner: Scanner) -> tuple[IdRange, str]:
    """One `N | N-M | N-M:STEP`, and what may follow it (for the error text)."""
    scanner.skip_space()
    start = scanner.number()
    scanner.skip_space()
    if scanner.peek() == ":":
        raise scanner.fail("a step needs a range (N-M:STEP)")
    if scanner.peek() != "-":
        return IdRange(start, start), '",", "-"'
    scanner.pos += 1
    scanner.skip_space()
    end_pos = scanner.pos
    end = scanner.number()
    if end < start:
        raise scanner.fail(f"range end {end} is smaller than its start {start}", end_pos)
    scanner.skip_space()
    if scanner.peek() != ":":
        return IdRange(start, end), '",", ":"'
    scanner.pos += 1
    scanner.skip_space()
    step_pos = scanner.pos
    step = scanner.number()
    if not 0 < step <= end - start:
        raise scanner.fail(
            f"step {step} does not fit the range {start}-{end} (0 < STEP <= {end - start})",
            step_pos,
        )
    return IdRange.clipped(start, end, step), '","'


def _parse_ranges(scanner: Scanner) -> tuple[IdRange, ...]:
    items = []
    while True:
        item, may_follow = _parse_item(scanner)
        items.append(item)
        scanner.skip_space()
        if scanner.at_end():
            break
        if scanner.peek() != ",":
            raise scanner.fail(f"expected {may_follow} or the end")
        scanner.pos += 1
    ordered = sorted(items)
    for previous, current in pairwise(ordered):
        if current.start <= previous.end:
            raise RangesOverlap()
    return tuple(items)


def parse_ranges(text: str) -> tuple[IdRange, ...]:
    """Ranges in the user's order (`output-log cat --task=3-4,2` prints 3, 4, 2)."""
    return _parse_ranges(_scanner(text, "array"))


def parse_array(text: str) -> IdSet:
    """`N | N-M | N-M:STEP` joined by `,` (spec/cli.md §1.3); overlaps are refused."""
    return IdSet.from_ranges(parse_ranges(text))


# -- selectors -----------------------------------------------------------------------------


@frozen
class All:
    """Every existing ID (what "existing" means is up to the command)."""


@frozen
class Last:
    """The most recently created ID."""


@frozen
class Ids:
    ids: IdSet


Selector = All | Last | Ids


def parse_selector(text: str, *, allow_all: bool = True) -> Selector:
    """`all | last | ranges` (*L/A/R*); `allow_all=False` gives *L/R*."""
    word = text.strip()
    if word == "last":
        return Last()
    if word == "all":
        if allow_all:
            return All()
        raise InvalidIdSet(
            what="selector", text=text, detail="`all` is not accepted here", position=0
        )
    return Ids(IdSet.from_ranges(_parse_ranges(_scanner(text, "selector"))))


def parse_single(text: str) -> int:
    """*N*: one u32."""
    scanner = _scanner(text, "ID")
    scanner.skip_space()
    value = scanner.number()
    scanner.skip_space()
    if not scanner.at_end():
        raise scanner.fail("expected a single number")
    return value


