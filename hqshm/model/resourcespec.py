"""Worker resource definitions and task resource requests as users write them, and back.

Parsers (spec/resources.md §1-2, cli.md §4-5) turn `--cpus`/`--resource` values into the values
of cluster/resources.py, and ``format_request`` gives a request back in HQ's words (a task's
`HQ_RESOURCE_REQUEST_*`). Everything here is pure and on the `hq submit` path, so it imports
nothing heavy. A worker's pools are checked together in hqshm/model/descriptor.py; the CLI's
display forms are in hqshm/cli/resourceview.py.

A range pool keeps only `start`/`end` (its `groups` are empty), so that `range(1-1000000)` is
two integers until a node allocates from it; code here reads ranges through `start`/`end`.

Syntax errors subclass `UsageError` (exit code 2) because HQ parses these values in clap's value
parsers; errors found when the parsed values are checked together are plain `UserError`s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from hqshm.cluster.resources import (
    FRACTIONS,
    Policy,
    PoolKind,
    RequestVariant,
    ResourceEntry,
    ResourcePool,
    ResourceRequest,
    format_amount,
)
from hqshm.errors import UsageError, UserError
from hqshm.model import limits
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
        while self.pos < len(self.text) and not ends_bare_word(self.text[self.pos]):
            self.pos += 1
        if self.pos == begin:
            raise self.fail("expected an item")
        return self.text[begin : self.pos]


def ends_bare_word(char: str) -> bool:
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
    if is_empty(pool):
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


def item_count(pool: ResourcePool) -> int:
    if pool.kind == PoolKind.RANGE:
        return pool.end - pool.start + 1
    return sum(len(group) for group in pool.groups)


def is_empty(pool: ResourcePool) -> bool:
    return pool.size <= 0 if pool.kind == PoolKind.SUM else item_count(pool) <= 0




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


def check_request(request: ResourceRequest) -> None:
    """A task's request as the server receives it (``limits.LimitError``): one variant at
    least, or the task could never be placed and would wait forever; every amount positive
    and at most U32_MAX units, as the submit builder makes them."""
    if not request.variants:
        raise limits.LimitError("a resource request needs at least one variant")
    limits.check_count("resource request variants", len(request.variants), limits.MAX_VARIANTS)
    for variant in request.variants:
        _check_variant(variant)


def _check_variant(variant: RequestVariant) -> None:
    limits.check_count("resources in one request", len(variant.entries),
                       limits.MAX_RESOURCE_ENTRIES)
    limits.check_int("a number of nodes", variant.n_nodes, 0, limits.U32_MAX)
    limits.check_seconds("a time request", variant.min_time)
    limits.check_int("a resource weight", variant.weight, 1, limits.U32_MAX * FRACTIONS)
    for entry in variant.entries:
        limits.check_text("a resource name", entry.name)
        limits.check_choice("allocation policy", entry.policy, (int(p) for p in Policy))
        if not entry.all:
            limits.check_int(f"the amount of {entry.name}", entry.amount, 1,
                             limits.U32_MAX * FRACTIONS)


# -- environment of a task (spec/jobs.md §6) ---------------------------------------------------


def format_request(entry: ResourceEntry) -> str:
    """`1 compact`, `2 scatter`, `1.1 compact`, `all` (also `HQ_RESOURCE_REQUEST_<name>`)."""
    if entry.all:
        return "all"
    return f"{format_amount(entry.amount)} {POLICY_WORDS[entry.policy]}"


def env_name(resource_name: str) -> str:
    """The `<name>` of `HQ_RESOURCE_*_<name>`: `gpus/nvidia` → `gpus_nvidia`."""
    return "".join(char if char.isascii() and char.isalnum() else "_" for char in resource_name)
