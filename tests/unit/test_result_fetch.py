"""The server's fetching of results held on nodes (hqshm/server/results.py): parts asked at
most two ahead and checked against what was asked, a hostile answer dropped with the fetch
failed, a node that leaves failing its fetches, and the bounded cache."""

from __future__ import annotations

import logging

import pytest
from hqshm.cluster.ids import task_key
from hqshm.cluster.protocol import MAX_PART, FetchResult, ResultPart

from hqshm.server import results
from hqshm.server.results import ResultStore

KEY = task_key(1, 7)


def store() -> tuple[ResultStore, list[tuple[int, object]]]:
    sent: list[tuple[int, object]] = []
    s = ResultStore(None, 1 << 30, 0.0)  # type: ignore[arg-type] - the book is not used here
    s.send = lambda wid, message: sent.append((wid, message))
    return s, sent


def test_a_result_comes_in_parts_asked_two_ahead() -> None:
    s, sent = store()
    size = 2 * MAX_PART + 10
    blob = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert s._fetch(KEY, 3, 2, size)
    # Two parts asked ahead; each that comes asks for the next.
    assert sent == [(3, FetchResult(KEY, 2, 0, MAX_PART)),
                    (3, FetchResult(KEY, 2, MAX_PART, MAX_PART))]
    s.part(3, ResultPart(KEY, 2, 0, size, blob[:MAX_PART]))
    assert sent[-1] == (3, FetchResult(KEY, 2, 2 * MAX_PART, 10))
    for at in (MAX_PART, 2 * MAX_PART):
        s.part(3, ResultPart(KEY, 2, at, size, blob[at:at + MAX_PART]))
    assert len(sent) == 3
    assert s.fetched[KEY] == blob and not s.fetching and s.cache_bytes == size


@pytest.mark.parametrize("part", [
    ResultPart(KEY, 2, 0, 100, bytes(101)),  # more than asked
    ResultPart(KEY, 2, 0, 100, bytes(99)),  # less
    ResultPart(KEY, 2, 0, 200, bytes(100)),  # not the size recorded
    ResultPart(KEY, 2, 50, 100, bytes(50)),  # not the offset asked
    ResultPart(KEY, 1, 0, 100, bytes(100)),  # another instance
])
def test_an_answer_that_does_not_fit_fails_the_fetch(part: ResultPart,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    s, _sent = store()
    s._fetch(KEY, 3, 2, 100)
    with caplog.at_level(logging.ERROR):
        s.part(3, part)
    assert "answered for the result of task 7 of job 1" in caplog.text
    assert KEY not in s.fetching and KEY not in s.fetched and s.cache_bytes == 0
    assert "does not match" in s.not_fetched[KEY]


def test_parts_nobody_asked_for_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    s, _sent = store()
    s._fetch(KEY, 3, 2, 100)
    with caplog.at_level(logging.ERROR):
        s.part(4, ResultPart(KEY, 2, 0, 100, bytes(100)))  # another node
        s.part(3, ResultPart(KEY + 1, 2, 0, 100, bytes(100)))  # another task
    assert caplog.text.count("which was not asked of it") == 2
    assert KEY in s.fetching  # the real answer may still come
    s.part(3, ResultPart(KEY, 2, 0, 100, bytes(100)))
    assert s.fetched[KEY] == bytes(100)


def test_a_node_error_or_departure_fails_its_fetches() -> None:
    s, _sent = store()
    s._fetch(KEY, 3, 2, 100)
    s._fetch(KEY + 1, 4, 0, 100)
    s.part(3, ResultPart(KEY, 2, 0, 0, b"", "it is not on this worker any more"))
    assert "could not send it: it is not on this worker" in s.not_fetched[KEY]
    s.worker_left(4, "connection-lost")
    assert "worker 4, which held it, is gone (connection-lost)" in s.not_fetched[KEY + 1]
    assert not s.fetching and s.cache_bytes == 0


def test_the_cache_is_bounded_and_forgets_delivered_blobs_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "FETCH_CACHE_BYTES", 250)
    s, _sent = store()
    for i in range(2):
        assert s._fetch(KEY + i, 3, 0, 100)
        s.part(3, ResultPart(KEY + i, 0, 0, 100, bytes(100)))
    assert not s._fetch(KEY + 2, 3, 0, 100)  # no room: neither was delivered yet
    s.delivered.add(KEY)
    assert s._fetch(KEY + 2, 3, 0, 100)  # the delivered one made room
    assert KEY not in s.fetched and KEY + 1 in s.fetched and s.cache_bytes == 200


def test_every_result_kind_a_node_may_report_has_a_status_and_a_text() -> None:
    from hqshm.cluster.protocol import MAX_RESULT_KIND

    from hqshm.api.results import _why
    from hqshm.link.responses import ResultStatus
    from hqshm.node import results as node_results

    assert sorted(results._KIND_STATUS) == list(range(MAX_RESULT_KIND + 1))
    assert results._KIND_STATUS[node_results.NOT_KEPT] == ResultStatus.NOT_KEPT
    text = _why(ResultStatus.NOT_KEPT, 70000, "its result space /dev/shm/x would be more "
                "than 50% full; forget finished jobs to free it")
    assert text.startswith("the result (70000 bytes) could not be kept on its worker: its")
    for status in (s for name, s in vars(ResultStatus).items() if name.isupper()):
        if status not in (ResultStatus.PENDING, ResultStatus.VALUE, ResultStatus.EXCEPTION,
                          ResultStatus.FAILED, ResultStatus.CANCELED, ResultStatus.NONE,
                          ResultStatus.LATER):
            assert not _why(status, 1, "x").startswith("unexpected answer"), status
