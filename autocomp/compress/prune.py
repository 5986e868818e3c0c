"""Structured channel pruning: a new, smaller dense model from a policy."""

from __future__ import annotations

import copy

import torch
from torch import nn

from autocomp.compress.criteria import get_criterion
from autocomp.graph import LayerInfo, ModelGraph
from autocomp.policy import Policy


def prunable_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[LayerInfo]:
    """The layers whose output channels a policy may prune (names, shapes, MACs, coupled group)."""
    return ModelGraph(copy.deepcopy(model), example_inputs).prunable


def compress(model: nn.Module, policy: Policy, example_inputs: torch.Tensor, criterion: str = "l1") -> nn.Module:
    """Return a pruned copy of ``model``: each layer keeps ``policy.keep(name)`` of its output channels.

    Coupled layers (residual adds, depthwise pairs) lose the same channels; ``model`` is untouched.
    """
    score = get_criterion(criterion)
    small = copy.deepcopy(model)
    graph = ModelGraph(small, example_inputs)
    graph.prune(graph.kept_channels(policy), score)
    return small
