"""Space: the flat, named decisions an agent makes, and their mapping to a `Policy`.

A space is built from a `ModelGraph` and a few `Axis` (a dimension and its grouping):

* ``layer``: one decision per layer (for channels: per coupled channel group, the finest
  unit that can be pruned);
* ``group``: one per coupled channel group (bits and ranks: the layers writing the group's
  channels decide together);
* ``stage``: one per stage, the runs of layers at one spatial size (the classifier is a stage);
* ``global``: one value for every layer (width and resolution are always global).

Frozen layers (the first and the last conv/linear layer by default) are left out of every
decision: their channels are not pruned (with their whole coupled group; a width multiplier
still scales them, as it scales every layer), they are not factorized,
and a bit-width axis gives them its ``frozen`` bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import optuna

from autocomp.errors import ConfigError
from autocomp.graph import LayerInfo, ModelGraph
from autocomp.policy import LayerDecision, Policy
from search_spaces.dims import MODEL_KINDS, BitWidth, Dimension, LowRank, PruneRatio

GROUPINGS = ("layer", "group", "stage", "global")
DEFAULT_FROZEN = ("first", "last")


@dataclass(frozen=True)
class Axis:
    """A dimension and how its decisions are grouped (see the module's docstring)."""

    dim: Dimension
    grouping: str = "layer"

    def __post_init__(self) -> None:
        if self.grouping not in GROUPINGS:
            raise ConfigError(f"grouping {self.grouping!r} is not known; allowed: {', '.join(GROUPINGS)}.")
        if self.dim.kind in MODEL_KINDS and self.grouping != "global":
            raise ConfigError(
                f"{self.dim.kind} is one value for the whole model; its grouping must be global, not {self.grouping!r}."
            )


DEFAULT_AXES = (Axis(PruneRatio(), "group"),)
"""What `Space.from_graph` searches unless told: one prune ratio per coupled channel group."""


@dataclass(frozen=True)
class Decision:
    """One searchable value: ``dim``'s value for ``layers`` (none for a model-wide multiplier).

    ``channels``: for a keep decision, the channels of its largest group (one channel of it is a
    step of ``1 / channels``, the finest that changes the model); 0 otherwise.
    """

    name: str
    dim: Dimension
    layers: tuple[str, ...] = ()
    channels: int = 0

    @property
    def kind(self) -> str:
        return self.dim.kind


class Space:
    """Named decisions over a model's layers, plus the fixed decisions of its frozen layers."""

    def __init__(
        self,
        decisions: list[Decision],
        channel_multiple: int = 1,
        fixed: Mapping[str, Mapping[str, object]] | None = None,
        whole_from: Mapping[str, float] | None = None,
    ) -> None:
        names = [d.name for d in decisions]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"a space's decision names must be unique, got {sorted(n for n in names if names.count(n) > 1)}."
            )
        self.decisions = decisions
        self.channel_multiple = channel_multiple
        self.fixed = {name: dict(values) for name, values in (fixed or {}).items()}
        self.whole_from = dict(whole_from or {})
        """Per layer, the rank fraction from which its factorization would cost at least the layer (it stays whole)."""

    @classmethod
    def from_graph(
        cls,
        graph: ModelGraph,
        axes: Sequence[Axis] | PruneRatio = DEFAULT_AXES,
        channel_multiple: int = 1,
        frozen: Iterable[str] = DEFAULT_FROZEN,
    ) -> Space:
        """The decisions ``axes`` make over ``graph``'s layers, in execution order.

        ``frozen``: layer names, or ``first``/``last`` for the first/last conv or linear layer.
        Policies of this space round kept channel counts to ``channel_multiple``.
        """
        if isinstance(axes, PruneRatio):
            axes = (Axis(axes, "group"),)
        kinds = [axis.dim.kind for axis in axes]
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if repeated:
            raise ConfigError(
                f"a space decides each of keep, bits, rank, width, resolution once; {repeated[0]} is given twice."
            )
        if "act_bits" in kinds and "weight_bits" not in kinds:
            raise ConfigError("activation bits need a weight bit-width axis too: a layer is quantized weights first.")
        frozen_layers = resolve_frozen(graph, frozen)
        decisions = [decision for axis in axes for decision in _decisions(graph, axis, frozen_layers)]
        ranks = [d for d in decisions if isinstance(d.dim, LowRank)]
        whole_from = (
            _break_even_fractions(graph, cast(LowRank, ranks[0].dim).scheme, [n for d in ranks for n in d.layers])
            if ranks
            else {}
        )
        return cls(decisions, channel_multiple, _frozen_decisions(graph, axes, frozen_layers), whole_from)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.decisions]

    def of_kind(self, *kinds: str) -> list[Decision]:
        return [d for d in self.decisions if d.kind in kinds]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {d.name: d.dim.distribution() for d in self.decisions}

    def to_policy(self, params: Mapping[str, float]) -> Policy:
        """The policy giving every decision's layers its value (clipped to its range), frozen layers theirs."""
        layers: dict[str, dict[str, Any]] = {name: dict(values) for name, values in self.fixed.items()}
        options: dict[str, float] = {}
        for d in self.decisions:
            value = d.dim.clip(params[d.name])
            if d.kind in MODEL_KINDS:
                options[d.kind] = value
                continue
            for layer in d.layers:
                fields = layers.setdefault(layer, {})
                if isinstance(d.dim, LowRank):
                    whole = value >= min(1.0, self.whole_from.get(layer, 1.0))
                    fields.update(rank=None if whole else value, rank_scheme=d.dim.scheme)
                else:
                    fields[d.kind] = value
        return Policy(
            {name: LayerDecision(**fields) for name, fields in layers.items()},
            channel_multiple=self.channel_multiple,
            **options,
        )

    def to_params(self, policy: Policy) -> dict[str, float]:
        """The decisions' values in ``policy`` (read from each decision's first layer)."""
        params = {}
        for d in self.decisions:
            if d.kind in MODEL_KINDS:
                value = getattr(policy, d.kind)
            else:  # a layer left whole (no rank) or in floating point (no bits) says nothing: another may
                values = (getattr(policy.decision(layer), d.kind) for layer in d.layers)
                value = next((v for v in values if v is not None), d.dim.high)
            params[d.name] = d.dim.clip(value)
        return params

    def largest(self) -> Policy:
        """Every decision at its dearest value."""
        return self.to_policy({d.name: d.dim.high for d in self.decisions})

    def smallest(self) -> Policy:
        """Every decision at its cheapest value: the smallest model this space reaches."""
        return self.to_policy({d.name: d.dim.low for d in self.decisions})

    def sample(self, rng: np.random.Generator) -> Policy:
        """Every decision drawn independently and uniformly from its range or choices."""
        return self.to_policy({d.name: d.dim.sample(rng) for d in self.decisions})

    def fill(self, value: float) -> Policy:
        """Every decision at ``value`` (clipped to its range)."""
        return self.to_policy(dict.fromkeys(self.names, value))


