"""HAQ (Wang et al., 2019): DDPG decides each layer's weight and activation bits in turn."""

from __future__ import annotations

import dataclasses

from agents.base import register_agent
from agents.layerwise import LayerwiseAgent, LayerwiseOptions


@dataclasses.dataclass(frozen=True)
class HaqOptions(LayerwiseOptions):
    """HAQ rewards the accuracy (its lambda x (accuracy - baseline accuracy) is the same after the moving baseline)."""

    reward: str = "accuracy"


@register_agent("haq")
class HaqAgent(LayerwiseAgent):
    """Layer-by-layer DDPG over bit-widths (and any other decisions of the space, jointly).

    Actions map to whole bits by equal bins (HAQ's rounding of a continuous action). The
    episode runs free; its policy is then brought onto the budget by lowering bits, most
    bits first, as HAQ does (projection ``bits``; ``auto`` picks it when the budget depends on bits).
    """

    Options = HaqOptions
