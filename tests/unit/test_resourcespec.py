from __future__ import annotations

import subprocess
import sys
from itertools import pairwise

import pytest
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
from hypothesis import given
from hypothesis import strategies as st

from hqshm.cli.commands.submit import parse_resources
from hqshm.cli.resourceview import (
    descriptor_json,
    descriptor_summary,
    pool_full_description,
    pool_summary,
    request_json,
    request_lines,
)
from hqshm.errors import UsageError, UserError
from hqshm.model import submit
from hqshm.model.descriptor import CpusMissing, ResourceDefinedTwice, build_descriptor
from hqshm.model.resourcespec import (
    CpusRequestedTwice,
    CpusWithoutIdentity,
    EmptyGroup,
    EmptyList,
    GroupItemsNotUnique,
    InvalidResourceArgument,
    InvalidResourceDefinition,
    InvalidResourceName,
    InvalidResourceRequest,
    ListItemsNotUnique,
    PrecisionExceeded,
    RequestDefinedTwice,
    ResourceEmpty,
    ZeroRequest,
    env_name,
    format_request,
    parse_cpus,
    parse_pool,
    parse_request_amount,
    parse_resource_arg,
)
from hqshm.model.scanner import U32_MAX


def listed(name: str, *labels: str) -> ResourcePool:
    return ResourcePool(name, PoolKind.LIST, (labels,))


def grouped(name: str, *groups: tuple[str, ...]) -> ResourcePool:
    return ResourcePool(name, PoolKind.GROUPS, groups)


def ranged(name: str, start: int, end: int) -> ResourcePool:
    return ResourcePool(name, PoolKind.RANGE, start=start, end=end)


def summed(name: str, size: int) -> ResourcePool:
    return ResourcePool(name, PoolKind.SUM, size=size)


def labels(*numbers: int) -> tuple[str, ...]:
    return tuple(str(n) for n in numbers)


def worker(cpus: str, *resources: str) -> ResourceDescriptor:
    """The descriptor of `hq worker start --cpus <cpus> --resource <r>...`."""
    return build_descriptor(
        [parse_cpus(cpus), *(parse_pool(*parse_resource_arg(arg)) for arg in resources)]
    )


# -- definitions (spec/resources.md §1) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pool"),
    [
        ("[a, b, c]", listed("foo", "a", "b", "c")),
        ('["foo [,]", bar, "my resource"]', listed("foo", "foo [,]", "bar", "my resource")),
        ("  [ 1 ,3,\t5 , 2 ]  ", listed("foo", "1", "3", "5", "2")),
        ('[""]', listed("foo", "")),
        ("[a]", listed("foo", "a")),
        ("range(1-12)", ranged("foo", 1, 12)),
        ("range( 3 - 3 )", ranged("foo", 3, 3)),
        ("range(1-1000000)", ranged("foo", 1, 1_000_000)),
        ("range(1_000-2_000)", ranged("foo", 1000, 2000)),
        ("[[0,1,2],[3,4,5]]", grouped("foo", labels(0, 1, 2), labels(3, 4, 5))),
        ("[ [a, b] , [c] ]", grouped("foo", ("a", "b"), ("c",))),
        ("[[0,1]]", listed("foo", "0", "1")),
        ("2x3", grouped("foo", labels(0, 1, 2), labels(3, 4, 5))),
        ("3x1", grouped("foo", ("0",), ("1",), ("2",))),
        ("1x4", ranged("foo", 0, 3)),
        ("sum(1000)", summed("foo", 1000 * FRACTIONS)),
        ("sum(0.5)", summed("foo", 5000)),
        ("sum(1000_1000)", summed("foo", 10_001_000 * FRACTIONS)),
        ("sum(15872.1234)", summed("foo", 158_721_234)),
        ("sum (2.2)", summed("foo", 22_000)),
    ],
)
def test_parse_pool(text: str, pool: ResourcePool) -> None:
    assert parse_pool("foo", text) == pool


def test_huge_range_is_not_expanded() -> None:
    pool = parse_pool("potato", "range(0-4294967295)")
    assert pool.groups == ()
    assert (pool.start, pool.end) == (0, U32_MAX)
    assert pool_summary(pool) == "4294967296"


