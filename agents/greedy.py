"""Greedy baselines that walk from the largest policy down to the budget: ``sensitivity`` and ``autoslim``.

Both follow a path of policies P_0 = the space's largest, P_1, ... whose budget use (the
largest fraction of a limit used, `Budget.usage`) falls by the same amount per iteration,
from usage(P_0) to 1 in ``iterations`` iterations. Iteration k proposes

1. the budget's projection of P_k: a feasible candidate, so every iteration gives a result
   (the first is `uniform`'s);
2. probes: P_k itself while its accuracy is unknown, and one policy per decision that can
   save budget use, P_k with that decision lowered. Probes are measured as they are, outside
   the budget, and only choose P_{k+1}.

Once P_k is within the budget its projection is the last proposal. The evaluator scores each
policy after BN recalibration and a short distilled fine-tune from the baseline weights:
that is the short fine-tune after every greedy step. Only the decisions whose kind the budget
depends on move. The path follows from the told accuracies alone (a failed evaluation counts
as 0, a pruned one with its last score), so a resumed agent proposes what the uninterrupted
one would.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from agents.base import Agent, is_number, is_whole, register_agent
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy
from search_spaces import Budget, Decision, Space, largest_where, scaled

Params = dict[str, float]

_BISECTION_STEPS = 16
"""Halvings of a scaling factor: 2^-16 of a value, finer than one channel of any layer."""


@dataclass(frozen=True)
class GreedyOptions:
    iterations: int = 4
    """Iterations from the largest policy to the budget: each saves 1/iterations of the budget use to shed."""

    def __post_init__(self) -> None:
        if not is_whole(self.iterations) or self.iterations < 1:
            raise ValueError(f"iterations {self.iterations!r} is not allowed; need a whole number >= 1.")


@dataclass(frozen=True)
class SensitivityOptions(GreedyOptions):
    fraction: float = 0.5
    """The share of the probed decisions, least sensitive first, lowered together per iteration."""
    probe_step: float = 0.1
    """A probe multiplies its decision by 1 - probe_step (10% fewer channels, a bit less), again until it saves."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_number(self.fraction) or not 0 < self.fraction <= 1:
            raise ValueError(f"fraction {self.fraction!r} is not allowed; need a number in (0, 1].")
        if not is_number(self.probe_step) or not 0 < self.probe_step < 1:
            raise ValueError(f"probe_step {self.probe_step!r} is not allowed; need a number in (0, 1).")


def _accuracy(result: EvalResult | None) -> float:
    return 0.0 if result is None else result.accuracy


class GreedyAgent(Agent):
    """The walk shared by both agents; a subclass says how a decision is probed and how P_{k+1} is chosen."""

    Options = GreedyOptions
    parallel = False
    stoppable = False

    def __init__(
        self, space: Space, budget: Budget, seed: int = 0, projection: str = "auto", options: Any = None
    ) -> None:
        super().__init__(space, budget, seed, projection, options)
        self.movable = [d for d in space.decisions if d.kind in budget.kinds]
        self.point = space.to_params(space.largest())
        self.reference: float | None = None
        """The accuracy of P_k when a probe has measured it."""
        self.iteration = 0
        self._start = self.usage(self.point)
        self._plan()

    @abstractmethod
    def probe(self, d: Decision) -> Params:
        """P_k with ``d`` lowered, which measures ``d``'s sensitivity (``d`` can save budget use)."""

    @abstractmethod
    def step(self, scores: list[float]) -> tuple[Params, float | None]:
        """P_{k+1} from the probes' accuracies (in the order of ``self.probed``), with its accuracy when known."""

    def propose(self) -> Policy | None:
        done = len(self._scores)
        return self._proposals[done] if done < len(self._proposals) else None

    def project(self, proposal: Policy) -> Policy:
        """Every proposal as it is: candidates are proposed already projected, probes are measured unchanged."""
        return proposal

    def is_probe(self, proposal: Policy) -> bool:
        """One of this iteration's measurements (P_k, the slimmed P_k), never a result even when within the budget."""
        return proposal.key() in self._probe_keys

    def tell(self, proposal: Policy, result: EvalResult | None) -> None:
        super().tell(proposal, result)
        self._scores.append(_accuracy(result))
        if len(self._scores) == len(self._proposals) and self.probed:
            scores = self._scores[1:]
            if self.reference is None:
                self.reference, scores = scores[0], scores[1:]
            self.point, self.reference = self.step(scores)
            self.iteration += 1
            self._plan()

    def usage(self, params: Params) -> float:
        return self.budget.usage(self.space.to_policy(params))

    def target(self) -> float:
        """The budget use this iteration brings the path down to (1 from the last planned iteration on)."""
        left = max(0, self.options.iterations - self.iteration - 1)
        return 1 + (self._start - 1) * left / self.options.iterations

    def sensitivities(self, scores: list[float]) -> list[float]:
        """Accuracy lost per budget use saved, for each probed decision."""
        reference = self.reference
        if reference is None:
            raise ValueError("sensitivities are measured against a reference accuracy; none was scored yet.")
        now = self.usage(self.point)
        return [(reference - score) / (now - self.usage(probe)) for score, probe in zip(scores, self.probes)]

    def largest_factor(self, decisions: list[Decision], target: float) -> float | None:
        """The largest factor in [0, 1] scaling ``decisions`` of P_k to a budget use <= ``target``; None if none does."""

        def holds(factor: float) -> bool:
            return self.usage(scaled(self.point, decisions, factor)) <= target

        return largest_where(holds, 0.0, 1.0, _BISECTION_STEPS) if holds(0.0) else None

    def _plan(self) -> None:
        """Iteration k's proposals: P_k's projection, then (P_k over budget) P_k while unmeasured and the probes."""
        policy = self.space.to_policy(self.point)
        self._proposals = [self.budget.project(self.space, policy, self.projection)]
        self._scores: list[float] = []
        self.probed: list[Decision] = []
        self.probes: list[Params] = []
        self._probe_keys: set[str] = set()
        if self.budget.feasible(policy):
            return
        now = self.usage(self.point)
        while now <= self.target() and self.iteration < self.options.iterations - 1:  # a coarse step overshot
            self.iteration += 1
        probes = [(d, self.probe(d)) for d in self.movable if self.usage(scaled(self.point, [d], 0.0)) < now]
        probes = [(d, params) for d, params in probes if self.usage(params) < now]  # each one saves something
        self.probed, self.probes = [d for d, _ in probes], [params for _, params in probes]
        measured = [
            self.space.to_policy(params)
            for params in ([] if self.reference is not None else [self.point]) + self.probes
        ]
        self._proposals += measured
        self._probe_keys = {policy.key() for policy in measured}


