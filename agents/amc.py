"""AMC (He et al., 2018): DDPG decides each layer's keep ratio in turn, behind the action wall."""

from __future__ import annotations

from typing import Any

from agents.base import register_agent
from agents.layerwise import LayerwiseAgent
from autocomp.errors import ConfigError
from search_spaces import Budget, Space


@register_agent("amc")
class AmcAgent(LayerwiseAgent):
    """Layer-by-layer DDPG with AMC's state, rewards and action wall; every decision of the space (joint with bits).

    Each action is clipped during the episode to the largest value with which the later
    decisions, at their lowest, still fit the budget, so the states see the budget as it is
    spent; the evaluated policy is the wall's projection, filled to >= 97% of the budget.
    """

    wall = True

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        if projection not in ("auto", "wall"):
            raise ConfigError(
                f"agent 'amc' decides behind the action wall; projection {projection!r} is not allowed "
                "with it (allowed: auto, wall)."
            )
        super().__init__(space, budget, seed, "wall", options)