@pytest.mark.parametrize(
    ("text", "pool"),
    [
        ("10", ranged("cpus", 0, 9)),
        ("1_6", ranged("cpus", 0, 15)),
        ("4x5", grouped("cpus", *(labels(*range(g * 5, g * 5 + 5)) for g in range(4)))),
        ("1x8", ranged("cpus", 0, 7)),
        ("[1]", listed("cpus", "1")),
        ("[[1,2],[11,12]]", grouped("cpus", labels(1, 2), labels(11, 12))),
        ("range(2-5)", ranged("cpus", 2, 5)),
    ],
)
def test_parse_cpus(text: str, pool: ResourcePool) -> None:
    assert parse_cpus(text) == pool


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("[a, b, a]", ListItemsNotUnique, "List items have to be unique"),
        ("[[a, a]]", ListItemsNotUnique, "List items have to be unique"),
        ("[[0,1],[1,2]]", GroupItemsNotUnique, "Group items have to be unique"),
        ("[]", EmptyList, "List has to contain at least a single element"),
        ("[ ]", EmptyList, "List has to contain at least a single element"),
        ("[[1],[]]", EmptyGroup, "Each group has to contain at least a single element"),
        ("[[]]", EmptyGroup, "Each group has to contain at least a single element"),
        ("sum(0.12345)", PrecisionExceeded, "Resource precision exceeded"),
        ("sum(0)", ResourceEmpty, "Resource foo is empty"),
        ("0x3", ResourceEmpty, "Resource foo is empty"),
        ("3x0", ResourceEmpty, "Resource foo is empty"),
        (
            "range(12-1)",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: range start 12 is bigger than its end 1 "
            "at position 9",
        ),
        (
            "4",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `x` of NxM (a bare count is accepted "
            "only by --cpus) at position 1",
        ),
        (
            "",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `[a,b,..]`, `[[a,b],[c,d],..]`, "
            "`NxM`, `range(A-B)` or `sum(AMOUNT)` at position 0",
        ),
        (
            "ranges(1-2)",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `[a,b,..]`, `[[a,b],[c,d],..]`, "
            "`NxM`, `range(A-B)` or `sum(AMOUNT)` at position 0",
        ),
        (
            "[a b]",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `,` or `]` at position 3",
        ),
        (
            "[a,]",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected an item at position 3",
        ),
        (
            "[a",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `,` or `]` at position 2",
        ),
        (
            '["a',
            InvalidResourceDefinition,
            "Invalid resource definition for foo: unterminated quoted string at position 1",
        ),
        (
            "[[1],2]",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `[` at position 5",
        ),
        (
            "[a] x",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: "
            "unexpected text after the definition at position 4",
        ),
        (
            "range(1-)",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected a number at position 8",
        ),
        (
            "range(1 2)",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `-` at position 8",
        ),
        (
            "sum(1",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected `)` at position 5",
        ),
        (
            "sum(1.)",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected digits after `.` at position 6",
        ),
        (
            "sum(.5)",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: expected a number at position 4",
        ),
        (
            "range(0-4294967296)",
            InvalidResourceDefinition,
            "Invalid resource definition for "
            "foo: number 4294967296 is larger than 4294967295 at position 8",
        ),
        (
            "2000x1000",
            InvalidResourceDefinition,
            "Invalid resource definition for foo: "
            "2000x1000 has more than 1000000 items; use range(A-B)",
        ),
    ],
)
def test_parse_pool_errors(text: str, error: type[UserError], message: str) -> None:
    with pytest.raises(error) as caught:
        parse_pool("foo", text)
    assert str(caught.value) == message


def test_definition_errors_are_usage_errors_and_checks_are_not() -> None:
    # HQ parses definitions in clap's value parsers (exit code 2); emptiness is a worker check.
    with pytest.raises(UsageError):
        parse_pool("foo", "[a,a]")
    with pytest.raises(UserError) as caught:
        parse_pool("foo", "sum(0)")
    assert not isinstance(caught.value, UsageError)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (
            "sum(4)",
            CpusWithoutIdentity,
            "Resource kind `sum` cannot be used with CPUs. CPUs must have identity",
        ),
        ("0", ResourceEmpty, "Resource cpus is empty"),
        ("1x0", ResourceEmpty, "Resource cpus is empty"),
        (
            "four",
            InvalidResourceDefinition,
            "Invalid resource definition for cpus: expected a number of CPUs, `[a,b,..]`, "
            "`[[a,b],[c,d],..]`, `NxM`, `range(A-B)` or `sum(AMOUNT)` at position 0",
        ),
    ],
)
def test_parse_cpus_errors(text: str, error: type[UserError], message: str) -> None:
    with pytest.raises(error) as caught:
        parse_cpus(text)
    assert str(caught.value) == message


