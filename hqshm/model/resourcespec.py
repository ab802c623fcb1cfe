"""Worker resource definitions and task resource requests as users write them, and back.

Parsers (spec/resources.md §1-2, cli.md §4-5) turn `--cpus`/`--resource` values into the values
of cluster/resources.py; formatters give HQ's display forms (output.md §1.5, §3.4, §4.2, §4.6).
Everything here is pure and on the `hq submit` path, so it imports nothing heavy.

A range pool keeps only `start`/`end` (its `groups` are empty), so that `range(1-1000000)` is
two integers until a node allocates from it; code here reads ranges through `start`/`end`.

Syntax errors subclass `UsageError` (exit code 2) because HQ parses these values in clap's value
parsers; errors found when the parsed values are checked together are plain `UserError`s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hqshm.cli import formats
from hqshm.cluster.resources import (
    FRACTIONS,
    CouplingWeight,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceDescriptor,
    ResourceEntry,
    ResourcePool,
    ResourceRequest,
)
from hqshm.errors import UsageError, UserError
from hqshm.model.scanner import Scanner

FRACTION_DIGITS = 4
# `NxM` is expanded into labels; beyond this a typo would exhaust memory (use `range(...)`).
MAX_LISTED_ITEMS = 1_000_000

POLICY_WORDS: dict[int, str] = {
    Policy.COMPACT: "compact",
    Policy.FORCE_COMPACT: "compact!",
    Policy.TIGHT: "tight",
    Policy.FORCE_TIGHT: "tight!",
    Policy.SCATTER: "scatter",
}
_POLICY_BY_WORD = {word: Policy(policy) for policy, word in POLICY_WORDS.items()}
# Names of HQ's `AllocationRequest` variants in JSON (output.md §4.6).
_POLICY_JSON = {
    Policy.COMPACT: "Compact",
    Policy.FORCE_COMPACT: "ForceCompact",
    Policy.TIGHT: "Tight",
    Policy.FORCE_TIGHT: "ForceTight",
    Policy.SCATTER: "Scatter",
}
_KIND_JSON = {
    PoolKind.LIST: "list",
    PoolKind.RANGE: "range",
    PoolKind.GROUPS: "groups",
    PoolKind.SUM: "sum",
}
# Characters that end a bare list item (spec/resources.md §1); whitespace ends it too.
_BARE_STOPS = frozenset(',[]"')


# -- errors (spec/resources.md §1-2; texts without a spec quote are ours) ----------------------


class InvalidResourceName(UsageError):
    template: ClassVar[str] = 'Invalid resource name "{name}": {detail}'


class InvalidResourceArgument(UsageError):
    template: ClassVar[str] = 'Invalid resource "{text}": expected <NAME>=<VALUE>'


class InvalidResourceDefinition(UsageError):
    template: ClassVar[str] = "Invalid resource definition for {name}: {detail}"


class ListItemsNotUnique(UsageError):
    template: ClassVar[str] = "List items have to be unique"


class GroupItemsNotUnique(UsageError):
    template: ClassVar[str] = "Group items have to be unique"


class EmptyList(UsageError):
    template: ClassVar[str] = "List has to contain at least a single element"


class EmptyGroup(UsageError):
    template: ClassVar[str] = "Each group has to contain at least a single element"


class CpusWithoutIdentity(UsageError):
    template: ClassVar[str] = (
        "Resource kind `sum` cannot be used with CPUs. CPUs must have identity"
    )


class ResourceEmpty(UserError):
    template: ClassVar[str] = "Resource {name} is empty"


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


class InvalidResourceRequest(UsageError):
    template: ClassVar[str] = 'Invalid resource request "{text}": {detail}'


class PrecisionExceeded(UsageError):
    template: ClassVar[str] = "Resource precision exceeded"


class ZeroRequest(UserError):
    template: ClassVar[str] = "Zero resources cannot be requested"


class RequestDefinedTwice(UserError):
    template: ClassVar[str] = "Resource '{name}' defined more than once"


class CpusRequestedTwice(UserError):
    """`hq submit --cpus` with `--resource cpus=...` (cli.md §5.2)."""

    template: ClassVar[str] = "--cpus and --resource cpus=... cannot be combined"


# -- scanning --------------------------------------------------------------------------------


class _Scanner(Scanner):
    """The resource grammar's tokens on top of the shared scanner."""

    __slots__ = ()

    def __init__(self, text: str, error: Callable[[str], UserError]) -> None:
        super().__init__(text, lambda detail, where: error(f"{detail} at position {where}"))

    def expect(self, char: str) -> None:
        self.skip_space()
        if self.peek() != char:
            raise self.fail(f"expected `{char}`")
        self.pos += 1

    def keyword(self, word: str) -> bool:
        """Consume `word(`, spaces allowed before the parenthesis."""
        if not self.text.startswith(word, self.pos):
            return False
        after = self.pos + len(word)
        while after < len(self.text) and self.text[after].isspace():
            after += 1
        if after >= len(self.text) or self.text[after] != "(":
            return False
        self.pos = after + 1
        return True

    def amount(self) -> int:
        """`INT[.DIGITS]` in fixed point; more than four fractional digits are HQ's error."""
        whole = self.number()
        if self.peek() != ".":
            return whole * FRACTIONS
        self.pos += 1
        begin = self.pos
        while "0" <= self.peek() <= "9":
            self.pos += 1
        digits = self.text[begin : self.pos]
        if not digits:
            raise self.fail("expected digits after `.`")
        if len(digits) > FRACTION_DIGITS:
            raise PrecisionExceeded()
        return whole * FRACTIONS + int(digits.ljust(FRACTION_DIGITS, "0"))

    def label(self) -> str:
        """A bare word or a double-quoted string (which may hold spaces, `,`, `[` and `]`)."""
        if self.peek() == '"':
            end = self.text.find('"', self.pos + 1)
            if end < 0:
                raise self.fail("unterminated quoted string")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        begin = self.pos
        while self.pos < len(self.text) and not _ends_bare_word(self.text[self.pos]):
            self.pos += 1
        if self.pos == begin:
            raise self.fail("expected an item")
        return self.text[begin : self.pos]


