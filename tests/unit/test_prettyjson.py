"""The CLI's JSON writer against the standard library's, byte for byte (HQ users parse it)."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hqshm.cli import prettyjson


def reference(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text())
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
                   | st.dictionaries(st.text(max_size=5), inner, max_size=4)
                   | st.dictionaries(st.integers(), inner, max_size=3)),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_the_text_is_the_standard_librarys(value: Any) -> None:
    assert prettyjson.dumps(value) == reference(value)


@settings(max_examples=100, deadline=None)
@given(values)
def test_an_item_indented_as_a_list_would_indent_it(value: Any) -> None:
    """What ``Output.json_items`` writes for each item of an array."""
    assert "[\n  " + prettyjson.dumps(value, "\n  ") + "\n]" == reference([value])


class Color(enum.IntEnum):
    RED = 1


class Word(enum.StrEnum):
    A = "a"


@pytest.mark.parametrize("value", [
    {"x": Color.RED, "w": Word.A}, [math.inf, -math.inf, math.nan, 1e300, -0.0],
    {"nested": {"empty": {}, "list": [], "deep": [[{"a": [1]}]]}}, "ünïcødé \u2028 \x00 \"q\"",
    {"1": "a", "10": "b", "2": "c"}, {"keys": {3: "int", 1: "keys"}},
])
def test_subclasses_and_special_floats_are_written_as_json_writes_them(value: Any) -> None:
    assert prettyjson.dumps(value) == reference(value)


def test_what_is_no_json_fails_as_json_fails() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        prettyjson.dumps({"a": [object()]})
    with pytest.raises(TypeError):  # keys that cannot be sorted together
        prettyjson.dumps({1: "a", "b": 2})