def resolve_frozen(graph: ModelGraph, frozen: Iterable[str]) -> set[str]:
    """Layer names of a frozen spec: names, ``first`` and ``last``; an unknown name is refused."""
    names = [layer.name for layer in graph.layers]
    resolved = set()
    for entry in frozen:
        if entry == "first":
            resolved.add(names[0])
        elif entry == "last":
            resolved.add(names[-1])
        elif entry in names:
            resolved.add(entry)
        else:
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ConfigError(
                f"frozen layer {entry!r} is not a conv/linear layer of this model; allowed: first, last, "
                f"or a layer name ({shown})."
            )
    return resolved


def stages(graph: ModelGraph) -> dict[str, int]:
    """Each layer's stage: consecutive layers with one output spatial size share a stage (linear layers: the last)."""
    result, stage, size = {}, 0, None
    for layer in graph.layers:
        spatial = layer.output_shape[1:] if layer.kind == "conv" else ("linear",)
        if size is not None and spatial != size:
            stage += 1
        size = spatial
        result[layer.name] = stage
    return result


def _decisions(graph: ModelGraph, axis: Axis, frozen: set[str]) -> list[Decision]:
    """``axis``'s decisions: its finest units (groups for keep, layers otherwise), merged by its grouping."""
    kind = axis.dim.kind
    if kind in MODEL_KINDS:
        return [Decision(kind, axis.dim)]
    if kind == "keep":
        units = [(group.layers, group.channels) for group in graph.groups if not frozen & set(group.layers)]
    else:
        units = [((layer.name,), 0) for layer in graph.layers if layer.name not in frozen and _applies(axis.dim, layer)]
    if axis.grouping == "layer" or (kind == "keep" and axis.grouping == "group"):
        return [Decision(f"{kind}/{layers[0]}", axis.dim, layers, channels) for layers, channels in units]
    label = _unit_label(graph, axis.grouping)
    merged: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    for layers, channels in units:
        merged.setdefault(label(layers[0]), []).append((layers, channels))
    decisions = []
    for unit, parts in merged.items():
        layers = tuple(name for names, _ in parts for name in names)
        name = {"global": kind, "stage": f"{kind}/{unit}"}.get(axis.grouping, f"{kind}/{layers[0]}")
        decisions.append(Decision(name, axis.dim, layers, max(channels for _, channels in parts)))
    return decisions


def _unit_label(graph: ModelGraph, grouping: str) -> Callable[[str], str]:
    """The unit a layer's decision merges into: its stage, its channel group (itself if it has none), or one for all."""
    if grouping == "global":
        return lambda name: ""
    if grouping == "stage":
        stage_of = stages(graph)
        return lambda name: f"stage{stage_of[name]}"
    group_of = {layer.name: layer.group for layer in graph.layers}
    return lambda name: name if group_of[name] is None else f"group{group_of[name]}"


def _applies(dim: Dimension, layer: LayerInfo) -> bool:
    return layer.factorizable if isinstance(dim, LowRank) else layer.quantizable


def _break_even_fractions(graph: ModelGraph, scheme: str, layers: list[str]) -> dict[str, float]:
    """The rank fraction at which each layer's factorization costs as many MACs as the layer (MACs grow with the rank).

    Above it a factorization only adds cost, so the space leaves the layer whole: a layer's
    cost then never decreases as its rank decision grows, which the projections rely on.
    """
    whole = graph.layer_macs(Policy())
    full = graph.layer_macs(Policy({name: LayerDecision(rank=1.0, rank_scheme=scheme) for name in layers}))
    return {name: whole[name] / full[name] for name in layers}


def _frozen_decisions(graph: ModelGraph, axes: Sequence[Axis], frozen: set[str]) -> dict[str, dict[str, object]]:
    """What frozen layers get: their bit axes' ``frozen`` bits (weights first), nothing else."""
    bits = {axis.dim.kind: axis.dim.frozen for axis in axes if isinstance(axis.dim, BitWidth)}
    weight_bits, act_bits = bits.get("weight_bits"), bits.get("act_bits")
    if weight_bits is None and act_bits is not None:
        raise ConfigError(
            f"frozen layers cannot keep {act_bits}-bit inputs with floating-point weights; give the weight "
            "axis frozen bits too, or the activation axis frozen: null."
        )
    if weight_bits is None:
        return {}
    return {
        layer.name: {"weight_bits": weight_bits, "act_bits": act_bits}
        for layer in graph.layers
        if layer.name in frozen and layer.quantizable
    }