def test_cpus_through_resource_must_have_identity_too() -> None:
    with pytest.raises(CpusWithoutIdentity):
        parse_pool("cpus", "sum(4)")
    with pytest.raises(InvalidResourceDefinition):
        parse_pool("cpus", "4")  # the bare count belongs to --cpus only


# -- names (spec/resources.md §1.1) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "split"),
    [
        ("gpus/nvidia=[0,1]", ("gpus/nvidia", "[0,1]")),
        ("a/b=sum(1)", ("a/b", "sum(1)")),
        ("Foo9=2 compact", ("Foo9", "2 compact")),
        ("x==", ("x", "=")),
        ("x=", ("x", "")),
    ],
)
def test_parse_resource_arg(arg: str, split: tuple[str, str]) -> None:
    assert parse_resource_arg(arg) == split


@pytest.mark.parametrize(
    ("arg", "error", "message"),
    [
        ("foo", InvalidResourceArgument, 'Invalid resource "foo": expected <NAME>=<VALUE>'),
        ("=2", InvalidResourceName, 'Invalid resource name "": the name is empty'),
        (
            "1gpu=2",
            InvalidResourceName,
            'Invalid resource name "1gpu": it has to start with an ASCII letter',
        ),
        (
            "/a=2",
            InvalidResourceName,
            'Invalid resource name "/a": it has to start with an ASCII letter',
        ),
        (
            "čpu=2",
            InvalidResourceName,
            'Invalid resource name "čpu": it has to start with an ASCII letter',
        ),
        (
            "my_res=2",
            InvalidResourceName,
            'Invalid resource name "my_res": character `_` at position 2 is not an ASCII '
            "letter, digit or `/`",
        ),
        (
            "a b=2",
            InvalidResourceName,
            'Invalid resource name "a b": character ` ` at position 1 is not an ASCII '
            "letter, digit or `/`",
        ),
    ],
)
def test_parse_resource_arg_errors(arg: str, error: type[UserError], message: str) -> None:
    with pytest.raises(error) as caught:
        parse_resource_arg(arg)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("name", "env"),
    [("cpus", "cpus"), ("gpus/nvidia", "gpus_nvidia"), ("a/b/C9", "a_b_C9"), ("aé", "a_")],
)
def test_env_name(name: str, env: str) -> None:
    assert env_name(name) == env


# -- descriptors -------------------------------------------------------------------------------


def test_build_descriptor_sorts_by_name() -> None:
    desc = worker("4", "potato=range(1-12)", "fairy=sum(1)", "b=[x]")
    assert [pool.name for pool in desc.pools] == ["b", "cpus", "fairy", "potato"]
    assert desc.coupling == ()


@pytest.mark.parametrize(
    ("pools", "error", "message"),
    [
        (
            [ranged("cpus", 0, 3), listed("gpus", "0"), summed("gpus", 1)],
            ResourceDefinedTwice,
            "Resource gpus defined twice",
        ),
        ([ranged("cpus", 0, 3), summed("mem", 0)], ResourceEmpty, "Resource mem is empty"),
        ([ResourcePool("cpus", PoolKind.LIST)], ResourceEmpty, "Resource cpus is empty"),
        ([listed("gpus", "0")], CpusMissing, "Resource 'cpus' is missing"),
        ([], CpusMissing, "Resource 'cpus' is missing"),
    ],
)
def test_build_descriptor_errors(
    pools: list[ResourcePool], error: type[UserError], message: str
) -> None:
    with pytest.raises(error) as caught:
        build_descriptor(pools)
    assert str(caught.value) == message


# -- summaries (spec/resources.md §1.4, output.md §1.5, §3.4) -----------------------------------


