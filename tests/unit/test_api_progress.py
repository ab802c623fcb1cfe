"""The Python API's progress bar (``wait_for_jobs``): what was done before the bar appeared
is its start, so its rate counts only what finishes while it shows (it read millions of
tasks a second when the first report's done tasks counted as one step)."""

from __future__ import annotations

import io
import re

import pytest

from hqshm.api import client as api_client
from hqshm.link.responses import JobSummary


def summary(done: int, total: int = 1000) -> JobSummary:
    return JobSummary(id=1, name="job", is_open=False, cancel_reason=None, task_count=total,
                      counts=(total - done, 0, done, 0, 0, 0))


def test_the_bar_starts_at_what_was_done_and_rates_only_what_follows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm

    out = io.StringIO()
    monkeypatch.setattr(tqdm, "tqdm", lambda *a, **kw: tqdm.std.tqdm(*a, file=out, **kw))
    with api_client._ProgressBar(1) as progress:
        progress.update([summary(182)])
        bar = progress.bar
        assert bar.n == 182
        first = out.getvalue()
        assert "182/1000" in first and not re.search(r"[0-9]task/s", first), first  # no rate yet
        progress.update([summary(1000)])
        assert bar.n == 1000
        assert "1/1 job(s) completed" in out.getvalue()
