"""Which tasks a worker with a minimal utilization takes (`--min-utilization`).

Such a worker only receives a set of tasks that, with what it already runs, uses at least
``min_utilization`` of its CPUs (spec/resources.md §2.2). Among the sets that qualify it takes the
one of highest value, the value of a task being its CPUs times its request's weight, so heavier
work wins and the CPUs are used well. For the handful of groups a worker sees this is a small
bounded knapsack over CPU amounts, solved exactly by dynamic programming in units of the
amounts' greatest common divisor. Pure: no I/O.
"""

from __future__ import annotations

from math import gcd

from .frozen import frozen


@frozen
class Candidate:
    """Up to ``count`` tasks of one group (and variant) needing ``cpus`` each."""

    index: int  # the caller's handle for this candidate
    cpus: int  # fixed point
    weight: int  # fixed point
    count: int


def choose(candidates: list[Candidate], free: int, used: int, minimum: int) -> dict[int, int]:
    """How many tasks of each candidate to start: {index: count}, or {} if no set qualifies.

    ``free``: CPUs free now; ``used``: CPUs already in use; ``minimum``: CPUs that must be in
    use afterwards (``min_utilization`` x total). All fixed point.
    """
    usable = [c for c in candidates if c.count > 0 and 0 < c.cpus <= free]
    if not usable:
        return {}
    unit = 0
    for c in usable:
        unit = gcd(unit, c.cpus)
    capacity = free // unit
    # best[u] = (value, choice) of the best set using exactly u units; choice as counts
    best: list[tuple[int, tuple[int, ...]] | None] = [None] * (capacity + 1)
    best[0] = (0, (0,) * len(usable))
    for i, c in enumerate(usable):
        size = c.cpus // unit
        value = c.cpus * c.weight
        for _ in range(min(c.count, capacity // size)):
            for u in range(capacity, size - 1, -1):
                prev = best[u - size]
                if prev is None or prev[1][i] >= c.count:
                    continue
                candidate = (prev[0] + value, prev[1][:i] + (prev[1][i] + 1,) + prev[1][i + 1:])
                if best[u] is None or candidate[0] > best[u][0]:  # type: ignore[index]
                    best[u] = candidate
    winner: tuple[int, tuple[int, ...]] | None = None
    for u, entry in enumerate(best):
        if entry is None or u == 0 or used + u * unit < minimum:
            continue
        if winner is None or entry[0] > winner[0]:
            winner = entry
    if winner is None:
        return {}
    return {usable[i].index: n for i, n in enumerate(winner[1]) if n}
