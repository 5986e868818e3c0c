"""Layer by layer: an episode decides a space's decisions in order, as AMC and HAQ do.

The state of step t embeds decision t (its position, kind, and its layers' channels,
stride, kernel, feature map size, MACs, parameters, depthwise or not), min-max normalised
over the decisions, beside what the episode has decided so far (the budget use already
saved, what the later decisions can still add, the slack left if they all go to their
lowest) and the previous action. Actions lie in [-1, 1] and map onto the decision's range
(discrete values, bits and choices, by equal bins). With the action wall (AMC) each value
is clipped to the largest that lets the later decisions fit the budget at their lowest.

`agents.gym_env.CompressionEnv` is the same episode as a gymnasium environment, for
``learn()`` users; the agents drive episodes themselves through ask/tell.
"""

from __future__ import annotations

import math

import numpy as np

from autocomp.evaluate import EvalResult
from autocomp.graph import LayerInfo
from autocomp.policy import Policy
from search_spaces import BitWidth, Budget, Decision, Space, largest_feasible
from search_spaces.dims import ChoiceDim

KINDS = ("keep", "rank", "weight_bits", "act_bits", "width", "resolution")
REWARDS = ("error", "error_log_macs", "accuracy")
"""AMC's -error (constrained search) and -error x log(MACs) (accuracy-guaranteed), or the accuracy itself."""


def reward_of(result: EvalResult | None, name: str, largest_macs: int) -> float:
    """The episode's reward for ``result``; a failed evaluation scores as the worst: accuracy 0 at ``largest_macs``."""
    if result is None or result.cost is None or math.isnan(result.accuracy):
        accuracy, macs = 0.0, largest_macs
    else:
        accuracy, macs = result.accuracy, result.cost.macs
    if name == "accuracy":
        return accuracy
    if name == "error":
        return accuracy - 1.0
    return -(1.0 - accuracy) * math.log(max(macs, 2))


def _discrete(decision: Decision) -> list[float] | None:
    dim = decision.dim
    if isinstance(dim, BitWidth):
        return [float(b) for b in range(dim.low, dim.high + 1)]
    if isinstance(dim, ChoiceDim):
        return sorted(dim.choices)
    return None


def to_value(decision: Decision, action: float) -> float:
    """The value of ``decision`` an action in [-1, 1] stands for (discrete values: equal bins)."""
    unit = (min(max(float(action), -1.0), 1.0) + 1.0) / 2.0
    values = _discrete(decision)
    if values is None:
        return decision.dim.low + unit * (decision.dim.high - decision.dim.low)
    return values[min(len(values) - 1, int(unit * len(values)))]


def to_action(decision: Decision, value: float) -> float:
    """The action in [-1, 1] that stands for ``value`` (the centre of its bin for discrete values)."""
    values = _discrete(decision)
    if values is None:
        span = decision.dim.high - decision.dim.low
        return 2.0 * (value - decision.dim.low) / span - 1.0 if span > 0 else 0.0
    index = min(range(len(values)), key=lambda i: abs(values[i] - value))
    return -1.0 + (2 * index + 1) / len(values)


def _layer_features(decision: Decision, layers: dict[str, LayerInfo]) -> list[float]:
    own = [layers[name] for name in decision.layers if name in layers]
    if not own:  # a model-wide multiplier: the whole model
        own = list(layers.values())
    first = own[0]
    return [
        first.in_channels,
        first.out_channels,
        max(first.stride, default=1),
        math.prod(first.kernel_size),
        math.prod(first.output_shape[1:]),
        sum(layer.macs for layer in own),
        sum(layer.params for layer in own),
        float(first.depthwise),
    ]


def static_features(space: Space, budget: Budget) -> np.ndarray:
    """Per decision: position, kind (one-hot) and its layers' shape and cost, min-max normalised over the decisions."""
    layers = {layer.name: layer for layer in budget.graph.layers}
    count = len(space.decisions)
    rows = [
        [t / max(count - 1, 1)] + [float(d.kind == kind) for kind in KINDS] + _layer_features(d, layers)
        for t, d in enumerate(space.decisions)
    ]
    table = np.asarray(rows, dtype=np.float64)
    low, span = table.min(axis=0), np.ptp(table, axis=0)
    return np.where(span > 0, (table - low) / np.where(span > 0, span, 1.0), 0.0)


DYNAMIC_FEATURES = 4
"""Budget use saved so far, what the later decisions can still add, slack with them at their lowest, previous action."""


class Episode:
    """One pass over the space's decisions, in order; ``take`` fixes the next one."""

    def __init__(self, space: Space, budget: Budget, features: np.ndarray, wall: bool) -> None:
        self.space, self.budget, self.features, self.wall = space, budget, features, wall
        self.decided: dict[str, float] = {}
        self.previous_action = 0.0
        self._full = budget.usage(space.largest())

    @property
    def step(self) -> int:
        return len(self.decided)

    @property
    def done(self) -> bool:
        return self.step == len(self.space.decisions)

    @property
    def decision(self) -> Decision:
        return self.space.decisions[self.step]

    def _params(self, later: str) -> dict[str, float]:
        """The decided values, the others at their ``later`` ('low' or 'high') end."""
        return {**{d.name: getattr(d.dim, later) for d in self.space.decisions}, **self.decided}

    def observation(self) -> np.ndarray:
        """The state before the next decision (zeros once every decision is taken)."""
        size = self.features.shape[1] + DYNAMIC_FEATURES
        if self.done:
            return np.zeros(size, dtype=np.float32)
        high = self.budget.usage(self.space.to_policy(self._params("high")))
        low = self.budget.usage(self.space.to_policy(self._params("low")))
        dynamic = [
            (self._full - high) / self._full,
            (high - low) / self._full,
            1.0 - low,
            (self.previous_action + 1) / 2,
        ]
        return np.clip(np.concatenate([self.features[self.step], dynamic]), 0.0, 1.0).astype(np.float32)

    def act(self, action: float) -> float:
        """Take the value ``action`` stands for (behind the wall, if any); returns the value taken."""
        value = to_value(self.decision, action)
        if self.wall:
            value = largest_feasible(self.budget, self.space, self._params("low"), self.decision, value)
        self.take(value)
        return value

    def take(self, value: float) -> None:
        """Fix the next decision at ``value`` (a replayed proposal's value, taken as it was)."""
        self.previous_action = to_action(self.decision, value)
        self.decided[self.decision.name] = value

    def policy(self) -> Policy:
        return self.space.to_policy(self._params("high"))