def _ends_bare_word(char: str) -> bool:
    return char in _BARE_STOPS or char.isspace()


# -- worker resource definitions (spec/resources.md §1) --------------------------------------


def check_resource_name(name: str) -> str:
    """An ASCII letter, then ASCII letters, digits or `/` (`gpus/nvidia`)."""
    if not name:
        raise InvalidResourceName(name=name, detail="the name is empty")
    if not (name[0].isascii() and name[0].isalpha()):
        raise InvalidResourceName(name=name, detail="it has to start with an ASCII letter")
    for position, char in enumerate(name):
        if not (char.isascii() and (char.isalnum() or char == "/")):
            raise InvalidResourceName(
                name=name,
                detail=f"character `{char}` at position {position} is not an ASCII letter, "
                "digit or `/`",
            )
    return name


def parse_resource_arg(arg: str) -> tuple[str, str]:
    """`NAME=VALUE` of `--resource`, split at the first `=`, the name checked."""
    name, sep, value = arg.partition("=")
    if not sep:
        raise InvalidResourceArgument(text=arg)
    return check_resource_name(name), value


def parse_pool(name: str, text: str) -> ResourcePool:
    """The definition of `--resource NAME=DEF` on a worker."""
    return _parse_definition(name, text, bare_count=False)


def parse_cpus(text: str) -> ResourcePool:
    """`--cpus`: a definition of `cpus` where a bare `N` also means CPUs `0..N-1`."""
    return _parse_definition("cpus", text, bare_count=True)


def _parse_definition(name: str, text: str, bare_count: bool) -> ResourcePool:
    scanner = _Scanner(text, lambda detail: InvalidResourceDefinition(name=name, detail=detail))
    scanner.skip_space()
    if scanner.peek() == "[":
        pool = _list_or_groups(scanner, name)
    elif scanner.keyword("range"):
        pool = _range(scanner, name)
    elif scanner.keyword("sum"):
        scanner.skip_space()
        size = scanner.amount()
        scanner.expect(")")
        pool = ResourcePool(name, PoolKind.SUM, size=size)
    elif "0" <= scanner.peek() <= "9":
        pool = _counted(scanner, name, bare_count)
    else:
        shapes = "`[a,b,..]`, `[[a,b],[c,d],..]`, `NxM`, `range(A-B)` or `sum(AMOUNT)`"
        raise scanner.fail(f"expected {'a number of CPUs, ' if bare_count else ''}{shapes}")
    scanner.skip_space()
    if not scanner.at_end():
        raise scanner.fail("unexpected text after the definition")
    if name == "cpus" and pool.kind == PoolKind.SUM:
        raise CpusWithoutIdentity()
    if _is_empty(pool):
        raise ResourceEmpty(name=name)
    return pool


