"""What is decided and under which budget: the ``constraints``, ``space`` and ``latency`` sections.

The axes are the search space's dimensions (`PruneRatio`, `BitWidth`, `LowRank`) with the grouping a run adds, and
``latency`` is the library's `LatencySettings`, so each field and default is defined once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, field_validator, model_validator, with_config

from autocomp.app.config.section import STRICT, Section
from autocomp.settings import OneOf
from search_spaces.dims import Bits, BitWidth, LowRank, PruneRatio
from search_spaces.metrics import METRICS
from search_spaces.projection import METHODS
from search_spaces.space import DEFAULT_FROZEN, GROUPINGS

Grouping = Annotated[str, OneOf(GROUPINGS)]


class ConstraintConfig(Section):
    """``max`` is a fraction of the baseline in (0, 1] when ``relative``, else an absolute value (ms for latency_ms)."""

    metric: Annotated[str, OneOf(METRICS)] = "macs"
    max: float = Field(gt=0)
    relative: bool = True

    @model_validator(mode="after")
    def _ratio_in_range(self) -> ConstraintConfig:
        if self.relative and not 0 < self.max <= 1:
            raise ValueError(
                f"relative constraint max={self.max} is outside (0, 1]; set relative: false for an absolute limit"
            )
        return self


@with_config(STRICT)
@dataclass(frozen=True)
class KeepAxisConfig(PruneRatio):
    """Channels kept per coupled group (``layer`` and ``group`` alike), per stage or globally."""

    grouping: Grouping = "group"

    def dim(self) -> PruneRatio:
        return PruneRatio(self.low, self.high)


@with_config(STRICT)
@dataclass(frozen=True)
class BitsAxisConfig:
    """Bits in [low, high]; frozen layers keep ``frozen`` bits (null: floating point)."""

    low: Bits = BitWidth.low
    high: Bits = BitWidth.high
    grouping: Grouping = "layer"
    frozen: Bits | None = BitWidth.frozen

    def __post_init__(self) -> None:
        self.dim("weights")  # the dimension's own checks: low <= high

    def dim(self, target: str) -> BitWidth:
        """The dimension of the weights' or the activations' bits."""
        return BitWidth(self.low, self.high, target, self.frozen)


@with_config(STRICT)
@dataclass(frozen=True)
class RankAxisConfig(LowRank):
    """The fraction of each layer's full rank kept by an SVD factorization (1.0: left whole)."""

    grouping: Grouping = "layer"

    def dim(self) -> LowRank:
        return LowRank(self.low, self.high, self.scheme)


class ChoicesConfig(Section):
    """A model-wide multiplier chosen from ``choices`` in (0, 1]."""

    choices: list[float] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _fractions(cls, choices: list[float]) -> list[float]:
        bad = [c for c in choices if not 0 < c <= 1]
        if bad:
            raise ValueError(f"choice {bad[0]} is outside (0, 1]")
        return choices


class SpaceConfig(Section):
    """What the search decides: each axis set (a mapping) is searched, each null is left alone.

    ``frozen``: layers no axis touches (names, or first/last). ``projection``: how proposals
    reach the budget: auto, scale, bits (lower bits first) or wall (AMC's sequential wall).
    """

    keep: KeepAxisConfig | None = KeepAxisConfig()
    weight_bits: BitsAxisConfig | None = None
    act_bits: BitsAxisConfig | None = None
    rank: RankAxisConfig | None = None
    width: ChoicesConfig | None = None
    resolution: ChoicesConfig | None = None
    frozen: list[str] = Field(default_factory=lambda: list(DEFAULT_FROZEN))
    channel_multiple: int = Field(default=1, ge=1)
    projection: Annotated[str, OneOf(METHODS)] = "auto"

    @model_validator(mode="after")
    def _something_to_decide(self) -> SpaceConfig:
        axes = (self.keep, self.weight_bits, self.act_bits, self.rank, self.width, self.resolution)
        if all(axis is None for axis in axes):
            raise ValueError(
                "every axis is null, so there is nothing to search; set at least one of keep, weight_bits, "
                "act_bits, rank, width, resolution"
            )
        if self.act_bits is not None and self.weight_bits is None:
            raise ValueError("act_bits needs weight_bits too: a layer is quantized weights first")
        return self
