from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from hqshm.cli.formats import (
    format_amount,
    format_bytes,
    format_group_sizes,
    format_json_quoted_timestamp,
    format_local_datetime,
    format_mem_mib,
    format_progress_bar,
    format_rfc3339,
    format_stdio,
    format_utc_date,
    format_variant,
    format_variants,
    format_worker_resources,
    shorten_job_name,
    truncate_error,
)

MAY_1_2024_10H = 1714557600  # 2024-05-01 10:00:00 UTC


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (271, "271 B"),
        (2047, "2047 B"),
        (2048, "2.00 KiB"),
        (300_000, "292.97 KiB"),
        (2 * 1024 * 1024 - 1, "2048.00 KiB"),
        (2 * 1024 * 1024, "2.00 MiB"),
        (50_000_000, "47.68 MiB"),
        (2 * 1024**3, "2.00 GiB"),
        (5 * 1024**4, "5120.00 GiB"),
    ],
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


def test_format_mem_mib() -> None:
    assert format_mem_mib(400) == "400.00 MiB"
    assert format_mem_mib(511.999) == "512.00 MiB"
    assert format_mem_mib(512) == "0.50 GiB"
    assert format_mem_mib(15872.1234) == "15.50 GiB"
    assert format_mem_mib(4220) == "4.12 GiB"


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (20_000, "2"),
        (5_000, "0.5"),
        (1_051_000, "105.1"),
        (11_000, "1.1"),
        (1, "0.0001"),
        (0, "0"),
        (10_001_000_0000, "10001000"),
        (123_456, "12.3456"),
    ],
)
def test_format_amount(amount: int, text: str) -> None:
    assert format_amount(amount) == text


@pytest.fixture
def prague_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Prague")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("prague_time")
def test_format_local_datetime() -> None:
    assert format_local_datetime(1632901016.9) == "29.09.2021 09:36:56"
    assert format_local_datetime(MAY_1_2024_10H) == "01.05.2024 12:00:00"


def test_format_utc_date_rounds_sub_seconds_away() -> None:
    assert format_utc_date(MAY_1_2024_10H) == "2024-05-01 10:00:00 UTC"
    assert format_utc_date(MAY_1_2024_10H + 0.4) == "2024-05-01 10:00:00 UTC"
    assert format_utc_date(MAY_1_2024_10H - 0.4) == "2024-05-01 10:00:00 UTC"
    assert format_utc_date(MAY_1_2024_10H + 0.6) == "2024-05-01 10:00:01 UTC"


def test_rfc3339() -> None:
    assert format_rfc3339(MAY_1_2024_10H) == "2024-05-01T10:00:00Z"
    assert format_rfc3339(MAY_1_2024_10H + 0.5) == "2024-05-01T10:00:00.500Z"
    assert format_rfc3339(MAY_1_2024_10H + 0.123456) == "2024-05-01T10:00:00.123456Z"
    assert format_rfc3339(MAY_1_2024_10H + 0.999_999_9) == "2024-05-01T10:00:01Z"
    assert format_json_quoted_timestamp(MAY_1_2024_10H + 0.25) == '"2024-05-01T10:00:00.250Z"'


def test_shorten_job_name() -> None:
    assert shorten_job_name("a" * 50) == "a" * 50
    name = "".join(chr(ord("a") + i % 26) for i in range(51))
    assert shorten_job_name(name) == name[:24] + "..." + name[-23:]
    assert len(shorten_job_name("x" * 200)) == 50
    assert shorten_job_name("é" * 60) == "é" * 24 + "..." + "é" * 23


def test_truncate_error() -> None:
    assert truncate_error("short", 16) == ("short", False)
    assert truncate_error("x" * 15, 16) == ("x" * 15, False)
    assert truncate_error("x" * 16, 16) == ("x" * 16 + "...", True)
    message = "Program terminated with exit code 1."
    assert truncate_error(message, 16) == ("Program terminat...", True)
    assert truncate_error(message, 237) == (message, False)


