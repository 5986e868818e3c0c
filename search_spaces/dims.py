"""Dimensions of a search space: what one decision may take, and where it goes in a `Policy`.

Every dimension orders its values from cheapest to dearest (more channels, more bits, a
higher rank, a wider or larger model cost more), which is what the projections rely on.
``kind`` names what a value sets: a `LayerDecision` field for the layers of its decision
(``keep``, ``weight_bits``, ``act_bits``, ``rank``), or a model-wide multiplier of the
policy (``width``, ``resolution``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import optuna
from annotated_types import Ge, Le

from autocomp.errors import ConfigError
from autocomp.policy import MAX_BITS, MIN_BITS, RANK_SCHEMES
from autocomp.settings import Fraction, OneOf, check

MODEL_KINDS = ("width", "resolution")

Bits = Annotated[int, Ge(MIN_BITS), Le(MAX_BITS)]
"""A bit-width a layer may take."""


def _check_range(dim: ContinuousDim, what: str) -> None:
    check(dim, what)
    if dim.low > dim.high:
        raise ConfigError(f"{what} range [{dim.low}, {dim.high}] is empty; need low <= high.")


@dataclass(frozen=True)
class ContinuousDim:
    """A fraction in [low, high] within (0, 1]."""

    low: float
    high: float

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.FloatDistribution(self.low, self.high)

    def clip(self, value: float) -> float:
        return min(self.high, max(self.low, float(value)))

    def scaled(self, value: float, factor: float) -> float:
        """``value x factor``, clipped: the global scaling moves every decision by one factor."""
        return self.clip(value * factor)

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class PruneRatio(ContinuousDim):
    """The fraction of a channel group's channels kept."""

    low: Fraction = 0.2
    high: Fraction = 1.0
    kind = "keep"

    def __post_init__(self) -> None:
        _check_range(self, "keep")


@dataclass(frozen=True)
class LowRank(ContinuousDim):
    """The fraction of a layer's full rank kept by an SVD factorization; 1.0 leaves the layer whole.

    A space also leaves a layer whole from the fraction at which factorizing it would cost as
    many MACs as the layer itself (`Space.whole_from`), so cost never falls as the value grows.
    """

    low: Fraction = 0.25
    high: Fraction = 1.0
    scheme: Annotated[str, OneOf(RANK_SCHEMES)] = "pair"
    kind = "rank"

    def __post_init__(self) -> None:
        _check_range(self, "rank")


@dataclass(frozen=True)
class ChoiceDim:
    """One of a few fractions in (0, 1], kept sorted and without repeats."""

    choices: tuple[float, ...]
    kind = "choice"

    def __post_init__(self) -> None:
        values = tuple(sorted({float(c) for c in self.choices}))
        if not values or not all(0 < c <= 1 and math.isfinite(c) for c in values):
            raise ConfigError(
                f"{self.kind} choices {list(self.choices)!r} are not allowed; need one or more numbers in (0, 1]."
            )
        object.__setattr__(self, "choices", values)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)

    @property
    def low(self) -> float:
        return self.choices[0]

    @property
    def high(self) -> float:
        return self.choices[-1]

    def clip(self, value: float) -> float:
        """The nearest choice."""
        return min(self.choices, key=lambda choice: (abs(choice - float(value)), choice))

    def scaled(self, value: float, factor: float) -> float:
        """The largest choice not above ``value x factor`` (the smallest choice when every choice is above it)."""
        target = value * factor
        return max((c for c in self.choices if c <= target + 1e-12), default=self.choices[0])

    def sample(self, rng: np.random.Generator) -> float:
        return self.choices[int(rng.integers(len(self.choices)))]


@dataclass(frozen=True)
class WidthMultiplier(ChoiceDim):
    """MobileNet's width multiplier: every layer's channels scaled by one of ``choices``."""

    choices: tuple[float, ...] = (0.5, 0.75, 1.0)
    kind = "width"


@dataclass(frozen=True)
class Resolution(ChoiceDim):
    """MobileNet's resolution multiplier: the input's height and width scaled by one of ``choices``."""

    choices: tuple[float, ...] = (0.75, 0.875, 1.0)
    kind = "resolution"


@dataclass(frozen=True)
class BitWidth:
    """Bits of a layer's weights (``target="weights"``) or inputs (``"activations"``), a whole number in [low, high].

    ``frozen``: the bits frozen layers keep under this dimension (None: floating point), 8 as
    in HAQ and most quantization papers.
    """

    low: Bits = 2
    high: Bits = 8
    target: str = "weights"
    frozen: Bits | None = 8

    def __post_init__(self) -> None:
        for value in (self.low, self.high):
            if not isinstance(value, int) or isinstance(value, bool) or not MIN_BITS <= value <= MAX_BITS:
                raise ConfigError(
                    f"bit-width {value!r} is not allowed; allowed: a whole number from {MIN_BITS} to {MAX_BITS}."
                )
        if self.low > self.high:
            raise ConfigError(f"bit-width range [{self.low}, {self.high}] is empty; need low <= high.")
        if self.target not in ("weights", "activations"):
            raise ConfigError(f"bit-width target {self.target!r} is not known; allowed: weights, activations.")
        if self.frozen is not None and (not isinstance(self.frozen, int) or not MIN_BITS <= self.frozen <= MAX_BITS):
            raise ConfigError(
                f"frozen layers' bit-width {self.frozen!r} is not allowed; allowed: None or "
                f"a whole number from {MIN_BITS} to {MAX_BITS}."
            )

    @property
    def kind(self) -> str:
        return "weight_bits" if self.target == "weights" else "act_bits"

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.IntDistribution(self.low, self.high)

    def clip(self, value: float) -> int:
        return min(self.high, max(self.low, round(float(value))))

    def scaled(self, value: float, factor: float) -> int:
        """``value x factor`` rounded down (so a factor below 1 always lowers or keeps the bits)."""
        return min(self.high, max(self.low, math.floor(value * factor + 1e-9)))

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))


Dimension = PruneRatio | LowRank | WidthMultiplier | Resolution | BitWidth