@register_agent("sensitivity")
class SensitivityAgent(GreedyAgent):
    """Iterative pruning by sensitivity (Han et al. 2015; NetAdapt's loop with a common step).

    Each iteration measures P_k and, per decision, P_k with that decision one step lower; the
    least sensitive ``fraction`` of the decisions (accuracy lost per budget use saved) are
    then lowered by one common factor, found by bisection, to this iteration's budget use.
    When they cannot get there alone, the next least sensitive join them. A run takes
    ``iterations x (decisions + 2) + 1`` evaluations while every decision can still save.
    """

    Options = SensitivityOptions

    def probe(self, d: Decision) -> Params:
        params, now = dict(self.point), self.usage(self.point)
        while True:  # a step that rounds to the same channel count saves nothing: step again
            params[d.name] = d.dim.scaled(params[d.name], 1 - self.options.probe_step)
            if self.usage(params) < now or params[d.name] == d.dim.low:
                return params

    def evaluations_wanted(self) -> int:
        return self.options.iterations * (len(self.probed) + 2) + 1

    def step(self, scores: list[float]) -> tuple[Params, float | None]:
        sensitivity = dict(zip((d.name for d in self.probed), self.sensitivities(scores)))
        order = sorted(self.probed, key=lambda d: sensitivity[d.name])
        order += [d for d in self.movable if d.name not in sensitivity]  # they save nothing alone: last
        target = self.target()
        for count in range(math.ceil(self.options.fraction * len(self.probed)), len(order) + 1):
            factor = self.largest_factor(order[:count], target)
            if factor is not None:
                return scaled(self.point, order[:count], factor), None
        return scaled(self.point, order, 0.0), None


@register_agent("autoslim")
class AutoSlimAgent(GreedyAgent):
    """One-shot greedy slimming (Yu & Huang 2019, AutoSlim), each step measured after BN recalibration.

    Each iteration slims every decision, one at a time, just enough to reach this iteration's
    budget use (to its lowest when it cannot alone); the next point is the slimmed policy
    that loses the least accuracy per budget use saved: among equal savings, the most accurate.
    A run takes ``iterations x (decisions + 1) + 2`` evaluations while every slimmed decision
    reaches its target (P_0 is measured once; later points were measured as probes).
    """

    def probe(self, d: Decision) -> Params:
        return scaled(self.point, [d], self.largest_factor([d], self.target()) or 0.0)

    def evaluations_wanted(self) -> int:
        return self.options.iterations * (len(self.probed) + 1) + 2

    def step(self, scores: list[float]) -> tuple[Params, float | None]:
        sensitivity = self.sensitivities(scores)
        best = min(range(len(scores)), key=sensitivity.__getitem__)
        return self.probes[best], scores[best]
