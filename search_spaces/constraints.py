"""Constraint: a budget on a cost metric, and the projection of any proposal into it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autocomp.cost import Cost
from autocomp.errors import ConfigError, InfeasibleError
from autocomp.graph import ModelGraph
from autocomp.policy import Policy
from search_spaces.space import Space

_PREDICTORS: dict[str, Callable[[ModelGraph, Policy], int]] = {
    "macs": lambda graph, policy: graph.predict_macs(policy),
    "flops": lambda graph, policy: 2 * graph.predict_macs(policy),
    "bops": lambda graph, policy: graph.predict_bops(policy),
}
"""Each metric a constraint may bound, predicted exactly from the graph (tested equal to the measured cost)."""
_METRICS = tuple(_PREDICTORS)
_BISECTION_STEPS = 40


@dataclass(frozen=True)
class Constraint:
    """``metric`` of the compressed model must be at most ``limit`` (an absolute count)."""

    metric: str
    limit: float

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ConfigError(f"constraint metric {self.metric!r} is not supported yet; allowed: {', '.join(_METRICS)}.")

    @classmethod
    def create(cls, metric: str, max_value: float, relative: bool, baseline: Cost) -> Constraint:
        """A limit given as a fraction of ``baseline`` (``relative``) or as an absolute count."""
        if metric not in _METRICS:
            raise ConfigError(f"constraint metric {metric!r} is not supported yet; allowed: {', '.join(_METRICS)}.")
        return cls(metric, max_value * getattr(baseline, metric) if relative else max_value)

    def value(self, graph: ModelGraph, policy: Policy) -> int:
        """The constrained metric of ``policy``'s compressed model, predicted exactly from the graph."""
        return _PREDICTORS[self.metric](graph, policy)

    def value_of(self, cost: Cost) -> int:
        """The constrained metric of a measured cost."""
        return getattr(cost, self.metric)

    def feasible(self, graph: ModelGraph, policy: Policy) -> bool:
        return self.value(graph, policy) <= self.limit

    def check_reachable(self, graph: ModelGraph, space: Space) -> None:
        """Raise `InfeasibleError` before the search when even the smallest policy is over budget."""
        smallest = space.to_policy({d.name: d.dim.low for d in space.decisions})
        reachable = self.value(graph, smallest)
        if reachable > self.limit:
            raise InfeasibleError(
                f"{self.metric} budget {self.limit:,.0f} cannot be met: the smallest model this space reaches "
                f"has {reachable:,} {self.metric}."
            )

    def project(self, graph: ModelGraph, space: Space, policy: Policy) -> Policy:
        """The policy on the budget's edge nearest ``policy``: all keep ratios scaled by one factor.

        Over-budget proposals shrink and under-budget ones grow (each ratio clipped to its
        range), so no candidate wastes budget; the factor is the largest feasible one, found by
        bisection. A proposal whose every ratio can grow to its maximum within budget does so.
        """
        params = space.to_params(policy)
        ceiling = max(d.dim.high / params[d.name] for d in space.decisions) if params else 1.0

        def scaled(factor: float) -> Policy:
            return space.to_policy({name: value * factor for name, value in params.items()})

        if self.feasible(graph, scaled(ceiling)):
            return scaled(ceiling)
        low, high = 0.0, ceiling
        for _ in range(_BISECTION_STEPS):
            mid = (low + high) / 2
            if self.feasible(graph, scaled(mid)):
                low = mid
            else:
                high = mid
        return scaled(low)
