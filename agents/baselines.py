"""Baselines every search is compared with: uniform and random."""

from __future__ import annotations

import numpy as np

from agents.base import Agent, register_agent
from autocomp.policy import Policy


@register_agent("uniform")
class UniformAgent(Agent):
    """Every decision at its largest value; projection then shrinks them all by one factor to the budget."""

    parallel = False

    def propose(self) -> Policy | None:
        return self.space.largest() if self.told == 0 else None


@register_agent("random")
class RandomAgent(Agent):
    """Independent uniform values per decision; candidate n depends only on (seed, n) when asked one at a time."""

    def propose(self) -> Policy:
        return self.space.sample(np.random.default_rng([self.seed, *self.draw_key]))
