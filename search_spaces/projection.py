"""Projection: any proposal becomes a feasible policy near it that uses the budget.

Three ways down onto the budget, each followed by the same fill:

* ``scale``: every decision the budget depends on is multiplied by one factor, the largest
  feasible one (bisection); under-budget proposals grow the same way.
* ``bits`` (HAQ): bits are lowered one at a time from the cheapest loss upwards (the
  layer with the most bits first, the dearest layer among equals), until the budget holds;
  only then, if bits alone cannot meet it, are the other decisions scaled.
* ``wall`` (AMC's action wall): decisions in order, each clipped to the largest value that
  still lets the budget hold with every later decision at its cheapest.

The fill then raises decisions one step at a time (the next channel count, one more bit,
the next choice) while the budget holds, until it is used to `FILL_TARGET` or nothing fits.
Every result is feasible: each step keeps a policy whose feasibility was checked, starting
from the space's smallest policy, which `Budget.check_reachable` has checked before the search.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from autocomp.errors import ConfigError, InfeasibleError
from autocomp.policy import Policy
from search_spaces.dims import BitWidth, ChoiceDim
from search_spaces.metrics import AFFECTED_BY
from search_spaces.space import Decision, Space

if TYPE_CHECKING:
    from search_spaces.constraints import Budget, Constraint

METHODS = ("auto", "scale", "bits", "wall")
FILL_TARGET = 0.97
"""The budget use a projection aims at when the proposal is below it."""
_BISECTION_STEPS = 40
_RANK_STEPS = 32
"""A low-rank fraction grows by 1/32 of its range per fill step."""


def project(budget: Budget, space: Space, policy: Policy, method: str = "auto") -> Policy:
    """The feasible policy of ``space`` nearest ``policy`` under ``budget``, using at least 97% of it where it can.

    ``auto`` lowers bits first (``bits``) when the space has bit-widths that the budget depends
    on (BOPs, size), and scales (``scale``) otherwise. Only the decisions a violated
    constraint depends on move down: a MACs limit never costs bits. When the result uses less
    than 97% of the budget and the space has choices (width, resolution), the next larger
    choices are tried with the other decisions projected again.
    Raises `InfeasibleError` when no policy is feasible (only possible when the budget's
    latency correction has grown since `Budget.check_reachable`).
    """
    if method not in METHODS:
        raise ConfigError(f"projection {method!r} is not known; allowed: {', '.join(METHODS)}.")
    movable = [d for d in space.decisions if d.kind in budget.kinds]
    if method == "auto":
        method = "bits" if any(isinstance(d.dim, BitWidth) for d in movable) else "scale"
    params = _projected(budget, space, space.to_params(policy), movable, method)
    for d in movable:
        if not isinstance(d.dim, ChoiceDim):
            continue
        if budget.usage(space.to_policy(params)) >= FILL_TARGET:
            break
        for choice in (c for c in d.dim.choices if c > params[d.name]):
            others = [o for o in movable if o is not d]
            trial = _projected(budget, space, {**params, d.name: choice}, others, method)
            if budget.feasible(space.to_policy(trial)) and budget.usage(space.to_policy(trial)) > budget.usage(
                space.to_policy(params)
            ):
                params = trial
    projected = space.to_policy(params)
    if not budget.feasible(projected):
        raise InfeasibleError(
            f"no policy of this space meets the budget any more: its smallest model is predicted at "
            f"{budget.describe(space.smallest())} (latency predictions corrected by measurements "
            f"x{budget.latency_correction:.3f})."
        )
    return projected


def _projected(
    budget: Budget, space: Space, params: dict[str, float], movable: list[Decision], method: str
) -> dict[str, float]:
    """``params`` brought down onto the budget by ``method`` with only ``movable`` changing, then filled."""
    if method == "scale":
        params = _scale(budget, space, params, movable)
    elif method == "bits":
        params = _lower_bits(budget, space, params, movable)
    else:  # behind the wall, then grown by one factor if it left budget unused: the proposal's shape is kept
        params = _scale(budget, space, _wall(budget, space, params, movable), movable)
    return _fill(budget, space, params, movable)


def _feasible(budget: Budget, space: Space, params: Mapping[str, float]) -> bool:
    return budget.feasible(space.to_policy(params))


def _scale(budget: Budget, space: Space, params: dict[str, float], movable: list[Decision]) -> dict[str, float]:
    """Over budget: the decisions the violated constraints depend on, times the largest factor that meets those
    constraints, repeated until every constraint holds. Under budget: all of ``movable`` times the largest
    feasible factor (up to every one at its highest)."""
    if not _violated(budget, space, params):
        return _scaled_to_edge(space, params, movable, budget.feasible)
    for _ in range(len(budget.constraints)):  # each round meets the constraints violated at its start
        broken = _violated(budget, space, params)
        if not broken:
            return params
        kinds = set().union(*(AFFECTED_BY[c.metric] for c in broken))
        moving = [d for d in movable if d.kind in kinds and params[d.name] > d.dim.low]

        def holds(policy: Policy, broken: list[Constraint] = broken) -> bool:
            return all(budget.value(c.metric, policy) <= c.limit for c in broken)

        fine = [d for d in moving if not isinstance(d.dim, ChoiceDim)]  # choices jump: scale them only if need be
        scaled = _scaled_to_edge(space, params, fine, holds)
        params = scaled if fine and holds(space.to_policy(scaled)) else _scaled_to_edge(space, params, moving, holds)
    return (
        params if budget.feasible(space.to_policy(params)) else _scaled_to_edge(space, params, movable, budget.feasible)
    )


def _violated(budget: Budget, space: Space, params: Mapping[str, float]) -> list[Constraint]:
    return budget.violated(space.to_policy(params))


def scaled(params: Mapping[str, float], decisions: list[Decision], factor: float) -> dict[str, float]:
    """``params`` with ``decisions`` scaled by ``factor`` (0: at their lowest), the others unchanged."""
    return {**params, **{d.name: d.dim.scaled(params[d.name], factor) for d in decisions}}


def _scaled_to_edge(
    space: Space, params: dict[str, float], moving: list[Decision], holds: Callable[[Policy], bool]
) -> dict[str, float]:
    """``moving`` times the largest factor (bisection) for which ``holds``; factor 0 puts them at their lowest."""
    if not moving:
        return params
    ceiling = max(d.dim.high / params[d.name] for d in moving)
    return scaled(
        params,
        moving,
        largest_where(lambda factor: holds(space.to_policy(scaled(params, moving, factor))), 0.0, ceiling),
    )


def largest_where(holds: Callable[[float], bool], low: float, high: float, steps: int = _BISECTION_STEPS) -> float:
    """``high`` if it ``holds``, else the largest value in [low, high) found to hold by ``steps`` halvings (``low`` if none)."""
    if holds(high):
        return high
    for _ in range(steps):
        mid = (low + high) / 2
        if holds(mid):
            low = mid
        else:
            high = mid
    return low


def _lower_bits(budget: Budget, space: Space, params: dict[str, float], movable: list[Decision]) -> dict[str, float]:
    """While a constraint that depends on bits is violated, lower one bit, most bits first (dearest layer first among
    equals); whatever bits cannot fix is scaled."""
    params = dict(params)
    bits = [d for d in movable if isinstance(d.dim, BitWidth)]
    macs = budget.graph.layer_macs(space.largest())
    weight = {d.name: sum(macs.get(layer, 0) for layer in d.layers) for d in bits}
    while True:
        kinds = set().union(*(AFFECTED_BY[c.metric] for c in _violated(budget, space, params)))
        lowerable = [d for d in bits if d.kind in kinds and params[d.name] > d.dim.low]
        if not lowerable:
            break
        chosen = max(lowerable, key=lambda d: (params[d.name], weight[d.name]))
        params[chosen.name] -= 1
    others = [d for d in movable if not isinstance(d.dim, BitWidth)]
    return _scale(budget, space, params, others) if _violated(budget, space, params) else params


def _wall(budget: Budget, space: Space, params: dict[str, float], movable: list[Decision]) -> dict[str, float]:
    """Each decision in order at the largest value (up to its proposal) that leaves the later ones room at their lowest."""
    decided = {**params, **{d.name: d.dim.low for d in movable}}
    for d in movable:
        proposal = params[d.name]
        decided[d.name] = largest_feasible(budget, space, decided, d, proposal)
    return decided


def largest_feasible(budget: Budget, space: Space, params: dict[str, float], d: Decision, proposal: float) -> float:
    """The largest value of ``d`` up to ``proposal`` with which ``params`` are feasible (its lowest if none is)."""

    def holds(value: float) -> bool:
        return _feasible(budget, space, {**params, d.name: value})

    if isinstance(d.dim, (BitWidth, ChoiceDim)):
        return next(
            (value for value in sorted(_discrete_values(d), reverse=True) if value <= proposal and holds(value)),
            d.dim.low,
        )
    return largest_where(holds, d.dim.low, proposal)


def _discrete_values(d: Decision) -> list[float]:
    if isinstance(d.dim, ChoiceDim):
        return list(d.dim.choices)
    if isinstance(d.dim, BitWidth):
        return list(range(d.dim.low, d.dim.high + 1))
    raise ValueError(f"decision {d.name!r} takes a range of values, not discrete ones.")


def _step_up(space: Space, d: Decision, value: float) -> float | None:
    """The next dearer value of ``d`` (one channel multiple, one bit, the next choice), or None at the top."""
    if value >= d.dim.high:
        return None
    if isinstance(d.dim, BitWidth):
        return value + 1
    if isinstance(d.dim, ChoiceDim):
        return min(c for c in d.dim.choices if c > value)
    if d.kind == "keep":
        return min(d.dim.high, value + space.channel_multiple / max(d.channels, 1))
    return min(d.dim.high, value + (d.dim.high - d.dim.low) / _RANK_STEPS)


def _fill(budget: Budget, space: Space, params: dict[str, float], movable: list[Decision]) -> dict[str, float]:
    """Raise decisions one step at a time, in order, while the budget holds, until it is used to FILL_TARGET."""
    params = dict(params)
    grew = True
    while grew and budget.usage(space.to_policy(params)) < FILL_TARGET:
        grew = False
        for d in movable:
            value = _step_up(space, d, params[d.name])
            if value is not None and _feasible(budget, space, {**params, d.name: value}):
                params[d.name] = value
                grew = True
                if budget.usage(space.to_policy(params)) >= FILL_TARGET:
                    break
    return params
