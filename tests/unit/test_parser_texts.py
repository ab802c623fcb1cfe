"""argparse's texts while `hq` parses: as written, with no catalogue search, and argparse as it
was afterwards for anything else in the process."""

from __future__ import annotations

import argparse
import sys

import pytest

from hqshm.cli.parser import parse
from hqshm.errors import UsageError


def test_argparse_is_put_back_after_a_parse_and_after_an_error() -> None:
    before = argparse._, argparse.ngettext  # type: ignore[attr-defined]
    assert parse(["submit", "--", "true"]).command == "submit"
    assert (argparse._, argparse.ngettext) == before  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="unexpected argument '--bogus' found"):
        parse(["submit", "--bogus", "x"])
    assert (argparse._, argparse.ngettext) == before  # type: ignore[attr-defined]


def test_a_parse_looks_up_no_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    """gettext imported `locale` and searched the disk on every text (1.4 ms a command)."""
    import gettext

    looked_up: list[str] = []
    monkeypatch.setattr(gettext, "dgettext", lambda domain, text: looked_up.append(text) or text)
    monkeypatch.delitem(sys.modules, "locale", raising=False)
    parse(["job", "list"])
    with pytest.raises(UsageError):
        parse(["job", "info"])  # an error message too
    assert looked_up == []
    assert "locale" not in sys.modules
