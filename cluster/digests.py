"""Digests, secret comparisons and random tokens on the interpreter's own code, not OpenSSL's.

Importing ``hashlib``, ``hmac`` or ``secrets`` loads OpenSSL's libcrypto: 3.5 MB of resident
memory in the server, the node and each executor (forked from the node, they count it again)
and 4 ms of every client command, for a few short digests. CPython's built-in SHA-256 and
BLAKE2 modules, ``os.urandom`` and the constant-time comparison ``hmac`` itself falls back on
give the same results; a Python built without them gets ``hashlib``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, AnyStr

if TYPE_CHECKING:
    from hmac import compare_digest as _constant_time_equal
else:
    try:
        from _operator import _compare_digest as _constant_time_equal
    except ImportError:  # not CPython
        from hmac import compare_digest as _constant_time_equal


def _builtin(modules: tuple[str, ...], name: str) -> Callable[..., Any]:
    for module in modules:
        try:
            constructor: Callable[..., Any] = getattr(__import__(module), name)
        except (ImportError, AttributeError):
            continue
        return constructor
    import hashlib  # a Python built without them

    fallback: Callable[..., Any] = getattr(hashlib, name)
    return fallback


# A SHA-256 object of some bytes (``.digest()``), as ``hashlib.sha256`` makes.
sha256 = _builtin(("_sha256", "_sha2"), "sha256")  # Python 3.11; 3.12 and later


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), what ``hmac.new(key, message, hashlib.sha256).digest()`` gives."""
    if len(key) > 64:  # the block size: longer keys are hashed first
        key = sha256(key).digest()
    block = key.ljust(64, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in block) + message).digest()
    digest: bytes = sha256(bytes(b ^ 0x5C for b in block) + inner).digest()
    return digest


def blake2b_128(data: bytes) -> bytes:
    """A 16-byte BLAKE2b digest, ``hashlib.blake2b(data, digest_size=16).digest()``."""
    # Looked up at each call: a command that makes no digest does not load the module.
    digest: bytes = _builtin(("_blake2",), "blake2b")(data, digest_size=16).digest()
    return digest


def same_secret(a: AnyStr, b: AnyStr) -> bool:
    """Equal, in a time that does not tell how much of a guess was right; text of any
    characters too (the comparison itself refuses non-ASCII text with an exception)."""
    if isinstance(a, str) and isinstance(b, str):
        return _constant_time_equal(a.encode("utf-8", "surrogatepass"),
                                    b.encode("utf-8", "surrogatepass"))
    return _constant_time_equal(a, b)


def token_hex(size: int) -> str:
    """``size`` random bytes from the system's generator, as hexadecimal."""
    return os.urandom(size).hex()
