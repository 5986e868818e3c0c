"""What a policy does to a traced model, without building it: the channels each group keeps and the exact MACs, BOPs,
parameters and storage bits that follow (`PolicyCosts`, which `ModelGraph` inherits)."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from autocomp.cost.macs import FLOAT_BITS, SCALE_BITS, float_bits
from autocomp.errors import ConfigError
from autocomp.geometry import as_pair, factor_shapes, lowrank_macs, rank_of, resize_input
from autocomp.graph.layers import Carried, ChannelGroup, LayerInfo, Share, rounded_channels
from autocomp.graph.trace import Trace, trace_layers
from autocomp.policy import LayerDecision, Policy


class PolicyCosts:
    """The predictions of a traced graph; the attributes below are `ModelGraph`'s."""

    model: nn.Module
    example_inputs: torch.Tensor
    layers: list[LayerInfo]
    groups: list[ChannelGroup]
    _pruned: bool
    _traces: dict[float, Trace]
    _shapes: dict[float, dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]]
    _in_shares: dict[str, list[Share]]
    _out_shares: dict[str, list[Share]]
    _carriers: list[tuple[object, Share]]
    _head_parameters: list[tuple[nn.Parameter, Share]]
    _head_macs: dict[str, dict[int, int]]
    _float_bits: dict[str, tuple[int, int | None]]

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

    def _remaining(self, total: int, shares: Iterable[Share], kept: list[int]) -> int:
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
    def _carried(self) -> list[Carried]:
        """Every parameter outside the traced conv/linear layers, with what each group's pruning takes from it.

        What one pruned channel takes from each parameter of a norm, a PReLU or a free parameter
        is found once, by letting Torch-Pruning's own handler for it drop one channel of a copy; what one attention
        head takes from a parameter that holds one entry per head, by the head probe (graph.heads).
        """
        lost: dict[int, list[Share]] = {}
        for parameter, share in self._head_parameters:
            lost.setdefault(id(parameter), []).append(share)
        for dep, share in self._carriers:
            if self.groups[share.group].channels < 2:
                continue  # a single channel is never pruned
            for key, elements in _elements_per_channel(dep).items():
                if elements:
                    lost.setdefault(key, []).append(Share(share.group, share.count, elements))
        owned = {id(p) for layer in self.layers for p in self.model.get_submodule(layer.name).parameters(recurse=False)}
        return [
            Carried(p.numel(), float_bits(p), tuple(lost.get(id(p), ())))
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
                result[layer.name] = self._lowrank_macs(
                    layer, new_in, new_out, macs, input_shape, output_shape, decision
                )
        return result

    def _lowrank_macs(
        self,
        layer: LayerInfo,
        new_in: int,
        new_out: int,
        macs: int,
        input_shape: tuple[int, ...],
        output_shape: tuple[int, ...],
        decision: LayerDecision,
    ) -> int:
        """MACs of ``layer`` factorized as ``decision`` says, once it has ``new_in``/``new_out`` channels (``macs``:
        the whole layer's per example; a linear layer's rows are those, as its input's shape may hold a part of them
        in the batch: Swin's windows)."""
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
                rows=macs // (layer.in_channels * layer.out_channels),
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
