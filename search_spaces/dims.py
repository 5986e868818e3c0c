"""Dimensions of a search space: what one decision may take."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from autocomp.errors import ConfigError


@dataclass(frozen=True)
class PruneRatio:
    """The fraction of a channel group's channels kept, in [low, high] within (0, 1]."""

    low: float = 0.2
    high: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high <= 1:
            raise ConfigError(f"keep range [{self.low}, {self.high}] is not allowed; need 0 < low <= high <= 1.")

    def distribution(self) -> optuna.distributions.FloatDistribution:
        return optuna.distributions.FloatDistribution(self.low, self.high)

    def clip(self, value: float) -> float:
        return min(self.high, max(self.low, value))
