"""ModelGraph: the conv/linear layers of a model and the channel groups that must be pruned together.

Torch-Pruning's dependency graph finds the coupling (residual adds, depthwise convolutions,
concatenation); this package turns it into plain records (`LayerInfo`, `ChannelGroup`) that
the rest of autocomp reads, predicts the exact MACs, BOPs, parameters and storage bits of
any policy, and prunes a model in place from per-group channel counts. `trace` records the
layers of one forward pass; `dependency` builds the Torch-Pruning graph and says which
groups are safe to prune.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from autocomp.cost.macs import COUNTED_TYPES, FLOAT_BITS, SCALE_BITS, float_bits
from autocomp.errors import ConfigError
from autocomp.geometry import as_pair, factor_shapes, lowrank_macs, rank_of, resize_input
from autocomp.graph.dependency import Verdict, dependency_graph, group_verdict
from autocomp.graph.heads import HeadGroup, probe_heads, set_head_count
from autocomp.graph.standard import standard_form
from autocomp.graph.trace import Trace, trace_layers
from autocomp.policy import LayerDecision, Policy


@dataclass(frozen=True)
class LayerInfo:
    """One conv or linear layer as traced on the example input (shapes without the batch)."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    params: int
    group: int | None
    """Index of the `ChannelGroup` its output channels belong to; None when they cannot be pruned."""

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels

    @property
    def kernel(self) -> tuple[int, ...]:
        """The kernel size, (1, 1) for a linear layer: the geometry a factorization sees."""
        return tuple(self.kernel_size) if self.kind == "conv" else (1, 1)

    @property
    def factorizable(self) -> bool:
        """Low-rank factorization applies to linear layers and 2-d convolutions without groups."""
        return self.kind == "linear" or (self.groups == 1 and len(self.kernel_size) == 2)

    @property
    def quantizable(self) -> bool:
        """Bits apply to linear layers and 2-d convolutions."""
        return self.kind == "linear" or len(self.kernel_size) == 2


@dataclass(frozen=True)
class ChannelGroup:
    """Channels shared by ``layers`` (they produce them) and read by ``consumers``."""

    index: int
    channels: int
    layers: tuple[str, ...]
    consumers: tuple[str, ...]
    blocks: int = 1
    """Equal blocks the channels form for grouped convolutions (neither plain nor depthwise) that read or
    write them; pruning removes the same positions from every block, so each conv group stays whole."""
    head_size: int = 1
    """Channels of one attention head when the channels are heads (q, k, v and the output projection's input):
    pruning removes whole heads, the same ones from every block (q, k and v packed in one layer: 3 blocks)."""

    @property
    def heads(self) -> int:
        """Heads per block (1 when the channels are not attention heads)."""
        return self.channels // (self.blocks * self.head_size)

    @property
    def unit(self) -> int:
        """The fewest channels pruning removes or keeps: one per block, or one head per block."""
        return self.blocks * self.head_size


@dataclass(frozen=True)
class _Share:
    """How many of a layer's input or output channels (or of a carried parameter's channels) come from one group."""

    group: int
    count: int
    elements: int = 1
    """Elements one channel stands for: 1 for layers; for a parameter outside them, what it loses per pruned channel."""


@dataclass(frozen=True)
class _Carried:
    """A parameter outside the conv/linear layers (norms, PReLU, free parameters): its size and the channels it carries."""

    elements: int
    bits: int
    shares: tuple[_Share, ...]


