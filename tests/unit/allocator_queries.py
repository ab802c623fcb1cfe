"""Queries of allocations that only the allocator's tests ask (the node never needs them)."""

from __future__ import annotations

from hqshm.node.allocator import Allocation, Allocator, Taken


def taken_of(allocation: Allocation, name: str) -> Taken | None:
    """What the allocation holds of one pool."""
    return next((taken for taken in allocation.taken if taken.name == name), None)


def groups_of_items(alloc: Allocator, name: str, taken: Taken) -> set[int]:
    """The groups of the pool that the items taken lie in."""
    pool = alloc.indexed[name]
    return {pool.group_of[i] for i, _ in taken.items}
