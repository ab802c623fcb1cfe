"""HQ's ASCII tables (spec/output.md §1.1-1.3).

Scripts and HQ's own tests split these lines on `|` and treat lines starting with `+-` as
borders, so the layout is a contract: no separators between rows, no bottom border under a
table without rows, continuation lines of multi-line cells with blank cells elsewhere.
Colours are applied only when asked; without them the output has no escape at all.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Literal

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_RESET = "\x1b[0m"
_CODES = {
    "bold": "1",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
_STATE_COLOURS = {
    "job": {
        "WAITING": "cyan",
        "OPENED": "cyan",
        "RUNNING": "yellow",
        "FINISHED": "green",
        "FAILED": "red",
        "CANCELED": "magenta",
        "ABORTED": "blue",
    },
    "worker": {
        "RUNNING": "green",
        "CONNECTION LOST": "red",
        "HEARTBEAT LOST": "red",
        "IDLE TIMEOUT": "cyan",
        "TIME LIMIT REACHED": "cyan",
        "STOPPED": "magenta",
    },
    "allocation": {
        "QUEUED": "yellow",
        "RUNNING": "blue",
        "FINISHED": "green",
        "FAILED": "red",
    },
}


def paint(text: str, colour: str) -> str:
    """Wrap `text` in one SGR colour (`bold`, `red`, `green`, ...)."""
    return f"\x1b[{_CODES[colour]}m{text}{_RESET}" if text else text


def colorize_state(word: str, kind: Literal["job", "worker", "allocation"] = "job") -> str:
    """A state word in its colour; the same word differs by kind (a RUNNING worker is green,
    a RUNNING job yellow). Unknown words come back unchanged."""
    colour = _STATE_COLOURS[kind].get(word)
    return word if colour is None else paint(word, colour)


def display_width(text: str) -> int:
    """Terminal columns: East Asian wide = 2, combining and control characters = 0, ANSI
    escapes excluded."""
    if text.isascii() and text.isprintable():
        return len(text)  # the common case, and a task list may have a million rows
    import unicodedata  # here: tables of plain ASCII (most) never need it

    width = 0
    for char in _ANSI.sub("", text):
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf", "Cc"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def render_horizontal(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right_align: Collection[int] = (),
    color: bool = False,
) -> str:
    """Header, separator, rows, bottom border (omitted when there are no rows).
    `right_align` holds column indices whose data cells (not the header) are right-justified."""
    if not header:
        raise ValueError("a table needs at least one column")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row has {len(row)} cells, the header {len(header)}")
    header_lines = [_cell_lines(cell) for cell in header]
    # Rows of one-line printable ASCII cells (nearly all: a task list may have a million) are
    # measured by len and laid out by str.ljust; the others line by line, by display width.
    plain = [_plain("".join(row)) for row in rows]
    row_lines = {i: [_cell_lines(cell) for cell in row]
                 for i, row in enumerate(rows) if not plain[i]}
    widths = _widths([header_lines, *row_lines.values()], len(header))
    plain_rows = [row for row, simple in zip(rows, plain, strict=True) if simple]
    for index, column in enumerate(zip(*plain_rows, strict=True)):
        widths[index] = max(widths[index], max(map(len, column)))
    justify = [str.rjust if i in right_align else str.ljust for i in range(len(header))]
    border = _border(widths)
    out = [border]
    out += _row(header_lines, widths, (), bold=tuple(range(len(header))) if color else ())
    out.append(border)
    for i, row in enumerate(rows):
        if plain[i]:
            out.append("| " + " | ".join([fit(cell, width) for fit, cell, width
                                          in zip(justify, row, widths, strict=True)]) + " |")
        else:
            out += _row(row_lines[i], widths, right_align, bold=())
    if rows:
        out.append(border)
    return "\n".join(out)


def render_vertical(rows: Sequence[tuple[str, str]], color: bool = False) -> str:
    """Key/value rows between a top and a bottom border; keys bold with colours."""
    row_lines = [[_cell_lines(key), _cell_lines(value)] for key, value in rows]
    widths = _widths(row_lines, 2)
    border = _border(widths)
    out = [border]
    for cells in row_lines:
        out += _row(cells, widths, (), bold=(0,) if color else ())
    out.append(border)
    return "\n".join(out)


def _plain(cell: str) -> bool:
    """One line of printable ASCII: as many columns as characters."""
    return cell.isascii() and cell.isprintable()


def _cell_lines(cell: str) -> list[str]:
    return cell.splitlines() or [""]


def _widths(rows: Sequence[Sequence[list[str]]], columns: int) -> list[int]:
    widths = [0] * columns
    for cells in rows:
        for index, lines in enumerate(cells):
            widths[index] = max(widths[index], *(display_width(line) for line in lines))
    return widths


def _border(widths: Sequence[int]) -> str:
    return "+" + "+".join("-" * (width + 2) for width in widths) + "+"


def _row(
    cells: Sequence[list[str]],
    widths: Sequence[int],
    right_align: Collection[int],
    bold: Collection[int],
) -> list[str]:
    height = max(len(lines) for lines in cells)
    out = []
    for line_index in range(height):
        parts = []
        for column, lines in enumerate(cells):
            text = lines[line_index] if line_index < len(lines) else ""
            padding = " " * (widths[column] - display_width(text))
            if column in bold:
                text = paint(text, "bold")
            parts.append(padding + text if column in right_align else text + padding)
        out.append("| " + " | ".join(parts) + " |")
    return out
