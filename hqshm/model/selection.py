"""Id selections as they travel: ranges of ids, and the checks every peer's ranges pass.

Apart from hqshm/model/submission.py so that requests that only name jobs and tasks (and the
`hq` commands that send them) need not import the submission model.
"""

from __future__ import annotations

from hqshm.model import limits
from hqshm.model.scanner import U32_MAX

Ranges = tuple[tuple[int, int, int], ...]  # (start, end inclusive, step)


def check_ranges(ranges: Ranges | None) -> None:
    """Ranges as a peer sent them: ids 0..2^32-1, start <= end, a step of at least 1; anything
    else raises ValueError, which the codec turns into a refused message (never a crash in the
    code that walks them). Nothing is expanded here, whatever the ranges span."""
    if ranges is None:
        return
    limits.check_count("id ranges", len(ranges), limits.MAX_RANGES)
    for start, end, step in ranges:
        if step < 1 or not 0 <= start <= end <= U32_MAX:
            raise limits.LimitError(
                f"invalid id range {start}-{end}:{step} (ids are 0 to {U32_MAX}, "
                "the start not after the end, the step at least 1)")


def check_selection(ranges: Ranges | None) -> None:
    """Ranges that select existing ids: checked, and apart from each other, as `hq` parses
    them (model/arrays.py refuses overlaps), so that the server matches each existing id
    against one range at most, and its work follows the ids that exist."""
    check_ranges(ranges)
    previous_end = -1
    for start, end, step in sorted(ranges or ()):
        if start <= previous_end:
            raise limits.LimitError(f"id ranges overlap at {start}-{end}:{step}")
        previous_end = end


def check_id(what: str, value: int) -> None:
    limits.check_int(what, value, 0, U32_MAX)