@pytest.mark.parametrize(
    ("cpus", "summary"),
    [
        ("10", "cpus 10"),
        ("4x5", "cpus 4x5"),
        ("[[100,200,300],[400,500,600]]", "cpus 2x3"),
        ("[[0,1],[2],[10,11,12]]", "cpus 1x1 1x2 1x3"),
        ("[[0,1],[2,3],[4,5],[6,7],[8,9],[10,11,12,13,14,15]]", "cpus 5x2 1x6"),
        ("[[0,1],[2,3],[4,5],[6,7]]", "cpus 4x2"),
        ("[a]", "cpus 1"),
        ("range(5-5)", "cpus 1"),
    ],
)
def test_cpu_summaries(cpus: str, summary: str) -> None:
    assert descriptor_summary(worker(cpus), multiline=False) == summary


def test_worker_list_and_info_summaries() -> None:
    desc = worker(
        "4x2",
        "potato=range(1-12)",
        "fairy=sum(1000_1000)",
        "shark=[1,3,5,2]",
        "small=sum(0.5)",
    )
    assert (
        descriptor_summary(desc, multiline=False)
        == "cpus 4x2; fairy 10001000; potato 12; shark 4; small 0.5"
    )
    assert (
        descriptor_summary(desc, multiline=True)
        == "cpus: 4x2\nfairy: 10001000\npotato: 12\nshark: 4\nsmall: 0.5"
    )


def coupled_worker() -> ResourceDescriptor:
    """`--cpus [[1,2,3],[4,5,6]] --resource ddd=sum(123) --resource foo=2x3
    --coupling=cpus[0]:foo[0],cpus[1]:foo[1]` (output.md §1.5, §4.2)."""
    desc = worker("[[1,2,3],[4,5,6]]", "ddd=sum(123)", "foo=2x3")
    return ResourceDescriptor(desc.pools, (CouplingWeight(0, 0, 2, 0), CouplingWeight(0, 1, 2, 1)))


def test_coupled_summary() -> None:
    assert (
        descriptor_summary(coupled_worker(), multiline=True)
        == "cpus: 2x3 [coupled]\nddd: 123\nfoo: 2x3 [coupled]"
    )


@pytest.mark.parametrize(
    ("size", "summary"),
    [
        (15872 * FRACTIONS, "15.50 GiB"),
        (158_721_234, "15.50 GiB"),
        (4219 * FRACTIONS, "4.12 GiB"),
        (512 * FRACTIONS, "0.50 GiB"),
        (511 * FRACTIONS, "511.00 MiB"),
        (5000, "0.50 MiB"),
    ],
)
def test_mem_summary(size: int, summary: str) -> None:
    assert pool_summary(summed("mem", size)) == summary


def test_mem_is_special_only_as_a_sum() -> None:
    assert pool_summary(summed("memory", 15872 * FRACTIONS)) == "15872"
    assert pool_summary(listed("mem", "a", "b")) == "2"


def test_hwdetect_full_description() -> None:
    desc = build_descriptor(
        [
            parse_cpus("[0,1,2,3,4,5,6,7]"),
            parse_pool("gpus/nvidia", "[1,3]"),
            parse_pool("mem", "sum(15872.1234)"),
        ]
    )
    full = "\n".join(f"{pool.name}: {pool_full_description(pool)}" for pool in desc.pools)
    assert full == "cpus: [0,1,2,3,4,5,6,7]\ngpus/nvidia: [1,3]\nmem: sum(15872.1234)"
    assert descriptor_summary(desc, multiline=True) == "cpus: 8\ngpus/nvidia: 2\nmem: 15.50 GiB"


@pytest.mark.parametrize(
    ("pool", "text"),
    [
        (listed("gpus/nvidia", "foo", "bar"), "[foo,bar]"),
        (listed("cpus", "1"), "[1]"),
        (grouped("cpus", labels(0, 1), labels(2, 3)), "[[0,1],[2,3]]"),
        (ranged("potato", 1, 12), "range(1-12)"),
        (ranged("potato", 7, 7), "[7]"),
        (summed("mem", 158_721_234), "sum(15872.1234)"),
        (summed("fairy", 10_001_000 * FRACTIONS), "sum(10001000)"),
        (listed("x", "my resource", "a,b", "", "[c]"), '["my resource","a,b","","[c]"]'),
    ],
)
def test_pool_full_description(pool: ResourcePool, text: str) -> None:
    assert pool_full_description(pool) == text


