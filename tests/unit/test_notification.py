"""hqshm/model/notification.py: the datagrams of `hq task notify`, decoded as hostile input
(any local user can write to a node's abstract socket)."""

from __future__ import annotations

import msgpack
import pytest

from hqshm.model.notification import MAX_TOKEN, decode_notice, encode_notice

TOKEN = "0123456789abcdef" * 2


def test_a_notice_round_trips() -> None:
    notice = decode_notice(encode_notice(TOKEN, 7, 3, 1, b"hello"))
    assert notice is not None
    assert (notice.token, notice.job_id, notice.task_id, notice.instance, notice.message) == (
        TOKEN, 7, 3, 1, b"hello")


@pytest.mark.parametrize("fields", [
    ["é" * 32, 1, 0, 0, b"x"],  # non-ASCII text: the constant-time comparison would raise
    ["a" * (MAX_TOKEN + 1), 1, 0, 0, b"x"],
    [TOKEN, -1, 0, 0, b"x"],
    [TOKEN, 2**32, 0, 0, b"x"],
    [TOKEN, 1, 2**32, 0, b"x"],
    [TOKEN, 1, 0, -5, b"x"],
    [TOKEN, 1.0, 0, 0, b"x"],
    [TOKEN, True, 0, 0, b"x"],
    [TOKEN, 1, 0, 0, "text"],
    [b"bytes", 1, 0, 0, b"x"],
    [TOKEN, 1, 0, 0],
])
def test_malformed_notices_are_refused(fields: list[object]) -> None:
    assert decode_notice(msgpack.packb(fields)) is None


def test_garbage_is_refused() -> None:
    assert decode_notice(b"\xc1\xff\x00") is None
    assert decode_notice(b"") is None
