"""The CURVE key pairs of an endpoint, derived from its secret without importing pyzmq.

Clients derive keys on every command, and pyzmq costs a command 45-60 ms to import; libzmq's
own ``zmq_curve_public`` and Z85 through cluster/libzmq.py do the same work. Without a loadable
libzmq (or with ``HQSHM_PYZMQ=1``) pyzmq computes them. Both give the same keys: the X25519 of
the base point and Z85 are fixed functions (tests/unit/test_curve_keys.py checks both paths
against an independent X25519). cluster/security.py re-exports these for the server and node.
"""

from __future__ import annotations

from typing import Final

from . import libzmq
from .digests import hmac_sha256
from .frozen import field, frozen

_KDF_LABEL: Final = b"hqshm curve v1 "
_SECRET_SIZE: Final = 32


@frozen
class EndpointKeys:
    """The two CURVE key pairs of one endpoint, as z85 text (40 bytes each)."""

    server_secret: bytes = field(repr=False)
    server_public: bytes
    peer_secret: bytes = field(repr=False)
    peer_public: bytes


def derive_keys(secret: bytes) -> EndpointKeys:
    """Derive both key pairs of an endpoint from its 32-byte secret.

    Public keys are X25519 of the base point (``zmq_curve_public``); ``zmq_curve_keypair`` is
    never mixed in, so both sides always compute identical pairs from the file alone.
    """
    if len(secret) != _SECRET_SIZE:
        raise ValueError(f"endpoint secret must be {_SECRET_SIZE} bytes, got {len(secret)}")
    server_secret = _derive_secret(secret, b"server")
    peer_secret = _derive_secret(secret, b"peer")
    return EndpointKeys(
        server_secret=server_secret,
        server_public=curve_public(server_secret),
        peer_secret=peer_secret,
        peer_public=curve_public(peer_secret),
    )


def _derive_secret(secret: bytes, role: bytes) -> bytes:
    seed = hmac_sha256(secret, _KDF_LABEL + role)
    return z85_encode(seed)


def curve_public(secret: bytes) -> bytes:
    """The z85 public key of a z85 secret key."""
    lib = libzmq.load()
    if lib is not None:
        return lib.curve_public(secret)
    import zmq

    return zmq.curve_public(secret)


def z85_encode(data: bytes) -> bytes:
    lib = libzmq.load()
    if lib is not None:
        return lib.z85_encode(data)
    from zmq.utils import z85

    return z85.encode(data)


def z85_decode(text: bytes) -> bytes:
    lib = libzmq.load()
    if lib is not None:
        return lib.z85_decode(text)
    from zmq.utils import z85

    return z85.decode(text)
