"""Compression by policy: channels removed, layers factorized, bits lowered, input resized; a new, smaller model."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from autocomp.compress.criteria import get_criterion
from autocomp.compress.lowrank import factorize, rank_from_fraction
from autocomp.compress.quantize import calibrate, quantize_layers
from autocomp.compress.reconstruct import reconstruct
from autocomp.compress.resize import InputResize
from autocomp.errors import ConfigError
from autocomp.geometry import resized_size
from autocomp.graph import LayerInfo, ModelGraph
from autocomp.graph.standard import needs_standard_form, standard_form
from autocomp.policy import Policy

Batch = tuple[torch.Tensor, torch.Tensor]


def prunable_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[LayerInfo]:
    """The layers whose output channels a policy may prune (names, shapes, MACs, coupled group)."""
    return ModelGraph(copy.deepcopy(model), example_inputs).prunable


def model_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[LayerInfo]:
    """Every conv and linear layer in execution order: what bits and low-rank apply to."""
    return ModelGraph(copy.deepcopy(model), example_inputs).layers


class Compressor:
    """Compresses one model under many policies; channels are scored once, with ``criterion``.

    ``data``, a few (inputs, labels) batches of training data, feeds the data-driven criteria
    (``taylor``, ``apoz``) and ``reconstruct``, which refits the layers that read pruned
    channels by least squares on their activations (as ThiNet and AMC do); its first batch
    also sets the activation quantizers' ranges (without data, the first batch run does).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        criterion: str = "l1",
        data: Sequence[Batch] = (),
        reconstruct: bool = False,
    ) -> None:
        self.model = standard_form(copy.deepcopy(model)) if needs_standard_form(model) else model
        """The model in the form its graph names (see graph.standard)."""
        self.example_inputs = example_inputs
        self.data = list(data)
        self.reconstruct = reconstruct
        if reconstruct and not self.data:
            raise ConfigError("reconstruct=True needs data: pass a few (inputs, labels) training batches as data.")
        score = get_criterion(criterion)
        probe = copy.deepcopy(self.model)
        self.graph = ModelGraph(probe, example_inputs)
        if score.needs_data:
            score.prepare(probe, self.data)  # without data, scoring below refuses with one sentence
        self._scores = self.graph.channel_scores(score)
        probe.zero_grad(set_to_none=True)

    def __call__(self, policy: Policy) -> nn.Module:
        """A compressed copy of the model: prune, (reconstruct,) factorize, resize the input, then quantize."""
        self.graph.check(policy)
        kept_channels = self.graph.kept_channels(policy)
        size = resized_size(self.example_inputs.shape, policy.resolution) if policy.resolution < 1.0 else None
        small = copy.deepcopy(self.model)
        graph = ModelGraph(small, self.example_inputs)
        kept_outputs = graph.prune(kept_channels, self._scores)
        if self.reconstruct:
            reconstruct(self.model, small, kept_outputs, [inputs for inputs, _ in self.data])
        _factorize(small, self.graph.layers, policy)
        model = InputResize(small, size) if size is not None else small
        quantized = {name: decision for name, decision in policy.layers.items() if decision.quantized}
        if quantized:
            self._quantize(small, model, quantized)
        return model

    def _quantize(self, small: nn.Module, model: nn.Module, decisions: dict) -> None:
        """Quantize ``small`` (inside ``model``) in place; probes tell signed inputs, data sets ranges."""
        example = self.example_inputs
        noise = torch.randn(example.shape, generator=torch.Generator().manual_seed(0)).to(example)
        probes = [example, noise] + [inputs for inputs, _ in self.data[:1]]
        quantize_layers(small, decisions, model, probes)
        if self.data:
            calibrate(model, self.data[0][0])


def _factorize(model: nn.Module, layers: list[LayerInfo], policy: Policy) -> None:
    """Replace every layer the policy gives a rank with its SVD factorization, in place."""
    chosen = [(layer, policy.decision(layer.name)) for layer in layers if policy.decision(layer.name).rank is not None]
    if not chosen:
        return
    for layer, decision in chosen:
        # already pruned: the rank is a fraction of what is left; the policy was checked against the graph, so the
        # layer is one a factorization applies to (`lowrank` refuses any other all the same)
        module = cast("nn.Linear | nn.Conv2d", model.get_submodule(layer.name))
        rank = rank_from_fraction(module, cast(float, decision.rank), decision.rank_scheme)  # chosen for their rank
        model.set_submodule(layer.name, factorize(module, rank, decision.rank_scheme))


def compress(
    model: nn.Module,
    policy: Policy,
    example_inputs: torch.Tensor,
    criterion: str = "l1",
    data: Sequence[Batch] = (),
    reconstruct: bool = False,
) -> nn.Module:
    """Return a compressed copy of ``model``; ``model`` is untouched.

    Each layer keeps ``policy.keep(name)`` (times ``policy.width``) of its output channels,
    rounded to ``policy.channel_multiple``; coupled layers (residual adds, concatenations,
    depthwise pairs) lose the same channels. Layers with a ``rank`` are then factorized, a
    ``resolution`` below 1 makes the model resize its input first, and layers with
    ``weight_bits`` run on quantized weights (and inputs, with ``act_bits``). For many policies
    on one model, build a `Compressor` once.
    """
    return Compressor(model, example_inputs, criterion, data, reconstruct)(policy)
