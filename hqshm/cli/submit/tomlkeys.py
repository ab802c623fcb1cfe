"""Where each key of a TOML text is: tomllib drops positions, job-file errors need them.

``key_lines`` scans a text that tomllib has already accepted and maps every key and table header,
as a path of the parsed document, to its line, so an error found in the parsed data can name the
line at fault (`job.toml:7: ...`). Pure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence

Path = tuple[str | int, ...]  # a key in the document: table names, keys and array indices


def key_lines(text: str) -> dict[Path, int]:
    """The line of every table header and key of a valid TOML text.

    Keys are paths as the parsed document nests them: `[[task]]` items are indexed
    (`("task", 1, "request", 0, "weight")`), so an error found in the parsed data can name its
    line. Values are skipped (strings, arrays over several lines, inline tables); a key inside
    an inline table has no line of its own and takes that of the key holding the table.
    """
    lines: dict[Path, int] = {}
    arrays: dict[Path, int] = {}  # array-of-tables path -> number of items so far
    table: Path = ()
    cursor = _Cursor(text)
    while not cursor.at_end():
        char = cursor.peek()
        if char in " \t\r\n":
            cursor.advance()
        elif char == "#":
            cursor.skip_comment()
        elif char == "[":
            double = cursor.startswith("[[")
            cursor.advance(2 if double else 1)
            line = cursor.line
            keys = cursor.key()
            cursor.advance(2 if double else 1)
            parent = _resolve(arrays, keys[:-1])
            path = (*parent, keys[-1])
            if double:
                lines.setdefault(path, line)  # the whole array: its first header
                index = arrays.get(path, 0)
                arrays[path] = index + 1
                path = (*path, index)
            table = path
            lines.setdefault(table, line)
        else:
            line = cursor.line
            keys = cursor.key()
            for end in range(1, len(keys) + 1):
                lines.setdefault((*table, *keys[:end]), line)
            cursor.advance()  # the `=`
            cursor.skip_value()
    return lines


def _resolve(arrays: dict[Path, int], keys: Sequence[str]) -> Path:
    """A header's parent keys as a path: an array of tables means its latest item."""
    path: Path = ()
    for key in keys:
        path = (*path, key)
        if path in arrays:
            path = (*path, arrays[path] - 1)
    return path


class _Cursor:
    """A position in a TOML text that tomllib has already accepted, with its line number."""

    __slots__ = ("text", "pos", "line")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def startswith(self, prefix: str) -> bool:
        return self.text.startswith(prefix, self.pos)

    def advance(self, count: int = 1) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + count)
        self.pos += count

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def key(self) -> tuple[str, ...]:
        """A dotted key up to (not including) the `=` or `]` after it."""
        parts = []
        while True:
            self.skip_spaces()
            start = self.pos
            if self.peek() in ('"', "'"):
                self.skip_string()
                parts.append(tomllib.loads("k = " + self.text[start : self.pos])["k"])
            else:
                while self.peek().isalnum() or self.peek() in ("_", "-"):
                    self.pos += 1
                parts.append(self.text[start : self.pos])
            self.skip_spaces()
            if self.peek() != ".":
                return tuple(parts)
            self.pos += 1

    def skip_string(self) -> None:
        """A basic or literal string, on one line or (tripled quotes) several."""
        quote = self.peek()
        if self.startswith(quote * 3):
            end = self.text.find(quote * 3, self.pos + 3)
            while quote == '"' and _escaped(self.text, end):
                end = self.text.find(quote * 3, end + 1)
            end += 3
            for _ in range(2):  # up to two quotes of the content may touch the closing ones
                if self.text.startswith(quote, end):
                    end += 1
            self.advance(end - self.pos)
            return
        end = self.text.find(quote, self.pos + 1)
        while quote == '"' and _escaped(self.text, end):
            end = self.text.find(quote, end + 1)
        self.pos = end + 1

    def skip_value(self) -> None:
        """Up to the end of the line the value ends on (arrays may span lines)."""
        depth = 0
        while not self.at_end():
            char = self.peek()
            if char in ('"', "'"):
                self.skip_string()
            elif char == "#":
                self.skip_comment()
            elif char == "\n":
                if depth == 0:
                    return
                self.advance()
            else:
                if char in "[{":
                    depth += 1
                elif char in "]}":
                    depth -= 1
                self.pos += 1


def _escaped(text: str, index: int) -> bool:
    """Whether the quote at `index` follows an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1