# -- JSON descriptor (output.md §4.2) ---------------------------------------------------------


def test_descriptor_json_of_every_kind() -> None:
    desc = worker("[[0,1],[2,3]]", "a=[x,y]", "b=range(1-12)", "c=sum(1000)")
    assert descriptor_json(desc) == {
        "resources": [
            {"name": "a", "kind": "list", "values": ["x", "y"]},
            {"name": "b", "kind": "range", "start": 1, "end": 12},
            {"name": "c", "kind": "sum", "size": 10_000_000},
            {"name": "cpus", "kind": "groups", "groups": [["0", "1"], ["2", "3"]]},
        ],
        "coupling": {"weights": []},
    }


def test_descriptor_json_coupling() -> None:
    weights = descriptor_json(coupled_worker())["coupling"]["weights"]
    assert weights == [
        {"resource1_idx": 0, "group1_idx": 0, "resource2_idx": 2, "group2_idx": 0, "weight": 256},
        {"resource1_idx": 0, "group1_idx": 1, "resource2_idx": 2, "group2_idx": 1, "weight": 256},
    ]


# -- requests (spec/resources.md §2) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "policy"),
    [
        ("1", 10_000, Policy.COMPACT),
        ("1000", 10_000_000, Policy.COMPACT),
        ("1000_000", 10_000_000_000, Policy.COMPACT),
        ("2 scatter", 20_000, Policy.SCATTER),
        ("4 compact!", 40_000, Policy.FORCE_COMPACT),
        ("6 tight!", 60_000, Policy.FORCE_TIGHT),
        ("6 tight", 60_000, Policy.TIGHT),
        ("8 compact", 80_000, Policy.COMPACT),
        ("1.1", 11_000, Policy.COMPACT),
        ("105.1", 1_051_000, Policy.COMPACT),
        ("0.3 compact!", 3_000, Policy.FORCE_COMPACT),
        ("0.0001", 1, Policy.COMPACT),
        ("2.5000", 25_000, Policy.COMPACT),
        ("  3   scatter ", 30_000, Policy.SCATTER),
    ],
)
def test_parse_request_amount(text: str, amount: int, policy: Policy) -> None:
    assert parse_request_amount(text, "foo") == ResourceEntry("foo", amount, policy)


def test_parse_request_all() -> None:
    assert parse_request_amount("all") == ResourceEntry("cpus", 0, Policy.COMPACT, all=True)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("1.12345", PrecisionExceeded, "Resource precision exceeded"),
        ("0", ZeroRequest, "Zero resources cannot be requested"),
        ("0.0000 scatter", ZeroRequest, "Zero resources cannot be requested"),
        (
            "2 loose",
            InvalidResourceRequest,
            'Invalid resource request "2 loose": unknown policy `loose` (expected compact, '
            "compact!, tight, tight!, scatter) at position 2",
        ),
        (
            "all compact",
            InvalidResourceRequest,
            'Invalid resource request "all compact": expected a number at position 0',
        ),
        (
            "2compact",
            InvalidResourceRequest,
            'Invalid resource request "2compact": unexpected `c` (expected a space and a '
            "policy) at position 1",
        ),
        (
            "",
            InvalidResourceRequest,
            'Invalid resource request "": expected a number at position 0',
        ),
        (
            "-1",
            InvalidResourceRequest,
            'Invalid resource request "-1": expected a number at position 0',
        ),
    ],
)
def test_parse_request_amount_errors(text: str, error: type[UserError], message: str) -> None:
    with pytest.raises(error) as caught:
        parse_request_amount(text)
    assert str(caught.value) == message


def one_variant(*entries: ResourceEntry, weight: int = FRACTIONS) -> ResourceRequest:
    return ResourceRequest((RequestVariant(entries, weight=weight),))


def parse_submit_resources(
    cpus: str | None, resources: list[str], *, min_time: float = 0.0, weight: int = FRACTIONS
) -> ResourceRequest:
    """The request of `hq submit --cpus CPUS --resource ...`, the way the command builds it."""
    entries = submit.resource_entries(parse_resources(resources), cpus)
    variant = submit.request_variant(entries, time_request=min_time, weight=weight / FRACTIONS)
    return ResourceRequest((variant,))


