"""Errors of the cluster layer. They carry data; the product turns them into prose."""

from __future__ import annotations


class ClusterError(Exception):
    """Root of every error raised by ``cluster``."""


class PeerError(ClusterError):
    """A peer sent something invalid: log it and drop the peer, never crash."""


class LocalProtocolError(ClusterError):
    """We tried to send an invalid message: this is our bug."""


class VersionMismatch(ClusterError):
    """The peer speaks another protocol version."""

    def __init__(self, ours: int, theirs: int) -> None:
        super().__init__(f"protocol version mismatch: ours {ours}, theirs {theirs}")
        self.ours = ours
        self.theirs = theirs