@pytest.mark.parametrize(
    ("counts", "total", "bar"),
    [
        ({}, 0, "[" + "." * 40 + "]"),
        ({}, 10, "[" + "." * 40 + "]"),
        ({"finished": 10}, 10, "[" + "#" * 40 + "]"),
        ({"finished": 4, "running": 4}, 10, "[" + "#" * 32 + "." * 8 + "]"),
        ({"running": 1}, 3, "[" + "#" * 14 + "." * 26 + "]"),
        ({"failed": 1, "canceled": 1, "finished": 1}, 3, "[" + "#" * 40 + "]"),
        ({"failed": 2, "aborted": 1}, 1000, "[" + "#" * 2 + "." * 38 + "]"),
    ],
)
def test_progress_bar(counts: dict[str, int], total: int, bar: str) -> None:
    assert format_progress_bar(counts, total) == bar


def test_progress_bar_segments_in_colour_order() -> None:
    bar = format_progress_bar({"running": 1, "canceled": 1}, 4, width=8, color=True)
    assert bar == "[\x1b[35m##\x1b[0m\x1b[33m##\x1b[0m....]"


def test_format_stdio() -> None:
    assert format_stdio("/a/b.out") == "/a/b.out"
    assert format_stdio(None) == "<None>"
    assert format_stdio(None, streamed=True) == "<Stream>"


def test_format_variant() -> None:
    assert format_variant([("cpus", 10_000, "compact")]) == "cpus: 1 compact"
    assert (
        format_variant([("gpus", 10_000, "compact"), ("cpus", 20_000, "compact")], weight=25_000)
        == "cpus: 2 compact\ngpus: 1 compact\n[weight: 2.5]"
    )
    assert format_variant([("cpus", None, "compact")]) == "cpus: all"
    assert format_variant([("cpus", 10_000, "compact")], n_nodes=3) == "nodes: 3"
    assert (
        format_variant([("cpus", 40_000, "compact!"), ("gpus", 20_000, "compact")], 112_000)
        == "cpus: 4 compact!\ngpus: 2 compact\n[weight: 11.2]"
    )


def test_format_variants() -> None:
    assert format_variants(["cpus: 1 compact"]) == "cpus: 1 compact"
    assert format_variants(["cpus: 8 compact", "cpus: 1 compact\ngpus: 1 compact"]) == (
        "# Variant 1\ncpus: 8 compact\n\n# Variant 2\ncpus: 1 compact\ngpus: 1 compact"
    )


@pytest.mark.parametrize(
    ("sizes", "text"),
    [
        ([6], "6"),
        ([2, 2, 2, 2], "4x2"),
        ([3, 3], "2x3"),
        ([3, 1, 2], "1x1 1x2 1x3"),
        ([6, 2, 2, 2, 2, 2], "5x2 1x6"),
    ],
)
def test_format_group_sizes(sizes: list[int], text: str) -> None:
    assert format_group_sizes(sizes) == text


def test_format_worker_resources() -> None:
    summaries = [("cpus", "4x2"), ("fairy", "10001000"), ("potato", "12"), ("small", "0.5")]
    assert format_worker_resources(summaries) == "cpus 4x2; fairy 10001000; potato 12; small 0.5"
    assert (
        format_worker_resources(
            [("cpus", "2x3"), ("ddd", "123"), ("foo", "2x3")],
            multiline=True,
            coupled={"cpus", "foo"},
        )
        == "cpus: 2x3 [coupled]\nddd: 123\nfoo: 2x3 [coupled]"
    )
    assert format_worker_resources([("cpus", "10")], multiline=True) == "cpus: 10"


def test_client_path_modules_import_nothing_heavy() -> None:
    """`hq` has a start-up budget of ~100 ms: its parsers and renderers stay off numpy/psutil."""
    code = (
        "import sys, hqshm.model.arrays, hqshm.model.durations, hqshm.model.placeholders,"
        " hqshm.cli.tables,"
        " hqshm.cli.formats; print(sorted({'numpy', 'psutil', 'zmq'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"
