"""One way to derive a seed from several parts (a base seed, a layer, a neuron, a candidate, a round)."""

from __future__ import annotations


def mix_seed(*parts: int) -> int:
    """A seed in [0, 2**31) determined by `parts` in order; different parts give unrelated streams."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p) + 0x9E3779B1) % 2**31
    return h
