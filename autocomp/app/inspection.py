"""What a model costs layer by layer (`autocomp cost`) and what a search would search (`autocomp search --dry-run`)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)
from torch import nn

from autocomp.app.config import RunConfig
from autocomp.cost import Cost, measure
from autocomp.cost.format import format_number
from autocomp.cost.latency import LatencyTarget
from autocomp.errors import ConfigError, SearchError
from autocomp.evaluate import EvalResult
from autocomp.policy import Policy


@dataclass(frozen=True)
class LayerCost:
    """One conv or linear layer of a model, as traced on an example input."""

    name: str
    kind: str
    channels: str
    """``in -> out`` (``/g`` for grouped convolutions)."""
    kernel: str
    stride: str
    output: str
    macs: int


def layer_costs(model: nn.Module, example: torch.Tensor) -> tuple[list[LayerCost], list[str]]:
    """Every conv and linear layer of ``model`` with its MACs, in the order they run; and one line per layer whose
    channels are kept whole though other layers read them, saying why."""
    from autocomp.graph import ModelGraph

    graph = ModelGraph(copy.deepcopy(model), example)
    rows = []
    for layer in graph.layers:
        groups = f" /{layer.groups}" if layer.groups > 1 else ""
        rows.append(
            LayerCost(
                layer.name,
                layer.kind,
                f"{layer.in_channels} -> {layer.out_channels}{groups}",
                "x".join(map(str, layer.kernel_size)) or "-",
                "x".join(map(str, layer.stride)) or "-",
                "x".join(map(str, layer.output_shape)),
                layer.macs,
            )
        )
    other = graph.other_macs(Policy())
    if other:  # attention's products, functional calls, custom modules
        rows.append(LayerCost("(outside layers)", "products", "-", "-", "-", "-", other))
    return rows, graph.whole_lines()


def model_cost(model: nn.Module, example: torch.Tensor, latency: bool, threads: int | None = None) -> Cost:
    """``model``'s MACs, parameters, size and bit operations per example, and its latency at batch 1 when asked."""
    return measure(model, example, LatencyTarget(threads=threads) if latency else None)


@dataclass(frozen=True)
class SearchPreview:
    """What `autocomp search --dry-run` prints: the space, the baseline's cost and the smallest reachable one."""

    decisions: int
    kinds: dict[str, int]
    size: str
    """The number of distinct policies, or "continuous" when a decision takes real values."""
    constraints: list[str]
    baseline: Cost
    largest: str
    smallest: str
    smallest_usage: float


def preview_search(config: RunConfig) -> SearchPreview:
    """Check ``config`` as a search would (data and model, no training) and describe its space and budget."""
    from autocomp.app.runners.context import prepare

    setup = prepare(config)
    space, budget = setup.space, setup.budget
    budget.check_reachable(space)
    kinds: dict[str, int] = {}
    for decision in space.decisions:
        kinds[decision.kind] = kinds.get(decision.kind, 0) + 1
    counts = [_values(d) for d in space.distributions().values()]
    finite = [count for count in counts if count is not None]
    size = "continuous" if len(finite) < len(counts) else f"{math.prod(finite):,} policies"
    return SearchPreview(
        len(space.decisions),
        kinds,
        size,
        [f"{c.metric} <= {format_number(c.limit)}" for c in budget.constraints],
        setup.baseline_cost,
        budget.describe(space.largest()),
        budget.describe(space.smallest()),
        budget.usage(space.smallest()),
    )


def _values(distribution: BaseDistribution) -> int | None:
    """How many values a decision takes (None: real values)."""
    if isinstance(distribution, CategoricalDistribution):
        return len(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return (distribution.high - distribution.low) // distribution.step + 1
    return None


@dataclass(frozen=True)
class PolicyScore:
    """One policy scored as a search scores a candidate, beside the budget."""

    result: EvalResult
    within_budget: bool
    budget: str
    """Each constrained metric of the policy beside its limit."""


def score_policy(config: RunConfig, policy: Policy) -> PolicyScore:
    """Score ``policy`` with ``config``'s evaluator (the baseline trained or read from the cache, no study written)."""
    from autocomp.app.baseline import prepare_baseline
    from autocomp.app.runners.context import build_evaluator, prepare

    setup = prepare(config)
    known = {layer.name for layer in setup.graph.layers}
    unknown = sorted(set(policy.layers) - known)
    if unknown:
        raise ConfigError(
            f"the policy names layer {unknown[0]!r}, which {config.model.label} does not have; "
            f"its layers: {', '.join(sorted(known)[:6])}, ..."
        )
    baseline = prepare_baseline(config, setup.data, setup.runtime)
    result = build_evaluator(config, setup, baseline.model).score(policy)
    if result.failed:
        raise SearchError(f"the policy could not be evaluated: {result.error}")
    return PolicyScore(result, setup.budget.feasible_cost(result.measured_cost), setup.budget.describe(policy))
