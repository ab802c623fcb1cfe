"""A cursor over a short text, for the hand-written grammars of `hq` arguments.

Arrays, selectors and resource definitions share its basics (numbers with `_` separators,
spaces, positions for error texts); each grammar adds its own tokens by subclassing.
"""

from __future__ import annotations

from collections.abc import Callable

from hqshm.errors import UserError

U32_MAX = 2**32 - 1


class Scanner:
    __slots__ = ("text", "pos", "error")

    def __init__(self, text: str, error: Callable[[str, int], UserError]) -> None:
        self.text = text
        self.pos = 0
        self.error = error  # builds the error of a detail found at a position

    def fail(self, detail: str, position: int | None = None) -> UserError:
        return self.error(detail, self.pos if position is None else position)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def number(self) -> int:
        """A u32 in decimal; `_` may separate digits (`1_000_000`), as in HQ."""
        begin = self.pos
        if not ("0" <= self.peek() <= "9"):
            raise self.fail("expected a number")
        while self.pos < len(self.text) and (
            "0" <= self.text[self.pos] <= "9" or self.text[self.pos] == "_"
        ):
            self.pos += 1
        value = int(self.text[begin : self.pos].replace("_", ""))
        if value > U32_MAX:
            raise self.fail(f"number {value} is larger than {U32_MAX}", begin)
        return value
