"""Space: the flat, named decisions an agent makes, and their mapping to a `Policy`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import optuna

from autocomp.graph import ChannelGroup, ModelGraph
from autocomp.policy import LayerDecision, Policy
from search_spaces.dims import PruneRatio


@dataclass(frozen=True)
class Decision:
    """One searchable value: the keep ratio of one coupled channel group."""

    name: str
    group: ChannelGroup
    dim: PruneRatio


class Space:
    """One keep-ratio decision per coupled channel group of a `ModelGraph`."""

    def __init__(self, decisions: list[Decision], channel_multiple: int = 1) -> None:
        self.decisions = decisions
        self.channel_multiple = channel_multiple

    @classmethod
    def from_graph(cls, graph: ModelGraph, dim: PruneRatio = PruneRatio(), channel_multiple: int = 1) -> Space:
        """Decisions named ``keep/<first layer of the group>``, in execution order.

        Policies of this space round kept channel counts to ``channel_multiple``.
        """
        return cls([Decision(f"keep/{group.layers[0]}", group, dim) for group in graph.groups], channel_multiple)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.decisions]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {d.name: d.dim.distribution() for d in self.decisions}

    def to_policy(self, params: Mapping[str, float]) -> Policy:
        """The policy that gives every layer of a group that group's value (clipped to its range)."""
        layers = {}
        for d in self.decisions:
            keep = d.dim.clip(float(params[d.name]))
            layers.update({name: LayerDecision(keep) for name in d.group.layers})
        return Policy(layers, channel_multiple=self.channel_multiple)

    def to_params(self, policy: Policy) -> dict[str, float]:
        return {d.name: policy.keep(d.group.layers[0]) for d in self.decisions}

    def fill(self, value: float) -> Policy:
        """Every decision at ``value``."""
        return self.to_policy({name: value for name in self.names})
