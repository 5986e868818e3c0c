"""Constraints and budgets: limits on cost metrics, predicted for any policy without building its model."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autocomp.cost import Cost
from autocomp.cost.format import format_number
from autocomp.errors import ConfigError, InfeasibleError
from autocomp.graph import ModelGraph
from autocomp.policy import Policy
from search_spaces.metrics import AFFECTED_BY, METRICS
from search_spaces.projection import project
from search_spaces.space import Space

if TYPE_CHECKING:
    from autocomp.latency_table import LatencyTable

_UNITS = {"latency_ms": "ms", "size_bytes": "bytes"}


def _check_metric(metric: object) -> None:
    if metric not in METRICS:
        raise ConfigError(f"constraint metric {metric!r} is not known; allowed: {', '.join(METRICS)}.")


@dataclass(frozen=True)
class Constraint:
    """``metric`` of the compressed model must be at most ``limit`` (an absolute value)."""

    metric: str
    limit: float

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if not isinstance(self.limit, (int, float)) or isinstance(self.limit, bool) or not 0 < self.limit < math.inf:
            raise ConfigError(f"{self.metric} limit {self.limit!r} is not allowed; need a positive, finite number.")

    @classmethod
    def create(cls, metric: str, max_value: float, relative: bool, baseline: Cost) -> Constraint:
        """A limit given as a fraction of ``baseline``'s value (``relative``) or as an absolute value."""
        _check_metric(metric)
        if relative:
            reference = getattr(baseline, metric)
            if reference is None:
                raise ConfigError(f"a relative {metric} limit needs the baseline's {metric}, which was not measured.")
            return cls(metric, max_value * reference)
        return cls(metric, max_value)

    def value_of(self, cost: Cost) -> float:
        """The constrained metric of a measured cost."""
        value = getattr(cost, self.metric)
        if value is None:
            raise ValueError(f"the cost has no {self.metric}: measure it with a latency target.")
        return value

    def describe(self, value: float | None = None) -> str:
        """``macs <= 15,510,976`` (with a value: ``macs 15,400,000 <= 15,510,976``)."""
        shown = "" if value is None else f" {format_number(value)}"
        return f"{self.metric}{shown} <= {format_number(self.limit)}{' ' + _UNITS[self.metric] if self.metric in _UNITS else ''}"


def refuse_latency_with_bits(space: Space) -> None:
    """Latency is measured on the model `compress` returns, whose quantized layers are simulated in floating point."""
    if space.of_kind("weight_bits", "act_bits"):
        raise ConfigError(
            "a latency_ms constraint cannot be combined with a bit-width axis: simulated quantization's "
            "latency is not a deployment latency; constrain bops or size_bytes instead."
        )


class Budget:
    """Several constraints on one model, all predicted exactly from its graph (latency: from a lookup table)."""

    def __init__(
        self, graph: ModelGraph, constraints: Sequence[Constraint], latency: LatencyTable | None = None
    ) -> None:
        if not constraints:
            raise ConfigError("a budget needs at least one constraint; allowed metrics: " + ", ".join(METRICS) + ".")
        metrics = [c.metric for c in constraints]
        repeated = sorted({m for m in metrics if metrics.count(m) > 1})
        if repeated:
            raise ConfigError(f"metric {repeated[0]} is constrained twice; give each metric one limit.")
        if "latency_ms" in metrics and latency is None:
            raise ConfigError("a latency_ms constraint needs a latency target to build its lookup table.")
        self.graph = graph
        self.constraints = tuple(constraints)
        self._latency_ratios: list[float] = []
        self._predictors: dict[str, Callable[[Policy], float]] = {
            "macs": lambda policy: graph.predict_macs(policy),
            "flops": lambda policy: 2 * graph.predict_macs(policy),
            "bops": lambda policy: graph.predict_bops(policy),
            "params": lambda policy: graph.predict_params(policy),
            "size_bytes": lambda policy: math.ceil(graph.predict_size_bits(policy) / 8),
        }
        if latency is not None:
            self._predictors["latency_ms"] = latency.predict_ms

    @property
    def metrics(self) -> list[str]:
        return [c.metric for c in self.constraints]

    @property
    def kinds(self) -> set[str]:
        """The kinds of decisions this budget depends on."""
        return set().union(*(AFFECTED_BY[c.metric] for c in self.constraints))

    def value(self, metric: str, policy: Policy) -> float:
        """``metric`` of ``policy``'s compressed model, predicted (latency corrected by what was measured so far)."""
        value = self._predictors[metric](policy)
        return value * self.latency_correction if metric == "latency_ms" else value

    @property
    def latency_correction(self) -> float:
        """The upper quartile of measured / predicted latency over the observed candidates (1 before any).

        Timing noise puts about half the candidates projected onto the limit over it when
        measured; with the upper quartile about three in four measure within it.
        """
        ratios = self._latency_ratios
        if len(ratios) < 2:
            return ratios[0] if ratios else 1.0
        return statistics.quantiles(ratios, n=4, method="inclusive")[2]

    def observe(self, policy: Policy, cost: Cost) -> None:
        """Learn from a built candidate's measured cost: its latency corrects later latency predictions.

        The lookup table is timed layer by layer; the whole model runs a little faster or slower
        on the day (other processes, caches), and the measured candidates say by how much.
        """
        if "latency_ms" in self.metrics and cost.latency_ms is not None:
            self._latency_ratios.append(cost.latency_ms / self._predictors["latency_ms"](policy))

    def values(self, policy: Policy) -> dict[str, float]:
        return {c.metric: self.value(c.metric, policy) for c in self.constraints}

    def describe(self, policy: Policy) -> str:
        """``macs 1,234 (limit 1,000); params ...``: every constrained metric of ``policy`` beside its limit."""
        values = self.values(policy)
        return "; ".join(
            f"{c.metric} {format_number(values[c.metric])} (limit {format_number(c.limit)})" for c in self.constraints
        )

    def usage(self, policy: Policy) -> float:
        """The largest fraction of a limit ``policy`` uses (above 1: over budget)."""
        return max(self.value(c.metric, policy) / c.limit for c in self.constraints)

    def feasible(self, policy: Policy) -> bool:
        return all(self.value(c.metric, policy) <= c.limit for c in self.constraints)

    def violated(self, policy: Policy) -> list[Constraint]:
        """The constraints ``policy`` does not meet."""
        return [c for c in self.constraints if self.value(c.metric, policy) > c.limit]

    def feasible_cost(self, cost: Cost) -> bool:
        """Whether a measured cost meets every constraint (the check on every built candidate)."""
        return all(c.value_of(cost) <= c.limit for c in self.constraints)

    def measured_usage(self, cost: Cost) -> float:
        """The largest fraction of a limit a measured cost uses (above 1: over budget)."""
        return max(c.value_of(cost) / c.limit for c in self.constraints)

    def check_reachable(self, space: Space) -> None:
        """Refuse, before the search, a budget that even the smallest policy of ``space`` is over."""
        if "latency_ms" in self.metrics:
            refuse_latency_with_bits(space)
        smallest = space.smallest()
        if not self.feasible(smallest):
            raise InfeasibleError(
                f"the budget cannot be met: the smallest model this space reaches has {self.describe(smallest)}."
            )

    def project(self, space: Space, policy: Policy, method: str = "auto") -> Policy:
        """The feasible policy nearest ``policy`` (see `search_spaces.projection.project`)."""
        return project(self, space, policy, method)
