"""Baselines every search is compared with: uniform and random."""

from __future__ import annotations

import numpy as np

from agents.base import Agent, register_agent
from autocomp.policy import Policy


@register_agent("uniform")
class UniformAgent(Agent):
    """Keeps every layer whole; projection then shrinks all layers by the same factor to the budget."""

    def ask(self) -> Policy | None:
        return self.space.fill(1.0) if self.told == 0 else None


@register_agent("random")
class RandomAgent(Agent):
    """Independent uniform keep ratios per decision; candidate n depends only on (seed, n)."""

    def ask(self) -> Policy:
        rng = np.random.default_rng([self.seed, self.told])
        return self.space.to_policy(
            {d.name: rng.uniform(d.dim.low, d.dim.high) for d in self.space.decisions}
        )