class ModelGraph:
    """Prunable structure of ``model`` traced on ``example_inputs``; `prune` edits ``model`` in place.

    ``model`` is first put in its standard form, in place (graph.standard: nn.MultiheadAttention unpacked into
    prunable layers, Hugging Face's Conv1D as nn.Linear), so a graph's layer names are those of that form.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        model = self.model = standard_form(model)
        self.example_inputs = example_inputs
        self._pruned = False
        trace = trace_layers(model, example_inputs)
        traced = trace.layers
        self._traces: dict[float, Trace] = {1.0: trace}
        self._shapes: dict[float, dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]] = {}
        modules = dict(model.named_modules())
        names = {module: name for name, module in modules.items()}
        self._dg = dependency_graph(model, example_inputs)

        order = {name: i for i, name in enumerate(traced)}
        raw_groups = []
        self.whole: dict[str, str] = {}
        """Layers whose output channels are kept whole though other layers read them -> why, said of the channels
        ("pass through ..."; `whole_lines` words it for a user)."""
        self._in_shares: dict[str, list[_Share]] = {name: [] for name in traced}
        self._out_shares: dict[str, list[_Share]] = {name: [] for name in traced}
        for first, group in self._dg.followed_groups(COUNTED_TYPES):
            if isinstance(group, Exception):
                if names.get(first) in traced:
                    self.whole[names[first]] = (
                        f"cannot be followed through the model by Torch-Pruning "
                        f"({type(group).__name__}: {_first_line(group)})"
                    )
                continue
            producers: dict[str, int] = {}
            consumers: dict[str, int] = {}
            carriers: dict[nn.Module, tuple[object, set[int]]] = {}
            for dep, idxs in group:
                name = names.get(dep.target.module)
                if name not in traced:
                    if _has_parameters(dep.target.module):  # a norm, a PReLU, a free parameter: pruned with the group
                        carriers.setdefault(dep.target.module, (dep, set()))[1].update(
                            int(getattr(i, "idx", i)) for i in idxs
                        )
                    continue
                if self._dg.is_out_channel_pruning_fn(dep.handler):
                    producers[name] = len(idxs)
                elif self._dg.is_in_channel_pruning_fn(dep.handler):
                    consumers[name] = len(idxs)
            if not consumers:  # nothing reads these channels: they are the model's output
                continue
            root = group[0].dep
            verdict = group_verdict(self._dg, group, self._dg.get_out_channels(root.target.module))
            if any(_depthwise_multiplier(modules[name]) for name in (*producers, *consumers)):
                verdict = Verdict(reason="feed a depthwise convolution that makes several channels of each")
            if verdict.reason is not None:  # see graph.dependency: never pruned
                self.whole.update((name, verdict.reason) for name in producers)
                continue
            heads = None
            if verdict.head_size > 1:
                blocks = verdict.blocks
                heads = HeadGroup(
                    tuple(sorted(producers, key=order.__getitem__)),
                    tuple(sorted(consumers, key=order.__getitem__)),
                    self._dg.get_out_channels(root.target.module) // (blocks * verdict.head_size),
                    verdict.head_size,
                    blocks,
                )
            else:
                blocks = math.lcm(*(_conv_groups(modules[name]) for name in (*producers, *consumers)))
            raw_groups.append((min(order[n] for n in producers), root, producers, consumers, blocks, carriers, heads))

        raw_groups.sort(key=lambda item: item[0])
        raw_groups, head_macs = self._probed(raw_groups, trace)
        self.groups: list[ChannelGroup] = []
        self._roots: list[tuple[nn.Module, object]] = []
        group_of: dict[str, int] = {}
        self._head_groups: dict[int, HeadGroup] = {}
        self._carriers: list[tuple[object, _Share]] = []
        """(Torch-Pruning dependency on a module or parameter outside the layers, its share of a group's channels)."""
        for index, (_, root, producers, consumers, blocks, carriers, heads) in enumerate(raw_groups):
            channels = self._dg.get_out_channels(root.target.module)
            self.groups.append(
                ChannelGroup(
                    index=index,
                    channels=channels,
                    layers=tuple(sorted(producers, key=order.__getitem__)),
                    consumers=tuple(sorted(consumers, key=order.__getitem__)),
                    blocks=blocks,
                    head_size=1 if heads is None else heads.head_size,
                )
            )
            self._roots.append((root.target.module, root.handler))
            if heads is not None:
                self._head_groups[index] = heads
            for name, count in producers.items():
                group_of[name] = index
                self._out_shares[name].append(_Share(index, count))
            for name, count in consumers.items():
                self._in_shares[name].append(_Share(index, count))
            self._carriers += [(dep, _Share(index, len(idxs))) for dep, idxs in carriers.values()]
        index_of = {heads: index for index, heads in self._head_groups.items()}
        self._head_macs = {
            name: {index_of[heads]: macs for heads, macs in per_head.items()} for name, per_head in head_macs.items()
        }
        """Module -> {head group index: MACs one of its heads computes there outside layers}."""

        self.layers: list[LayerInfo] = []
        self._float_bits: dict[str, tuple[int, int | None]] = {}
        """Bits of every layer's weight and bias (None: no bias) in floating point."""
        for name, record in traced.items():
            module = modules[name]
            self._float_bits[name] = (
                float_bits(module.weight),
                None if module.bias is None else float_bits(module.bias),
            )
            is_conv = not isinstance(module, nn.Linear)
            self.layers.append(
                LayerInfo(
                    name=name,
                    kind="conv" if is_conv else "linear",
                    in_channels=module.in_channels if is_conv else module.in_features,
                    out_channels=module.out_channels if is_conv else module.out_features,
                    groups=module.groups if is_conv else 1,
                    kernel_size=tuple(module.kernel_size) if is_conv else (1,),
                    stride=tuple(module.stride) if is_conv else (1,),
                    input_shape=record["input_shape"],
                    output_shape=record["output_shape"],
                    macs=record["macs"],
                    params=sum(p.numel() for p in module.parameters()),
                    group=group_of.get(name),
                )
            )

    def _probed(self, raw_groups: list, trace: Trace) -> tuple[list, dict[str, dict[HeadGroup, int]]]:
        """``raw_groups`` without the attention heads the model's code cannot lose (see graph.heads, each named in
        ``whole``), and per module the MACs one head of each remaining group computes there outside layers."""
        heads = [raw[-1] for raw in raw_groups if raw[-1] is not None]
        if not heads:
            return raw_groups, {}
        reasons, per_head = probe_heads(self.model, self.example_inputs, heads, trace.other_macs)
        failed = {group for group, reason in zip(heads, reasons) if reason is not None}
        for group, reason in zip(heads, reasons):
            if reason is not None:
                self.whole.update((name, reason) for name in group.producers)
        return [raw for raw in raw_groups if raw[-1] not in failed], per_head

    def whole_lines(self) -> list[str]:
        """One line per layer kept whole though other layers read it, saying why."""
        order = {layer.name: i for i, layer in enumerate(self.layers)}
        return [
            f"layer {name!r} is kept whole: its output channels {self.whole[name]}."
            for name in sorted(self.whole, key=order.__getitem__)
        ]

    @property
    def prunable(self) -> list[LayerInfo]:
        """Layers whose output channels can be pruned, in execution order."""
        return [layer for layer in self.layers if layer.group is not None]

    def group_keep(self, policy: Policy) -> list[float]:
        """The keep ratio of each channel group, the width multiplier applied; coupled layers must agree."""
        self._check_layers(policy)
        ratios = []
        for group in self.groups:
            keeps = {name: policy.keep(name) for name in group.layers}
            distinct = sorted(set(keeps.values()))
            if len(distinct) > 1:
                a = next(n for n, k in keeps.items() if k == distinct[0])
                b = next(n for n, k in keeps.items() if k == distinct[-1])
                raise ConfigError(
                    f"layers {a!r} and {b!r} share their output channels and must have the same keep ratio, "
                    f"got {distinct[0]} and {distinct[-1]}."
                )
            ratios.append(min(1.0, distinct[0] * policy.width))
        return ratios

    def check(self, policy: Policy) -> None:
        """Raise ConfigError when ``policy`` cannot be applied to this model (layers, ranks, resolution)."""
        self._check_layers(policy)
        self.shapes_at(policy.resolution)

    def _check_layers(self, policy: Policy) -> None:
        """Refuse decisions on layers this model lacks, cannot prune, factorize or quantize."""
        by_name = {layer.name: layer for layer in self.layers}
        for name, decision in policy.layers.items():
            layer = by_name.get(name)
            if layer is None:
                known = sorted(by_name)
                allowed = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                raise ConfigError(
                    f"policy names layer {name!r}, which is not a conv/linear layer of this model (layers: {allowed})."
                )
            if decision.keep < 1.0 and layer.group is None:
                raise ConfigError(
                    f"policy prunes layer {name!r} to keep {decision.keep}, but its output channels cannot be pruned "
                    "(they are the model's output or cannot be removed safely); allowed keep there: 1.0."
                )
            if decision.rank is not None and not layer.factorizable:
                raise ConfigError(
                    f"policy factorizes layer {name!r}, a {layer.kind} with groups={layer.groups} and kernel "
                    f"{layer.kernel_size}; low-rank applies to linear layers and 2-d convolutions with groups=1."
                )
            if decision.quantized and not layer.quantizable:
                raise ConfigError(
                    f"policy gives layer {name!r} (a {len(layer.kernel_size)}-d convolution) {decision.weight_bits}-bit "
                    "weights; bits apply to linear layers and 2-d convolutions."
                )

    def kept_channels(self, policy: Policy) -> list[int]:
        """Channels each group keeps under ``policy``: keep x channels, rounded to ``policy.channel_multiple``.

        A group never drops to zero channels: the floor is one multiple (or all its channels,
        when it has fewer), and a keep ratio of 1 keeps every channel. Groups read by grouped
        convolutions round to a multiple of their conv groups too, attention heads to whole heads; when
        that multiple is not below the group's channel count, the group cannot be pruned and keeps
        every channel.
        """
        return [
            rounded_channels(keep, group.channels, math.lcm(policy.channel_multiple, group.unit))
            for keep, group in zip(self.group_keep(policy), self.groups)
        ]

    def layer_channels(self, kept: list[int]) -> dict[str, tuple[int, int]]:
        """(in, out) channels of every layer once each group keeps ``kept[i]`` channels."""

        return {
            layer.name: (
                self._remaining(layer.in_channels, self._in_shares[layer.name], kept),
                self._remaining(layer.out_channels, self._out_shares[layer.name], kept),
            )
            for layer in self.layers
        }

    def _remaining(self, total: int, shares: Iterable[_Share], kept: list[int]) -> int:
        """What is left of ``total`` channels (or elements) once each group keeps ``kept[i]`` of its channels."""
        groups = self.groups
        return total - sum(
            s.elements * (s.count * (groups[s.group].channels - kept[s.group]) // groups[s.group].channels)
            for s in shares
        )

    def predict_macs(self, policy: Policy) -> int:
        """MACs of the model ``compress`` would return for ``policy``, without building it."""
        return sum(self.layer_macs(policy).values()) + self.other_macs(policy)

    def other_macs(self, policy: Policy) -> int:
        """MACs outside the conv/linear layers (attention's products, functional calls) once ``policy`` is applied:
        what each removed attention head computed there is gone, the rest stays."""
        full = self._traces[1.0].other_macs
        kept = self.kept_channels(policy) if self._head_macs else []
        total = 0
        for name, macs in self._trace_at(policy.resolution).other_macs.items():
            lost = sum(
                per_head * (self.groups[g].channels - kept[g]) // self.groups[g].unit
                for g, per_head in self._head_macs.get(name, {}).items()
            )
            total += macs - macs * lost // full[name]  # a head's share scales with the resolution as the whole
        return total

    def predict_bops(self, policy: Policy) -> int:
        """Bit operations of the model ``compress`` would return: each layer's MACs x weight bits x input bits."""
        total = 0
        for name, macs in self.layer_macs(policy).items():
            decision = policy.decision(name)
            weight_bits = FLOAT_BITS if decision.weight_bits is None else decision.weight_bits
            total += macs * weight_bits * (decision.act_bits or FLOAT_BITS)
        return total + self.other_macs(policy) * FLOAT_BITS * FLOAT_BITS

    def predict_params(self, policy: Policy) -> int:
        """Parameters of the model ``compress`` would return for ``policy`` (`cost.count_params`), without building it."""
        return sum(elements for elements, _ in self._parameter_sizes(policy))

    def predict_size_bits(self, policy: Policy) -> int:
        """Storage bits of the model ``compress`` would return for ``policy`` (`cost.storage_bits`), without building it."""
        return sum(bits for _, bits in self._parameter_sizes(policy))

    def _parameter_sizes(self, policy: Policy) -> list[tuple[int, int]]:
        """(elements, storage bits) of every parameter of the model ``compress`` would return for ``policy``."""
        if self._pruned:
            raise RuntimeError("predicted sizes describe the unpruned model; build a new ModelGraph after prune().")
        kept = self.kept_channels(policy)
        channels = self.layer_channels(kept)
        sizes = []
        for layer in self.layers:
            sizes += self._layer_sizes(layer, *channels[layer.name], policy.decision(layer.name))
        for parameter in self._carried:
            elements = self._remaining(parameter.elements, parameter.shares, kept)
            sizes.append((elements, elements * parameter.bits))
        return sizes

    def _layer_sizes(
        self, layer: LayerInfo, new_in: int, new_out: int, decision: LayerDecision
    ) -> list[tuple[int, int]]:
        """(elements, storage bits) of the parameters ``layer`` becomes under ``decision``, once it has
        ``new_in``/``new_out`` channels: weight (or both factors' weights), bias, input quantizers' steps."""
        weight_bits, bias_bits = self._float_bits[layer.name]
        if decision.rank is None:
            in_per_group = 1 if layer.depthwise else new_in // layer.groups
            weights = [(new_out, new_out * in_per_group * math.prod(layer.kernel_size))]
        else:
            kernel = as_pair(layer.kernel)
            rank = rank_of(decision.rank, new_in, new_out, kernel, decision.rank_scheme)
            shapes = factor_shapes(layer.kind, new_in, new_out, kernel, rank, decision.rank_scheme)
            weights = [(shape[0], math.prod(shape)) for shape in shapes]
            bias_bits = None if bias_bits is None else weight_bits  # both factors take the weight's dtype
        sizes = []
        for out_channels, elements in weights:
            if decision.weight_bits is None:
                sizes.append((elements, elements * weight_bits))
                continue
            scales = 0 if decision.weight_scheme == "dorefa" else SCALE_BITS * out_channels
            sizes.append((elements, elements * decision.weight_bits + scales))
            if decision.act_bits is not None:  # the input quantizer's learned step (LSQ): one scalar
                sizes.append((1, torch.finfo(torch.get_default_dtype()).bits))
        if bias_bits is not None:
            sizes.append((new_out, new_out * bias_bits))
        return sizes

    @functools.cached_property
    def _carried(self) -> list[_Carried]:
        """Every parameter outside the traced conv/linear layers, with what each group's pruning takes from it.

        What one pruned channel takes from each parameter of a norm, a PReLU or a free parameter
        is found once, by letting Torch-Pruning's own handler for it drop one channel of a copy.
        """
        lost: dict[int, list[_Share]] = {}
        for dep, share in self._carriers:
            if self.groups[share.group].channels < 2:
                continue  # a single channel is never pruned
            for key, elements in _elements_per_channel(dep).items():
                if elements:
                    lost.setdefault(key, []).append(_Share(share.group, share.count, elements))
        owned = {id(p) for layer in self.layers for p in self.model.get_submodule(layer.name).parameters(recurse=False)}
        return [
            _Carried(p.numel(), float_bits(p), tuple(lost.get(id(p), ())))
            for p in self.model.parameters()
            if id(p) not in owned
        ]

    def layer_macs(self, policy: Policy) -> dict[str, int]:
        """MACs of every layer (both factors of a factorized one together) once ``policy`` is applied."""
        if self._pruned:
            raise RuntimeError("layer_macs describes the unpruned model; build a new ModelGraph after prune().")
        channels = self.layer_channels(self.kept_channels(policy))
        shapes = self.shapes_at(policy.resolution)
        result = {}
        for layer in self.layers:
            new_in, new_out = channels[layer.name]
            macs, input_shape, output_shape = shapes[layer.name]
            decision = policy.decision(layer.name)
            if decision.rank is None:
                in_per_group = 1 if layer.depthwise else new_in // layer.groups
                old_in_per_group = layer.in_channels // layer.groups
                result[layer.name] = macs * new_out * in_per_group // (layer.out_channels * old_in_per_group)
            else:
                result[layer.name] = self._lowrank_macs(layer, new_in, new_out, input_shape, output_shape, decision)
        return result

    def _lowrank_macs(
        self,
        layer: LayerInfo,
        new_in: int,
        new_out: int,
        input_shape: tuple[int, ...],
        output_shape: tuple[int, ...],
        decision: LayerDecision,
    ) -> int:
        """MACs of ``layer`` factorized as ``decision`` says, once it has ``new_in``/``new_out`` channels."""
        if decision.rank is None:
            raise ValueError(f"layer {layer.name!r} is not factorized by its decision; it has no low-rank MACs.")
        rank = rank_of(decision.rank, new_in, new_out, as_pair(layer.kernel), decision.rank_scheme)
        if layer.kind == "linear":
            return lowrank_macs(
                layer.kind,
                new_in,
                new_out,
                (1, 1),
                None,
                None,
                (1, 1),
                (0, 0),
                (1, 1),
                rank,
                decision.rank_scheme,
                rows=math.prod(input_shape[:-1]),
            )
        conv = cast(nn.Conv2d, self.model.get_submodule(layer.name))  # a factorizable conv is 2-d
        padding = conv.padding if isinstance(conv.padding, str) else as_pair(conv.padding)
        return lowrank_macs(
            layer.kind,
            new_in,
            new_out,
            as_pair(layer.kernel_size),
            as_pair(input_shape[1:]),
            as_pair(output_shape[1:]),
            as_pair(layer.stride),
            padding,
            as_pair(conv.dilation),
            rank,
            decision.rank_scheme,
        )

    def shapes_at(self, resolution: float) -> dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]:
        """Per layer (MACs, input shape, output shape) of the unpruned model at an input resolution multiplier."""
        if resolution not in self._shapes:
            self._shapes[resolution] = {
                name: (record["macs"], record["input_shape"], record["output_shape"])
                for name, record in self._trace_at(resolution).layers.items()
            }
        return self._shapes[resolution]

    def _trace_at(self, resolution: float) -> Trace:
        """The unpruned model's trace at an input resolution multiplier."""
        if resolution not in self._traces:
            example = resize_input(self.example_inputs, resolution)
            try:
                self._traces[resolution] = trace_layers(self.model, example)
            except RuntimeError as err:
                raise ConfigError(
                    f"the model cannot run at resolution multiplier {resolution} (input {tuple(example.shape[1:])}): "
                    f"{str(err).strip().splitlines()[0]}"
                ) from None
        return self._traces[resolution]

    def channel_scores(self, criterion) -> list[torch.Tensor]:
        """One score per channel of every group (``criterion`` scores a full Torch-Pruning group)."""
        scores = []
        for (module, handler), group in zip(self._roots, self.groups):
            full = self._dg.get_pruning_group(module, handler, list(range(group.channels)))
            score = torch.as_tensor(criterion(full)).detach().float().cpu().flatten()
            if score.numel() != group.channels:
                name = getattr(criterion, "name", type(criterion).__name__)
                raise ConfigError(
                    f"criterion {name!r} gave {score.numel()} scores for a group of {group.channels} channels; "
                    "it must give one per channel."
                )
            scores.append(score)
        return scores

    def prune(self, kept: list[int], scores: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Remove channels from ``self.model`` in place so that group i keeps its ``kept[i]`` best-scored channels.

        Returns, for every conv/linear layer, the indices of the original output channels it kept.
        """
        names = {module: name for name, module in self.model.named_modules()}
        dropped: dict[str, set[int]] = {layer.name: set() for layer in self.layers}
        for (module, handler), group, n_keep, score in zip(self._roots, self.groups, kept, scores):
            if n_keep >= group.channels:
                continue
            drop = _lowest(score, group.channels - n_keep, group.blocks, group.head_size)
            pruning_group = self._dg.get_pruning_group(module, handler, sorted(drop))
            for dep, idxs in pruning_group:
                name = names.get(dep.target.module)
                if name in dropped and self._dg.is_out_channel_pruning_fn(dep.handler):
                    dropped[name].update(int(getattr(i, "idx", i)) for i in idxs)
            pruning_group.prune()
            if group.index in self._head_groups:
                set_head_count(self.model, self._head_groups[group.index], n_keep // group.unit)
        self._pruned = True
        return {
            layer.name: torch.tensor(sorted(set(range(layer.out_channels)) - dropped[layer.name]), dtype=torch.long)
            for layer in self.layers
        }


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def _depthwise_multiplier(module: nn.Module) -> bool:
    """A depthwise convolution producing several channels per input channel."""
    return (
        isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups == module.in_channels != module.out_channels
    )


def _conv_groups(module: nn.Module) -> int:
    """The groups of a grouped convolution; 1 for other layers, plain and depthwise convolutions."""
    groups = getattr(module, "groups", 1)
    return groups if isinstance(module, nn.modules.conv._ConvNd) and groups < module.in_channels else 1


def _has_parameters(target: object) -> bool:
    """Whether a Torch-Pruning node's target is a parameter or a module holding parameters."""
    if isinstance(target, nn.Parameter):
        return True
    return isinstance(target, nn.Module) and next(target.parameters(), None) is not None


def _elements_per_channel(dep) -> dict[int, int]:
    """Elements each parameter of ``dep``'s target (a module or a free parameter) loses per channel its handler drops.

    Keyed by ``id`` of the parameter. Found by running the handler, as Torch-Pruning's
    ``Dependency.__call__`` does, on a copy with one channel to drop.
    """
    target = dep.target.module
    dep.handler.__self__.pruning_dim = dep.target.pruning_dim
    if isinstance(target, nn.Parameter):
        return {id(target): target.numel() - dep.handler(target.detach().clone(), [0]).numel()}
    before = dict(target.named_parameters())
    probe = copy.deepcopy(target)
    dep.handler(probe, [0])
    after = {name: p.numel() for name, p in probe.named_parameters()}
    return {id(p): p.numel() - after.get(name, 0) for name, p in before.items()}


def _lowest(scores: torch.Tensor, count: int, blocks: int, head_size: int = 1) -> list[int]:
    """The ``count`` lowest-scored channels; with blocks, the same positions in every block (summed scores); with
    heads, the channels of the lowest-scored heads (summed over each head and block) in every block."""
    if head_size > 1:
        per_head = scores.view(blocks, -1, head_size).sum(dim=(0, 2))
        heads = torch.argsort(per_head, stable=True)[: count // (blocks * head_size)].tolist()
        width = per_head.numel() * head_size
        return sorted(
            block * width + head * head_size + position
            for block in range(blocks)
            for head in heads
            for position in range(head_size)
        )
    if blocks == 1:
        return torch.argsort(scores, stable=True)[:count].tolist()
    size = scores.numel() // blocks
    positions = torch.argsort(scores.view(blocks, size).sum(dim=0), stable=True)[: count // blocks].tolist()
    return sorted(block * size + position for block in range(blocks) for position in positions)


def rounded_channels(keep: float, channels: int, multiple: int = 1) -> int:
    """``keep x channels`` rounded to a multiple of ``multiple``, at least one multiple, at most ``channels``."""
    if keep >= 1.0:
        return channels
    count = int(keep * channels / multiple + 0.5) * multiple  # half up, as MobileNet's make_divisible
    return min(channels, max(count, min(multiple, channels), 1))