def test_submit_defaults_to_one_compact_cpu() -> None:
    assert parse_submit_resources(None, []) == one_variant(ResourceEntry("cpus", FRACTIONS))


def test_submit_resources() -> None:
    request = parse_submit_resources(None, ["gpus=1", "mem=0.5 scatter"])
    assert request == one_variant(
        ResourceEntry("gpus", 10_000),
        ResourceEntry("mem", 5_000, Policy.SCATTER),
        ResourceEntry("cpus", 10_000),
    )
    assert parse_submit_resources("all", []) == one_variant(ResourceEntry("cpus", 0, all=True))
    assert parse_submit_resources(None, ["cpus=2 tight"]) == one_variant(
        ResourceEntry("cpus", 20_000, Policy.TIGHT)
    )
    assert parse_submit_resources("4", [], weight=25_000, min_time=60.0) == ResourceRequest(
        (RequestVariant((ResourceEntry("cpus", 40_000),), 0, 60.0, 25_000),)
    )


@pytest.mark.parametrize(
    ("cpus", "resources", "error", "message"),
    [
        (
            "2",
            ["cpus=2"],
            CpusRequestedTwice,
            "--cpus and --resource cpus=... cannot be combined",
        ),
        (None, ["foo=1", "foo=2"], RequestDefinedTwice, "Resource 'foo' defined more than once"),
        (None, ["cpus=1", "cpus=1"], RequestDefinedTwice, "Resource 'cpus' defined more than once"),
        ("0", [], ZeroRequest, "Zero resources cannot be requested"),
        (None, ["foo=0"], ZeroRequest, "Zero resources cannot be requested"),
        (
            None,
            ["_foo=1"],
            InvalidResourceName,
            'Invalid resource name "_foo": it has to start with an ASCII letter',
        ),
    ],
)
def test_submit_resource_errors(
    cpus: str | None, resources: list[str], error: type[UserError], message: str
) -> None:
    with pytest.raises(error) as caught:
        parse_submit_resources(cpus, resources)
    assert str(caught.value) == message


# -- request display (output.md §1.5) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        (ResourceEntry("cpus", 10_000), "1 compact"),
        (ResourceEntry("cpus", 10_000_000), "1000 compact"),
        (ResourceEntry("cpus", 20_000, Policy.SCATTER), "2 scatter"),
        (ResourceEntry("cpus", 40_000, Policy.FORCE_COMPACT), "4 compact!"),
        (ResourceEntry("cpus", 60_000, Policy.FORCE_TIGHT), "6 tight!"),
        (ResourceEntry("cpus", 20_000, Policy.TIGHT), "2 tight"),
        (ResourceEntry("cpus", 11_000), "1.1 compact"),
        (ResourceEntry("cpus", 1_051_000), "105.1 compact"),
        (ResourceEntry("cpus", 0, all=True), "all"),
    ],
)
def test_format_request(entry: ResourceEntry, text: str) -> None:
    assert format_request(entry) == text


def test_request_lines() -> None:
    assert request_lines(parse_submit_resources(None, [])) == "cpus: 1 compact"
    assert (
        request_lines(parse_submit_resources("2", ["gpus=1"], weight=25_000))
        == "cpus: 2 compact\ngpus: 1 compact\n[weight: 2.5]"
    )
    assert request_lines(parse_submit_resources("all", [])) == "cpus: all"
    assert request_lines(ResourceRequest((RequestVariant(n_nodes=3),))) == "nodes: 3"
    for weight, shown in ((112_000, "11.2"), (20_000, "2"), (5_000, "0.5")):
        lines = request_lines(one_variant(ResourceEntry("cpus", 10_000), weight=weight))
        assert lines == f"cpus: 1 compact\n[weight: {shown}]"


def test_request_lines_of_variants() -> None:
    request = ResourceRequest(
        (
            RequestVariant((ResourceEntry("cpus", 80_000),)),
            RequestVariant((ResourceEntry("gpus", 10_000), ResourceEntry("cpus", 10_000))),
        )
    )
    assert request_lines(request) == (
        "# Variant 1\ncpus: 8 compact\n\n# Variant 2\ncpus: 1 compact\ngpus: 1 compact"
    )