def _list_or_groups(scanner: _Scanner, name: str) -> ResourcePool:
    scanner.pos += 1  # the opening `[`
    scanner.skip_space()
    if scanner.peek() != "[":
        labels = _items(scanner)
        if not labels:
            raise EmptyList()
        _check_unique(labels, ListItemsNotUnique)
        return ResourcePool(name, PoolKind.LIST, (labels,))
    groups: list[tuple[str, ...]] = []
    while True:
        scanner.expect("[")
        groups.append(_items(scanner))
        scanner.skip_space()
        if scanner.peek() == "]":
            scanner.pos += 1
            break
        if scanner.peek() != ",":
            raise scanner.fail("expected `,` or `]`")
        scanner.pos += 1
    if any(not group for group in groups):
        raise EmptyGroup()
    if len(groups) == 1:
        _check_unique(groups[0], ListItemsNotUnique)
        return ResourcePool(name, PoolKind.LIST, (groups[0],))
    _check_unique(tuple(label for group in groups for label in group), GroupItemsNotUnique)
    return ResourcePool(name, PoolKind.GROUPS, tuple(groups))


def _items(scanner: _Scanner) -> tuple[str, ...]:
    """Items up to and including the closing `]` (the opening one is consumed)."""
    scanner.skip_space()
    if scanner.peek() == "]":
        scanner.pos += 1
        return ()
    items = []
    while True:
        scanner.skip_space()
        items.append(scanner.label())
        scanner.skip_space()
        if scanner.peek() == "]":
            scanner.pos += 1
            return tuple(items)
        if scanner.peek() != ",":
            raise scanner.fail("expected `,` or `]`")
        scanner.pos += 1


def _check_unique(labels: tuple[str, ...], error: type[UserError]) -> None:
    if len(set(labels)) != len(labels):
        raise error()


def _range(scanner: _Scanner, name: str) -> ResourcePool:
    scanner.skip_space()
    start = scanner.number()
    scanner.expect("-")
    scanner.skip_space()
    end_pos = scanner.pos
    end = scanner.number()
    if start > end:
        raise scanner.fail(f"range start {start} is bigger than its end {end}", end_pos)
    scanner.expect(")")
    return ResourcePool(name, PoolKind.RANGE, start=start, end=end)


def _counted(scanner: _Scanner, name: str, bare_count: bool) -> ResourcePool:
    """`NxM` (N groups of M labels from 0; one group is a range), or `N` for CPUs."""
    count = scanner.number()
    if scanner.peek() != "x":
        if not bare_count:
            raise scanner.fail("expected `x` of NxM (a bare count is accepted only by --cpus)")
        if count == 0:
            raise ResourceEmpty(name=name)
        return ResourcePool(name, PoolKind.RANGE, start=0, end=count - 1)
    scanner.pos += 1
    size = scanner.number()
    if count == 0 or size == 0:
        raise ResourceEmpty(name=name)
    if count == 1:
        return ResourcePool(name, PoolKind.RANGE, start=0, end=size - 1)
    if count * size > MAX_LISTED_ITEMS:
        raise InvalidResourceDefinition(
            name=name,
            detail=f"{count}x{size} has more than {MAX_LISTED_ITEMS} items; use range(A-B)",
        )
    groups = tuple(
        tuple(str(i) for i in range(group * size, (group + 1) * size)) for group in range(count)
    )
    return ResourcePool(name, PoolKind.GROUPS, groups)


def _item_count(pool: ResourcePool) -> int:
    if pool.kind == PoolKind.RANGE:
        return pool.end - pool.start + 1
    return sum(len(group) for group in pool.groups)


def _is_empty(pool: ResourcePool) -> bool:
    return pool.size <= 0 if pool.kind == PoolKind.SUM else _item_count(pool) <= 0


