"""Rank agreement between two score lists: how well a cheap score orders candidates like the expensive one."""

from __future__ import annotations

import math
from collections.abc import Sequence

from autocomp.errors import ConfigError


def kendall_tau(first: Sequence[float], second: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as in scipy's ``kendalltau``): 1 same order, -1 reversed, 0 unrelated."""
    if len(first) != len(second) or len(first) < 2:
        raise ConfigError(
            f"kendall_tau needs two lists of equal length >= 2, got lengths {len(first)} and {len(second)}."
        )
    concordant = discordant = tied_first = tied_second = 0
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            a = (first[i] > first[j]) - (first[i] < first[j])
            b = (second[i] > second[j]) - (second[i] < second[j])
            if a == 0 and b == 0:
                continue
            if a == 0:
                tied_first += 1
            elif b == 0:
                tied_second += 1
            elif a == b:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + tied_first) * (concordant + discordant + tied_second))
    return (concordant - discordant) / denominator if denominator else float("nan")
