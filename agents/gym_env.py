"""The layer-by-layer episode (`agents.layer_env`) as a gymnasium environment; it passes stable-baselines3's
``check_env``. gymnasium comes with the ``rl`` extra, which the AMC and HAQ agents need."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import numpy as np

from agents.layer_env import DYNAMIC_FEATURES, Episode, reward_of, static_features
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy
from search_spaces import Budget, Space


class CompressionEnv(gymnasium.Env):
    """The layer-by-layer episode as a gymnasium environment: the reward comes once, at the last decision.

    ``score`` evaluates a policy; ``projection`` brings the episode's policy onto the budget before it is
    scored (AMC: ``wall``, HAQ: ``bits``), and the info of the last step holds both.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  # an instance variable of gymnasium.Env

    def __init__(
        self,
        space: Space,
        budget: Budget,
        score: Callable[[Policy], EvalResult | None],
        reward: str = "error",
        wall: bool = True,
        projection: str = "wall",
    ) -> None:
        self.space, self.budget, self.score = space, budget, score
        self.reward_name, self.wall, self.projection = reward, wall, projection
        self.features = static_features(space, budget)
        self.largest_macs = budget.graph.predict_macs(space.largest())
        """The MACs a failed evaluation is rewarded at (the worst)."""
        self.observation_space = gymnasium.spaces.Box(
            0.0, 1.0, (self.features.shape[1] + DYNAMIC_FEATURES,), np.float32
        )
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.episode = Episode(space, budget, self.features, wall)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.episode = Episode(self.space, self.budget, self.features, self.wall)
        return self.episode.observation(), {}

    def step(self, action: Sequence[float]) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.episode.act(float(np.asarray(action).reshape(-1)[0]))
        if not self.episode.done:
            return self.episode.observation(), 0.0, False, False, {}
        proposal = self.episode.policy()
        policy = self.budget.project(self.space, proposal, self.projection)
        result = self.score(policy)
        info = {"proposal": proposal, "policy": policy, "result": result}
        return self.episode.observation(), reward_of(result, self.reward_name, self.largest_macs), True, False, info