def build_descriptor(
    pools: Sequence[ResourcePool], coupling: Sequence[CouplingLink] = ()
) -> ResourceDescriptor:
    """A worker's pools sorted by name, as HQ checks them at worker start, and its coupling."""
    ordered = sorted(pools, key=lambda pool: pool.name)
    for index, pool in enumerate(ordered):
        if index and ordered[index - 1].name == pool.name:
            raise ResourceDefinedTwice(name=pool.name)
        if _is_empty(pool):
            raise ResourceEmpty(name=pool.name)
    if not any(pool.name == "cpus" for pool in ordered):
        raise CpusMissing()
    return ResourceDescriptor(tuple(ordered), resolve_coupling(coupling, ordered))


# -- coupling (spec/resources.md §3.3, output.md §4.2) ----------------------------------------

DEFAULT_COUPLING_WEIGHT = 256
MAX_COUPLING_WEIGHT = 0xFFFF  # HQ's weights are positive 16-bit integers
# Characters that end a resource name or a group index of `--coupling`.
_COUPLING_STOPS = frozenset("[]:,=")


@dataclass(frozen=True, slots=True)
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


# -- task resource requests (spec/resources.md §2) -------------------------------------------


def parse_request_amount(text: str, name: str = "cpus") -> ResourceEntry:
    """`all` or `AMOUNT [POLICY]` (policy compact by default) of one requested resource."""
    if text.strip() == "all":
        return ResourceEntry(name, 0, Policy.COMPACT, all=True)
    scanner = _Scanner(text, lambda detail: InvalidResourceRequest(text=text, detail=detail))
    scanner.skip_space()
    amount = scanner.amount()
    policy = Policy.COMPACT
    if not scanner.at_end() and not scanner.peek().isspace():
        raise scanner.fail(f"unexpected `{scanner.peek()}` (expected a space and a policy)")
    scanner.skip_space()
    if not scanner.at_end():
        word_pos = scanner.pos
        word = text[word_pos:].rstrip()
        if word not in _POLICY_BY_WORD:
            raise scanner.fail(
                f"unknown policy `{word}` (expected {', '.join(_POLICY_BY_WORD)})", word_pos
            )
        policy = _POLICY_BY_WORD[word]
    if amount == 0:
        raise ZeroRequest()
    return ResourceEntry(name, amount, policy)


def parse_submit_resources(
    cpus: str | None,
    resources: Sequence[str],
    *,
    min_time: float = 0.0,
    weight: int = FRACTIONS,
) -> ResourceRequest:
    """The one-variant request of `hq submit --cpus X --resource a=b ...`.

    Without `--cpus` and `--resource cpus=...` the task asks for `cpus=1 compact`, as every
    CLI task does in HQ; the implicit `cpus` entry comes last, as in HQ's job detail.
    """
    entries: list[ResourceEntry] = []
    seen: set[str] = set()
    for arg in resources:
        name, value = parse_resource_arg(arg)
        if name == "cpus" and cpus is not None:
            raise CpusRequestedTwice()
        if name in seen:
            raise RequestDefinedTwice(name=name)
        seen.add(name)
        entries.append(parse_request_amount(value, name))
    if "cpus" not in seen:
        cpu_entry = ResourceEntry("cpus", FRACTIONS, Policy.COMPACT)
        entries.append(cpu_entry if cpus is None else parse_request_amount(cpus, "cpus"))
    return ResourceRequest((RequestVariant(tuple(entries), 0, min_time, weight),))


# -- display (spec/output.md §1.5, §3.4) -----------------------------------------------------


def format_request(entry: ResourceEntry) -> str:
    """`1 compact`, `2 scatter`, `1.1 compact`, `all` (also `HQ_RESOURCE_REQUEST_<name>`)."""
    if entry.all:
        return "all"
    return f"{formats.format_amount(entry.amount)} {POLICY_WORDS[entry.policy]}"


def request_lines(request: ResourceRequest) -> str:
    """The `Resources` cell of job and task info: one block per variant."""
    return formats.format_request_variants(
        [
            formats.format_request(
                [
                    (entry.name, None if entry.all else entry.amount, POLICY_WORDS[entry.policy])
                    for entry in variant.entries
                ],
                weight=variant.weight,
                n_nodes=variant.n_nodes,
            )
            for variant in request.variants
        ]
    )


