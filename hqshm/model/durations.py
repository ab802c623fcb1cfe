"""Durations as HQ reads and prints them (spec/cli.md §1.4, output.md §1.4).

HQ uses the Rust `humantime` crate both ways, so its grammar, its error texts and its way of
splitting a duration into years (365.25 days) and months (30.44 days) are reproduced here
exactly. Work is done in integer nanoseconds so that `1s 200ms` round-trips without float noise;
the public functions take and return float seconds.
"""

from __future__ import annotations

import math
from typing import ClassVar

from hqshm.errors import UserError

_NS = 1_000_000_000
_U64_MAX = 2**64 - 1
_MONTH_S = 2_630_016  # 30.44 days
_YEAR_S = 31_557_600  # 365.25 days

# unit -> nanoseconds per unit, as in humantime 2.1
_UNITS: dict[str, int] = {
    **dict.fromkeys(("nanos", "nsec", "ns"), 1),
    **dict.fromkeys(("usec", "us"), 1_000),
    **dict.fromkeys(("millis", "msec", "ms"), 1_000_000),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), _NS),
    **dict.fromkeys(("minutes", "minute", "min", "mins", "m"), 60 * _NS),
    **dict.fromkeys(("hours", "hour", "hr", "hrs", "h"), 3600 * _NS),
    **dict.fromkeys(("days", "day", "d"), 86400 * _NS),
    **dict.fromkeys(("weeks", "week", "w"), 7 * 86400 * _NS),
    **dict.fromkeys(("months", "month", "M"), _MONTH_S * _NS),
    **dict.fromkeys(("years", "year", "y"), _YEAR_S * _NS),
}


class InvalidDuration(UserError):
    """A humantime-only duration (job files, `--overview-interval`) that does not parse."""

    template: ClassVar[str] = 'invalid duration "{text}": {detail}'


class InvalidWalltime(InvalidDuration):
    """HQ's text for every `[[HH:]MM:]SS`-or-humantime flag (spec/cli.md §1.4)."""

    template: ClassVar[str] = (
        "Could not parse PBS walltime. Use either `HH:MM:SS` or humantime format (2hours): {detail}"
    )


class _HumantimeError(Exception):
    """humantime's own error, with its Display text; offsets are UTF-8 byte offsets as in Rust."""


def parse_hms_or_human(text: str) -> float:
    """`[[HH:]MM:]SS` (`90`, `1:30`, `01:10:15`), else humantime (`1s 200ms`)."""
    hms = _parse_hms_seconds(text)
    if hms is not None:
        return float(hms)
    try:
        return _parse_humantime_ns(text) / _NS
    except _HumantimeError as error:
        raise InvalidWalltime(text=text, detail=str(error)) from None


def parse_human(text: str) -> float:
    """Humantime only: `500ms`, `18s500ms`, `15days 2min 2s`."""
    try:
        return _parse_humantime_ns(text) / _NS
    except _HumantimeError as error:
        raise InvalidDuration(text=text, detail=str(error)) from None


def format_humantime(seconds: float) -> str:
    """Rust humantime's Display: `1h 10m 15s`, `500ms`, `7days 8h 9m`, `0s`."""
    return _format_ns(_to_ns(seconds))


def format_short_duration(seconds: float) -> str:
    """Makespan: at least an hour keeps minutes, at least a minute seconds, else milliseconds."""
    ns = _to_ns(seconds)
    if ns >= 3600 * _NS:
        ns -= ns % (60 * _NS)
    elif ns >= 60 * _NS:
        ns -= ns % _NS
    else:
        ns -= ns % 1_000_000
    return _format_ns(ns)


def _to_ns(seconds: float) -> int:
    """Float seconds to integer nanoseconds, rounding away float noise (1.2 s is 1.2e9 ns)."""
    if isinstance(seconds, int):
        whole, ns = seconds, 0
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"duration must be finite, not {seconds}")
        whole = math.floor(seconds)
        ns = round((seconds - whole) * _NS)
    if whole < 0:
        raise ValueError(f"duration must not be negative, not {seconds}")
    return whole * _NS + ns


def _format_ns(ns: int) -> str:
    secs, nanos = divmod(ns, _NS)
    if secs == 0 and nanos == 0:
        return "0s"
    years, year_rest = divmod(secs, _YEAR_S)
    months, month_rest = divmod(year_rest, _MONTH_S)
    days, day_secs = divmod(month_rest, 86400)
    parts = [
        f"{value}{name}{'s' if value > 1 else ''}"
        for value, name in ((years, "year"), (months, "month"), (days, "day"))
        if value
    ]
    parts += [
        f"{value}{name}"
        for value, name in (
            (day_secs // 3600, "h"),
            (day_secs % 3600 // 60, "m"),
            (day_secs % 60, "s"),
            (nanos // 1_000_000, "ms"),
            (nanos // 1_000 % 1_000, "us"),
            (nanos % 1_000, "ns"),
        )
        if value
    ]
    return " ".join(parts)


def _parse_hms_seconds(text: str) -> int | None:
    parts = text.split(":")
    if len(parts) > 3 or not all(part.isascii() and part.isdigit() for part in parts):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


def _parse_humantime_ns(text: str) -> int:
    """A transcription of humantime's `Parser::parse`, so that what it accepts and the offsets
    in its errors match HQ."""

    def offset(index: int) -> int:
        return len(text[:index].encode())

    def is_letter(c: str) -> bool:
        return c.isascii() and c.isalpha()

    length = len(text)
    i = 0
    total_ns = 0

    def first_digit() -> int | None:
        nonlocal i
        begin = i
        while i < length:
            c = text[i]
            i += 1
            if "0" <= c <= "9":
                return ord(c) - 48
            if not c.isspace():
                raise _HumantimeError(f"expected number at {offset(begin)}")
        return None

    def add_unit(value: int, start: int, end: int) -> None:
        nonlocal total_ns
        unit = text[start:end]
        if unit not in _UNITS:
            if not unit:
                raise _HumantimeError(f"time unit needed, for example {value}sec or {value}ms")
            raise _HumantimeError(
                f'unknown time unit "{unit}", supported units: ns, us, ms, sec, min, hours, '
                "days, weeks, months, years (and few variations)"
            )
        per_unit = _UNITS[unit]
        if value * (per_unit // _NS or per_unit) > _U64_MAX:
            raise _HumantimeError("number is too large")
        total_ns += value * per_unit
        if total_ns // _NS > _U64_MAX:
            raise _HumantimeError("number is too large")

    number = first_digit()
    if number is None:
        raise _HumantimeError("value was empty")
    while True:
        # the number, possibly followed by spaces, up to the first letter of the unit
        off = i
        while i < length:
            c = text[i]
            i += 1
            if "0" <= c <= "9":
                number = number * 10 + ord(c) - 48
                if number > _U64_MAX:
                    raise _HumantimeError("number is too large")
            elif is_letter(c):
                break
            elif not c.isspace():
                raise _HumantimeError(f"invalid character at {offset(off)}")
            off = i
        start = off
        # the unit: letters up to a space, the end, or the digit of the next item
        off = i
        next_number = None
        while i < length:
            c = text[i]
            i += 1
            if "0" <= c <= "9":
                next_number = ord(c) - 48
                break
            if c.isspace():
                break
            if not is_letter(c):
                raise _HumantimeError(f"invalid character at {offset(off)}")
            off = i
        add_unit(number, start, off)
        if next_number is None:
            next_number = first_digit()
            if next_number is None:
                return total_ns
        number = next_number
