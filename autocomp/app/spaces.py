"""A run config's space, latency target and budget."""

from __future__ import annotations

from dataclasses import asdict

from autocomp.app.config import RunConfig, SpaceConfig
from autocomp.cost import Cost, LatencyTarget
from autocomp.graph import ModelGraph
from autocomp.policy import Policy
from search_spaces.constraints import Budget, Constraint, refuse_latency_with_bits
from search_spaces.dims import Resolution, WidthMultiplier
from search_spaces.space import Axis, Space


def space_from_config(graph: ModelGraph, config: SpaceConfig) -> Space:
    """The decisions a config's ``space`` section asks for over ``graph``."""
    axes = []
    if config.keep is not None:
        axes.append(Axis(config.keep.dim(), config.keep.grouping))
    for target, axis in (("weights", config.weight_bits), ("activations", config.act_bits)):
        if axis is not None:
            axes.append(Axis(axis.dim(target), axis.grouping))
    if config.rank is not None:
        axes.append(Axis(config.rank.dim(), config.rank.grouping))
    if config.width is not None:
        axes.append(Axis(WidthMultiplier(tuple(config.width.choices)), "global"))
    if config.resolution is not None:
        axes.append(Axis(Resolution(tuple(config.resolution.choices)), "global"))
    return Space.from_graph(graph, axes, config.channel_multiple, config.frozen)


def latency_target(config: RunConfig) -> LatencyTarget | None:
    """The target candidates' latency is measured on, when a constraint bounds latency (else None)."""
    if not any(c.metric == "latency_ms" for c in config.constraints):
        return None
    return LatencyTarget(**asdict(config.latency))


def budget_from_config(config: RunConfig, graph: ModelGraph, space: Space, baseline: Cost) -> Budget:
    """The config's constraints on ``graph`` (relative limits from ``baseline``), checked reachable in ``space``.

    A latency constraint builds (or reads from the cache) the target's lookup table for the
    resolutions the space may choose; ``baseline`` must then carry its measured latency, which
    gives the table's predictions their first correction.
    """
    constraints = [Constraint.create(c.metric, c.max, c.relative, baseline) for c in config.constraints]
    table = None
    target = latency_target(config)
    if target is not None:
        from autocomp.latency_table import LatencyTable

        refuse_latency_with_bits(space)
        table = LatencyTable(graph, target)
        resolutions = tuple(config.space.resolution.choices) if config.space.resolution is not None else (1.0,)
        table.build(resolutions, rank_schemes=(config.space.rank.scheme,) if config.space.rank is not None else ())
    budget = Budget(graph, constraints, latency=table)
    if baseline.latency_ms is not None:  # the baseline is a measured model too: the first latency correction
        budget.observe(Policy(), baseline)
    budget.check_reachable(space)
    return budget