def test_request_json() -> None:
    """The test fact of output.md §4.6."""
    request = parse_submit_resources(
        None, ["res1=2", "res2=8 compact!", "res3=all", "res4=4 scatter"]
    )
    assert request_json(request) == [
        {
            "n_nodes": 0,
            "min_time": 0.0,
            "weight": 10_000,
            "resources": [
                {"resource": "res1", "request": {"Compact": 20_000}},
                {"resource": "res2", "request": {"ForceCompact": 80_000}},
                {"resource": "res3", "request": "All"},
                {"resource": "res4", "request": {"Scatter": 40_000}},
                {"resource": "cpus", "request": {"Compact": 10_000}},
            ],
        }
    ]


def test_request_json_of_variants_and_tight() -> None:
    request = ResourceRequest(
        (
            RequestVariant((ResourceEntry("cpus", 20_000, Policy.TIGHT),), 0, 1.5, 20_000),
            RequestVariant((ResourceEntry("cpus", 10_000, Policy.FORCE_TIGHT),), 2),
        )
    )
    assert request_json(request) == [
        {
            "n_nodes": 0,
            "min_time": 1.5,
            "weight": 20_000,
            "resources": [{"resource": "cpus", "request": {"Tight": 20_000}}],
        },
        {
            "n_nodes": 2,
            "min_time": 0.0,
            "weight": 10_000,
            "resources": [{"resource": "cpus", "request": {"ForceTight": 10_000}}],
        },
    ]


# -- round trips (hypothesis) -----------------------------------------------------------------

# Anything but `"`, which neither a bare word nor a quoted string can hold.
label_text = st.text(st.characters(blacklist_characters='"', blacklist_categories=("Cs",)))
unique_labels = st.lists(label_text, min_size=1, max_size=8, unique=True)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9/]{0,10}", fullmatch=True).filter(
    lambda name: name != "cpus"
)


@st.composite
def group_pools(draw: st.DrawFn) -> ResourcePool:
    items = draw(st.lists(label_text, min_size=2, max_size=12, unique=True))
    cuts = sorted(draw(st.sets(st.integers(1, len(items) - 1), min_size=1)))
    bounds = [0, *cuts, len(items)]
    groups = tuple(tuple(items[a:b]) for a, b in pairwise(bounds))
    return ResourcePool(draw(names), PoolKind.GROUPS, groups)


@st.composite
def range_pools(draw: st.DrawFn) -> ResourcePool:
    start = draw(st.integers(0, U32_MAX - 1))
    end = draw(st.integers(start + 1, U32_MAX))
    return ResourcePool(draw(names), PoolKind.RANGE, start=start, end=end)


pools = st.one_of(
    st.builds(
        lambda name, items: ResourcePool(name, PoolKind.LIST, (tuple(items),)), names, unique_labels
    ),
    group_pools(),
    range_pools(),
    st.builds(
        lambda name, size: ResourcePool(name, PoolKind.SUM, size=size),
        names,
        st.integers(1, U32_MAX * FRACTIONS + FRACTIONS - 1),
    ),
)


@given(pools)
def test_full_description_round_trips(pool: ResourcePool) -> None:
    assert parse_pool(pool.name, pool_full_description(pool)) == pool


@given(st.integers(0, U32_MAX))
def test_single_item_range_reads_back_as_its_list(value: int) -> None:
    pool = ResourcePool("foo", PoolKind.RANGE, start=value, end=value)
    assert parse_pool("foo", pool_full_description(pool)) == listed("foo", str(value))


@given(
    st.integers(1, U32_MAX * FRACTIONS + FRACTIONS - 1),
    st.sampled_from(list(Policy)),
    names,
)
def test_request_amount_round_trips(amount: int, policy: Policy, name: str) -> None:
    entry = ResourceEntry(name, amount, policy)
    assert parse_request_amount(format_request(entry), name) == entry


# -- import weight ----------------------------------------------------------------------------


def test_module_stays_light() -> None:
    """`hq submit` imports this module; numpy and psutil must stay out of that path."""
    code = (
        "import sys, hqshm.model.resourcespec; "
        "print(sorted({'numpy', 'psutil', 'zmq'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
