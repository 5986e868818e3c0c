"""Channel counts under a width multiplier."""

from __future__ import annotations


def scaled(channels: int, width_mult: float) -> int:
    """``channels`` times the width multiplier, rounded, at least one."""
    return max(1, round(channels * width_mult))
