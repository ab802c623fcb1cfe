"""Value formats of HQ's output (spec/output.md §1.4-1.5, §2, §3.5, §3.7).

Pure functions of their arguments: timestamps come in as float seconds since the epoch and
resource amounts as fixed-point integers (10,000 per unit), as everywhere else in hqshm.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from hqshm.cli.tables import paint
from hqshm.cluster.resources import FRACTIONS, format_amount

_KIB = 1024
_MIB = 1024 * 1024
_GIB = 1024 * 1024 * 1024

# Order and colours of the progress bar's segments (output.md §2, §3.7).
_BAR_SEGMENTS = (
    ("canceled", "magenta"),
    ("failed", "red"),
    ("finished", "green"),
    ("running", "yellow"),
    ("aborted", "blue"),
)


def format_bytes(size: int) -> str:
    """`271 B`, `292.97 KiB`, `47.68 MiB`, `1.50 GiB`: a unit switches at 2048 of the one below."""
    if size < 2 * _KIB:
        return f"{size} B"
    if size < 2 * _MIB:
        return f"{size / _KIB:.2f} KiB"
    if size < 2 * _GIB:
        return f"{size / _MIB:.2f} MiB"
    return f"{size / _GIB:.2f} GiB"


def format_mem_mib(mib: float) -> str:
    """The `mem` resource (MiB, not fixed point): `400.00 MiB`, `15.50 GiB`."""
    if mib < 512:
        return f"{mib:.2f} MiB"
    return f"{mib / 1024:.2f} GiB"


def format_local_datetime(ts: float) -> str:
    """`29.09.2021 09:36:56` in the local time zone, sub-seconds cut."""
    return time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(math.floor(ts)))


def format_utc_date(ts: float) -> str:
    """`2024-05-01 10:00:00 UTC`, rounded to the nearest second as HQ's `round_subsecs(0)`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(math.floor(ts + 0.5)))


def format_rfc3339(ts: float) -> str:
    """RFC 3339 in UTC with `Z`; 0, 3 or 6 fractional digits as the value needs (HQ's serde
    output drops zero sub-seconds the same way, with up to 9 digits)."""
    seconds, micros = divmod(round(ts * 1_000_000), 1_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if micros == 0:
        return f"{text}Z"
    if micros % 1000 == 0:
        return f"{text}.{micros // 1000:03d}Z"
    return f"{text}.{micros:06d}Z"


def format_json_quoted_timestamp(ts: float) -> str:
    """HQ prints some timestamps in tables as JSON values, quotes included."""
    return f'"{format_rfc3339(ts)}"'


def shorten_job_name(name: str) -> str:
    """Names over 50 characters become the first 24 + `...` + the last 23 (job list)."""
    if len(name) <= 50:
        return name
    return f"{name[:24]}...{name[-23:]}"


def truncate_error(text: str, limit: int) -> tuple[str, bool]:
    """Cut an error of `limit` or more characters to `limit` + `...` (spec/output.md §3.8:
    "16 or more characters is cut to 16 characters"); says whether it did, for the hint log."""
    if len(text) >= limit:
        return f"{text[:limit]}...", True
    return text, False


def format_progress_bar(
    counts: Mapping[str, int], total: int, width: int = 40, color: bool = False
) -> str:
    """`[###.....]`: one `#` segment per state in the order canceled, failed, finished,
    running, aborted, each ceil(count / total * width) wide (computed in floats, as HQ does)
    and cut to what is left; the rest is `.`. `counts` is keyed by lowercase state names."""
    used = 0
    parts = ["["]
    for state, colour in _BAR_SEGMENTS:
        count = counts.get(state, 0)
        wanted = math.ceil(count / total * width) if total > 0 else 0
        chars = min(width - used, wanted)
        segment = "#" * chars
        parts.append(paint(segment, colour) if color else segment)
        used += chars
    parts.append("." * (width - used))
    parts.append("]")
    return "".join(parts)


# -- shared cell formats (spec/output.md §1.5) ----------------------------------------------


def format_stdio(path: str | None, streamed: bool = False) -> str:
    """`Stdout`/`Stderr` cells: the path, `<None>` for no file, `<Stream>` when streamed."""
    if streamed:
        return "<Stream>"
    return "<None>" if path is None else path


def format_variant(
    entries: Sequence[tuple[str, int | None, str]],
    weight: int = FRACTIONS,
    n_nodes: int = 0,
) -> str:
    """One resource variant: `(name, fixed-point amount or None for all, policy word)` entries
    become `name: <amount> <policy>` / `name: all` lines sorted by name, then `[weight: w]`
    when the (fixed-point) weight is not 1. A multi-node request prints only `nodes: <n>`."""
    if n_nodes > 0:
        return f"nodes: {n_nodes}"
    lines = [
        f"{name}: all" if amount is None else f"{name}: {format_amount(amount)} {policy}"
        for name, amount, policy in sorted(entries, key=lambda entry: entry[0])
    ]
    if weight != FRACTIONS:
        lines.append(f"[weight: {format_amount(weight)}]")
    return "\n".join(lines)


def format_variants(variants: Sequence[str]) -> str:
    """One variant as it is; several as `# Variant 1` + lines, a blank line, `# Variant 2`..."""
    if len(variants) == 1:
        return variants[0]
    return "\n\n".join(f"# Variant {index}\n{text}" for index, text in enumerate(variants, 1))


def format_group_sizes(sizes: Sequence[int]) -> str:
    """Grouped resources: the size of a single group, else `<count>x<size>` by size (`4x2`,
    `1x1 1x2 1x3`, `5x2 1x6`)."""
    if len(sizes) == 1:
        return str(sizes[0])
    return " ".join(f"{count}x{size}" for size, count in sorted(Counter(sizes).items()))


def format_worker_resources(
    summaries: Sequence[tuple[str, str]],
    multiline: bool = False,
    coupled: Collection[str] = (),
) -> str:
    """`(name, summary)` pairs in worker order: `cpus 4x2; mem 1.00 GiB` (worker list) or
    `cpus: 4x2\\nmem: 1.00 GiB` (worker info); names in `coupled` get ` [coupled]`."""
    separator, joiner = (": ", "\n") if multiline else (" ", "; ")
    return joiner.join(
        f"{name}{separator}{summary}{' [coupled]' if name in coupled else ''}"
        for name, summary in summaries
    )