def pool_summary(pool: ResourcePool) -> str:
    """Item count, group shape (`4x2`, `1x1 1x2 1x3`), amount, or memory for `mem`."""
    if pool.kind == PoolKind.SUM:
        if pool.name == "mem":
            return formats.format_mem_mib(pool.size / FRACTIONS)
        return formats.format_amount(pool.size)
    if pool.kind == PoolKind.GROUPS:
        return formats.format_group_sizes([len(group) for group in pool.groups])
    return str(_item_count(pool))


def descriptor_summary(desc: ResourceDescriptor, multiline: bool) -> str:
    """`cpus 4x2; fairy 10001000` (worker list) or `cpus: 4x2\\nfairy: 10001000` (worker
    info, hwdetect); coupled resources get ` [coupled]`."""
    coupled = {
        desc.pools[index].name
        for weight in desc.coupling
        for index in (weight.resource1_idx, weight.resource2_idx)
        if 0 <= index < len(desc.pools)
    }
    return formats.format_worker_resources(
        [(pool.name, pool_summary(pool)) for pool in desc.pools], multiline, coupled
    )


def pool_full_description(pool: ResourcePool) -> str:
    """hwdetect's "Full Description" of a pool, which `parse_pool` reads back.

    HQ prints labels bare; a label that a bare word cannot hold is quoted here so that the
    text stays a valid definition.
    """
    if pool.kind == PoolKind.SUM:
        return f"sum({formats.format_amount(pool.size)})"
    if pool.kind == PoolKind.RANGE:
        if pool.start == pool.end:
            return f"[{pool.start}]"
        return f"range({pool.start}-{pool.end})"
    if pool.kind == PoolKind.GROUPS:
        return "[" + ",".join(_label_list(group) for group in pool.groups) + "]"
    return _label_list(tuple(label for group in pool.groups for label in group))


def _label_list(labels: Sequence[str]) -> str:
    return "[" + ",".join(_quoted(label) for label in labels) + "]"


def _quoted(label: str) -> str:
    if label and not any(_ends_bare_word(char) for char in label):
        return label
    return f'"{label}"'


# -- JSON (spec/output.md §4.2, §4.6) ----------------------------------------------------------


def descriptor_json(desc: ResourceDescriptor) -> dict[str, Any]:
    """The resource descriptor of `worker list/info/start` and `worker hwdetect` in JSON."""
    return {
        "resources": [_pool_json(pool) for pool in desc.pools],
        "coupling": {
            "weights": [
                {
                    "resource1_idx": weight.resource1_idx,
                    "group1_idx": weight.group1_idx,
                    "resource2_idx": weight.resource2_idx,
                    "group2_idx": weight.group2_idx,
                    "weight": weight.weight,
                }
                for weight in desc.coupling
            ]
        },
    }


def _pool_json(pool: ResourcePool) -> dict[str, Any]:
    item: dict[str, Any] = {"name": pool.name, "kind": _KIND_JSON[PoolKind(pool.kind)]}
    if pool.kind == PoolKind.LIST:
        item["values"] = [label for group in pool.groups for label in group]
    elif pool.kind == PoolKind.RANGE:
        item["start"] = pool.start
        item["end"] = pool.end
    elif pool.kind == PoolKind.GROUPS:
        item["groups"] = [list(group) for group in pool.groups]
    else:
        item["size"] = pool.size
    return item


def request_json(request: ResourceRequest) -> list[dict[str, Any]]:
    """The `resources` list of a task description in `job info` JSON, one item per variant."""
    return [
        {
            "n_nodes": variant.n_nodes,
            "min_time": float(variant.min_time),
            "weight": variant.weight,
            "resources": [
                {
                    "resource": entry.name,
                    "request": "All" if entry.all else {_POLICY_JSON[entry.policy]: entry.amount},
                }
                for entry in variant.entries
            ],
        }
        for variant in request.variants
    ]


def env_name(resource_name: str) -> str:
    """The `<name>` of `HQ_RESOURCE_*_<name>`: `gpus/nvidia` → `gpus_nvidia`."""
    return "".join(char if char.isascii() and char.isalnum() else "_" for char in resource_name)
