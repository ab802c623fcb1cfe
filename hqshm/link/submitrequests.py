"""The client link's submit requests: the only ones that carry the submission model.

Apart from hqshm/link/requests.py so that commands that only name jobs, tasks and workers do not
import the model of what is submitted (start-up time of every `hq` command).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import ClassVar

from hqshm.cluster.frozen import frozen, replace
from hqshm.link.requests import CLIENT_LINK
from hqshm.model import limits
from hqshm.model.submission import ArraySubmission, GraphSubmission


@frozen
class PackedBytes:
    """Many byte strings as two fields: their sizes (u32, little-endian) and their bytes one
    after another. One value on the wire however many there are, so that millions of
    `--each-line` entries stay within the server's decode budget."""

    sizes: bytes
    data: bytes

    @classmethod
    def of(cls, items: Sequence[bytes]) -> PackedBytes:
        sizes = array.array("I", [len(item) for item in items])
        if sys.byteorder == "big":
            sizes.byteswap()
        return cls(sizes.tobytes(), b"".join(items))

    def unpack(self, limit: int) -> tuple[bytes, ...]:
        """The byte strings, at most ``limit`` of them; LimitError if the fields disagree."""
        if len(self.sizes) % 4:
            raise limits.LimitError("packed entry sizes are not whole u32 values")
        limits.check_count("entries", len(self.sizes) // 4, limit)
        sizes = array.array("I")
        sizes.frombytes(self.sizes)
        if sys.byteorder == "big":
            sizes.byteswap()
        if sum(sizes) != len(self.data):
            raise limits.LimitError("packed entry sizes do not add up to their data")
        items = []
        view = memoryview(self.data)
        at = 0
        for size in sizes:
            items.append(bytes(view[at : at + size]))
            at += size
        return tuple(items)


@CLIENT_LINK.message
@frozen
class SubmitRequest:
    """An array submit; its entries travel packed in ``entries`` (``submission.entries`` is
    None on the wire); ``of`` and ``unpacked`` convert."""

    TAG: ClassVar[int] = 3
    submission: ArraySubmission
    entries: PackedBytes | None = None

    @classmethod
    def of(cls, submission: ArraySubmission) -> SubmitRequest:
        if submission.entries is None:
            return cls(submission)
        return cls(replace(submission, entries=None), PackedBytes.of(submission.entries))

    def unpacked(self) -> ArraySubmission:
        if self.entries is None:
            return self.submission
        return replace(self.submission, entries=self.entries.unpack(limits.MAX_ENTRIES))


@CLIENT_LINK.message
@frozen
class SubmitGraphRequest:
    """Individual tasks with dependencies between them (`hq job submit-file` with [[task]])."""

    TAG: ClassVar[int] = 14
    submission: GraphSubmission
