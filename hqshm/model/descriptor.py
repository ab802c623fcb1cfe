"""A worker's resource descriptor: its pools checked together, and the coupling of their groups.

`hq worker start` and detection produce pools one by one (hqshm/model/resourcespec.py); here they
become one ``ResourceDescriptor`` as HQ checks them at worker start (no pool twice, none empty,
`cpus` present), with `--coupling` (spec/resources.md §3.3) parsed and resolved against them.
Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from hqshm.cluster.frozen import frozen
from hqshm.cluster.resources import (
    CouplingWeight,
    PoolKind,
    ResourceDescriptor,
    ResourcePool,
)
from hqshm.errors import UsageError, UserError
from hqshm.model.resourcespec import (
    InvalidResourceName,
    ResourceEmpty,
    check_resource_name,
    is_empty,
)
from hqshm.model.scanner import Scanner


class ResourceDefinedTwice(UserError):
    template: ClassVar[str] = "Resource {name} defined twice"


class CpusMissing(UserError):
    template: ClassVar[str] = "Resource 'cpus' is missing"


class InvalidCoupling(UsageError):
    """A `--coupling` value that does not parse; clap's wording, HQ's details (§3.3)."""

    template: ClassVar[str] = "error: invalid value '{text}' for '--coupling <COUPLING>': {detail}"


class CouplingResourceNotFound(UserError):
    template: ClassVar[str] = "Resource not found: {name}"


class CouplingSingleGroup(UserError):
    template: ClassVar[str] = "Resource '{name}' has only a single group"


class CouplingInvalidGroup(UserError):
    template: ClassVar[str] = "Invalid group id {group} for resource '{name}'"


class CouplingWithItself(UserError):
    """Ours: HQ's spec is silent; a group cannot prefer another group of its own pool."""

    template: ClassVar[str] = "Resource '{name}' cannot be coupled with itself"


class CouplingDefinedTwice(UserError):
    """Ours: two weights for one pair of groups would make the preference ambiguous."""

    template: ClassVar[str] = "Coupling {link} is defined more than once"


def build_descriptor(
    pools: Sequence[ResourcePool], coupling: Sequence[CouplingLink] = ()
) -> ResourceDescriptor:
    """A worker's pools sorted by name, as HQ checks them at worker start, and its coupling."""
    ordered = sorted(pools, key=lambda pool: pool.name)
    for index, pool in enumerate(ordered):
        if index and ordered[index - 1].name == pool.name:
            raise ResourceDefinedTwice(name=pool.name)
        if is_empty(pool):
            raise ResourceEmpty(name=pool.name)
    if not any(pool.name == "cpus" for pool in ordered):
        raise CpusMissing()
    return ResourceDescriptor(tuple(ordered), resolve_coupling(coupling, ordered))


# -- coupling (spec/resources.md §3.3, output.md §4.2) ----------------------------------------

DEFAULT_COUPLING_WEIGHT = 256
MAX_COUPLING_WEIGHT = 0xFFFF  # HQ's weights are positive 16-bit integers
# Characters that end a resource name or a group index of `--coupling`.
_COUPLING_STOPS = frozenset("[]:,=")


@frozen
class CouplingLink:
    """One `res[g]:res[g][=weight]` item as written, before the worker's pools are known."""

    resource1: str
    group1: int
    resource2: str
    group2: int
    weight: int = DEFAULT_COUPLING_WEIGHT

    def __str__(self) -> str:
        return f"{self.resource1}[{self.group1}]:{self.resource2}[{self.group2}]"


def parse_coupling(text: str) -> tuple[CouplingLink, ...]:
    """`--coupling cpus[0]:gpus[0],cpus[1]:gpus[1]=64` into links; names are checked later,
    against the pools the worker ends up with (detection runs after parsing)."""
    # HQ's details are bare ("Missing '['"), without the position other grammars add.
    scanner = Scanner(text, lambda detail, _where: InvalidCoupling(text=text, detail=detail))
    links = []
    while True:
        resource1, group1 = _coupling_end(scanner)
        scanner.skip_space()
        if scanner.peek() != ":":
            raise scanner.fail("Missing ':'")
        scanner.pos += 1
        resource2, group2 = _coupling_end(scanner)
        scanner.skip_space()
        weight = DEFAULT_COUPLING_WEIGHT
        if scanner.peek() == "=":
            scanner.pos += 1
            scanner.skip_space()
            token = _coupling_token(scanner)
            if not (token.isascii() and token.isdigit()) or not (
                0 < int(token) <= MAX_COUPLING_WEIGHT
            ):
                raise scanner.fail(f"Invalid weight: {token}")
            weight = int(token)
            scanner.skip_space()
        links.append(CouplingLink(resource1, group1, resource2, group2, weight))
        if scanner.at_end():
            return tuple(links)
        if scanner.peek() != ",":
            raise scanner.fail("Missing ','")
        scanner.pos += 1


def _coupling_end(scanner: Scanner) -> tuple[str, int]:
    """`name[index]`."""
    scanner.skip_space()
    try:
        name = check_resource_name(_coupling_token(scanner))
    except InvalidResourceName as exc:
        raise scanner.fail(str(exc)) from None
    if scanner.peek() != "[":
        raise scanner.fail("Missing '['")
    scanner.pos += 1
    token = _coupling_token(scanner).strip()
    if not (token.isascii() and token.isdigit()):
        raise scanner.fail(f"Invalid group index: {token}")
    if scanner.peek() != "]":
        raise scanner.fail("Missing ']'")
    scanner.pos += 1
    return name, int(token)


def _coupling_token(scanner: Scanner) -> str:
    begin = scanner.pos
    while not scanner.at_end() and scanner.peek() not in _COUPLING_STOPS:
        scanner.pos += 1
    return scanner.text[begin : scanner.pos].rstrip()


def resolve_coupling(
    links: Sequence[CouplingLink], pools: Sequence[ResourcePool]
) -> tuple[CouplingWeight, ...]:
    """Links as weights between indices of the name-sorted `pools` (HQ's descriptor form):
    each pair normalised to the smaller resource index first, then sorted."""
    index = {pool.name: i for i, pool in enumerate(pools)}
    weights: dict[tuple[int, int, int, int], int] = {}
    for link in links:
        for name in (link.resource1, link.resource2):
            if name not in index:
                raise CouplingResourceNotFound(name=name)
        if link.resource1 == link.resource2:
            raise CouplingWithItself(name=link.resource1)
        ends = []
        for name, group in ((link.resource1, link.group1), (link.resource2, link.group2)):
            pool = pools[index[name]]
            if pool.kind != PoolKind.GROUPS or len(pool.groups) < 2:
                raise CouplingSingleGroup(name=name)
            if group >= len(pool.groups):
                raise CouplingInvalidGroup(group=group, name=name)
            ends.append((index[name], group))
        (r1, g1), (r2, g2) = sorted(ends)
        if (r1, g1, r2, g2) in weights:
            raise CouplingDefinedTwice(link=str(link))
        weights[(r1, g1, r2, g2)] = link.weight
    return tuple(CouplingWeight(*key, weight) for key, weight in sorted(weights.items()))
