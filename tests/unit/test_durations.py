from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hqshm.errors import UserError
from hqshm.model.durations import (
    InvalidDuration,
    InvalidWalltime,
    _format_ns,
    _parse_humantime_ns,
    format_humantime,
    format_short_duration,
    parse_hms_or_human,
    parse_human,
)

WALLTIME = "Could not parse PBS walltime. Use either `HH:MM:SS` or humantime format (2hours): "
UNITS_HINT = (
    "supported units: ns, us, ms, sec, min, hours, days, weeks, months, years (and few variations)"
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("1:30", 90),
        ("01:10:15", 4215),
        ("0:00:00", 0),
        ("100:00:00", 360_000),
        ("500ms", 0.5),
        ("1s 200ms", 1.2),
        ("18s500ms", 18.5),
        ("3h 15m 10s", 11_710),
        ("15days 2min 2s", 15 * 86400 + 122),
        ("2hours", 7200),
        ("5 s", 5),
        (" 1m", 60),
        ("1w", 7 * 86400),
        ("1M", 2_630_016),
        ("2y", 2 * 31_557_600),
        ("1hr 1min 1sec", 3661),
        ("10us", 0.00001),
        ("7ns", 7e-9),
    ],
)
def test_parse_hms_or_human(text: str, seconds: float) -> None:
    assert parse_hms_or_human(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "value was empty"),
        ("   ", "value was empty"),
        ("abc", "expected number at 0"),
        ("1.5h", "invalid character at 1"),
        ("1h30", "time unit needed, for example 30sec or 30ms"),
        ("5 x", f'unknown time unit "x", {UNITS_HINT}'),
        ("1s x", "expected number at 3"),
        ("1:2:3:4", "invalid character at 1"),
        ("99999999999999999999s", "number is too large"),
        ("1:xx", "invalid character at 1"),
    ],
)
def test_walltime_errors_carry_humantimes_detail(text: str, detail: str) -> None:
    with pytest.raises(InvalidWalltime) as raised:
        parse_hms_or_human(text)
    assert str(raised.value) == WALLTIME + detail
    assert isinstance(raised.value, UserError)


def test_parse_human_refuses_the_hms_form() -> None:
    assert parse_human("1m 10s") == 70
    with pytest.raises(InvalidDuration) as raised:
        parse_human("90")
    assert str(raised.value) == 'invalid duration "90": time unit needed, for example 90sec or 90ms'
    with pytest.raises(InvalidDuration):
        parse_human("1:30")


def test_byte_offsets_in_errors_count_utf8_bytes_as_rust_does() -> None:
    with pytest.raises(InvalidDuration) as raised:
        parse_human("1s\u00a02é")  # a no-break space is whitespace, and two bytes long
    assert str(raised.value) == 'invalid duration "1s\u00a02é": invalid character at 5'
    with pytest.raises(InvalidDuration) as raised:
        parse_human("1é")
    assert str(raised.value).endswith("invalid character at 1")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (1.2, "1s 200ms"),
        (4215, "1h 10m 15s"),
        (3529, "58m 49s"),
        (3600, "1h"),
        (8, "8s"),
        (86400, "1day"),
        (7 * 86400 + 8 * 3600 + 9 * 60, "7days 8h 9m"),
        (31 * 86400, "1month 13h 26m 24s"),
        (365 * 86400, "11months 30days 3h 50m 24s"),
        (2 * 31_557_600 + 5, "2years 5s"),
        (31_557_600 + 2 * 2_630_016, "1year 2months"),
        (0.000123456, "123us 456ns"),
        (1e-9, "1ns"),
        (61.001, "1m 1s 1ms"),
    ],
)
def test_format_humantime(seconds: float, text: str) -> None:
    assert format_humantime(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.523999, "523ms"),
        (1.5, "1s 500ms"),
        (123.999, "2m 3s"),
        (3 * 3600 + 5 * 60 + 59.9, "3h 5m"),
        (7 * 86400 + 8 * 3600 + 9 * 60 + 30, "7days 8h 9m"),
        (59.9999, "59s 999ms"),
    ],
)
def test_format_short_duration(seconds: float, text: str) -> None:
    assert format_short_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf")])
def test_formatting_refuses_impossible_durations(bad: float) -> None:
    with pytest.raises(ValueError):
        format_humantime(bad)


@given(st.integers(0, 10**20))
def test_humantime_round_trips_exactly_in_nanoseconds(ns: int) -> None:
    assert _parse_humantime_ns(_format_ns(ns)) == ns


@given(st.integers(0, 10**12))
def test_public_functions_round_trip_milliseconds(ms: int) -> None:
    seconds = ms / 1000
    assert parse_human(format_humantime(seconds)) == pytest.approx(seconds, rel=1e-12)
