"""CPU sets as bit masks, the form the kernel and the rings use."""

from __future__ import annotations


def bits_of(mask: int) -> list[int]:
    """The set bits of ``mask``, lowest first (one step per set bit, not per bit)."""
    bits = []
    while mask:
        low = mask & -mask
        bits.append(low.bit_length() - 1)
        mask ^= low
    return bits
