"""``ResourceRequest``: what one variant of a task asks for, as HQ's Python API spells it."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from hqshm.cluster.resources import RequestVariant
from hqshm.model import submit

Amount = int | float | str  # whole units, a fraction (1/10000 units), or "4 compact!"


class ResourceRequest:
    """One alternative request of a task.

    ``cpus`` is stored under ``resources["cpus"]`` and wins over a ``"cpus"`` key given in
    ``resources``, as in HQ. ``min_time`` is kept in seconds (HQ's attribute).
    """

    def __init__(self, *, n_nodes: int = 0, cpus: Amount = 1,
                 resources: Mapping[str, Amount] | None = None,
                 min_time: datetime.timedelta | None = None) -> None:
        self.n_nodes = n_nodes
        others = {name: amount for name, amount in (resources or {}).items() if name != "cpus"}
        self.resources: dict[str, Amount] = {"cpus": cpus, **others}
        self.min_time: float | None = min_time.total_seconds() if min_time else None

    def variant(self) -> RequestVariant:
        """Through the submit builder, so amounts and their errors are those of `hq submit`.

        A multi-node task takes whole workers: the default ``cpus=1`` is dropped for it (HQ
        does the same), anything else requested with it is refused by the builder.
        """
        amounts = dict(self.resources)
        if self.n_nodes and amounts.get("cpus") == 1:
            del amounts["cpus"]
        entries = tuple(submit.resource_entry(name, amount) for name, amount in amounts.items())
        return submit.request_variant(entries, n_nodes=self.n_nodes,
                                      time_request=self.min_time or 0.0)

    def __repr__(self) -> str:
        return (f"ResourceRequest(n_nodes={self.n_nodes}, resources={self.resources}, "
                f"min_time={self.min_time})")


def request_variants(
    resources: ResourceRequest | Sequence[ResourceRequest] | None,
) -> tuple[RequestVariant, ...]:
    """A task's variants in order of preference; None: the builder's default (1 CPU)."""
    if resources is None:
        return ()
    if isinstance(resources, ResourceRequest):
        return (resources.variant(),)
    return tuple(request.variant() for request in resources)
