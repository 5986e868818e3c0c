"""Torch-Pruning's dependency graph, with the ops whose channel mapping it gets wrong kept out of pruning."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
from torch import nn

from autocomp.errors import ConfigError


def dependency_graph(model: nn.Module, example_inputs: torch.Tensor):
    """Torch-Pruning's dependency graph of ``model``, with the ops whose channel mapping it gets wrong marked.

    Torch-Pruning follows each channel index through every op between layers, but some ops
    move channels in ways its index mapping does not describe; pruning through them would
    silently mix channels up or break the model at run time:

    * a reshape/view that splits or merges the channel dimension with another dimension:
      the heads of a hand-written attention, (B, N, 3C) -> (B, N, 3, heads, C/heads), or a
      ShuffleNet channel shuffle, (B, C, H, W) -> (B, g, C/g, H, W) (Torch-Pruning maps these
      as the identity, or fails). Keeping the heads consistent would need whole heads or the
      same reduction in every head, which a per-channel group cannot express. Fine: the
      flatten (B, C, H, W) -> (B, C*H*W) before a classifier (Torch-Pruning maps each channel
      to its H*W features), and reshapes that keep the channel dimension and only merge or
      split the spatial dimensions or add/remove size-1 dimensions;
    * split, chunk and unbind: the pruned model's own code still splits at the sizes it
      computes or hard-codes, not where Torch-Pruning removed channels from each piece;
    * a slice of the channel dimension (hard-coded bounds, same reason).

    These ops are kept in ``graph.unsafe_nodes`` (reshapes also become plain element-wise
    nodes, so that Torch-Pruning's own reshape mapping cannot fail on them) and
    `prunable_safely` keeps every group whose channels pass through one out of
    `ModelGraph.groups`: those channels are never pruned. Other failures of the tracer
    become a ConfigError.
    """
    graph = _graph_class()()
    try:
        with torch.enable_grad():  # Torch-Pruning traces through autograd, also when called under no_grad
            return graph.build_dependency(model, example_inputs=example_inputs, verbose=False)
    except ConfigError:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"Torch-Pruning cannot trace {type(model).__name__} on the example input ({type(err).__name__}: {first})."
        ) from err


@functools.cache
def _graph_class():
    import torch_pruning as tp

    class DependencyGraph(tp.DependencyGraph):
        """Marks the ops that scramble channels right after tracing, before any index mapping."""

        def _trace(self, *args, **kwargs):
            module2node = super()._trace(*args, **kwargs)
            tokens = not self._2d_4d  # Torch-Pruning saw a Linear on (B, N, C) tokens: channels last
            self.unsafe_nodes, self.flatten_nodes = _scrambling_nodes(module2node, tokens)
            return module2node

    return DependencyGraph


def _scrambling_nodes(module2node: Mapping, tokens: bool) -> tuple[set, set]:
    """(nodes that move channels out of Torch-Pruning's sight, flatten nodes that need its mapping)."""
    from torch_pruning import ops

    unsafe, flattens = set(), set()
    for node in module2node.values():
        if node.type == ops.OPTYPE.RESHAPE:
            kind = _reshape_kind(node.grad_fn, tokens)
            if kind == "flatten":
                flattens.add(node)
            elif kind is None:
                unsafe.add(node)
                node.type = ops.OPTYPE.ELEMENTWISE
        elif node.type in (ops.OPTYPE.SPLIT, ops.OPTYPE.UNBIND):
            unsafe.add(node)
        elif node.type == ops.OPTYPE.SLICE and _slices_channels(node.grad_fn):
            unsafe.add(node)
    return unsafe, flattens


def _reshape_kind(grad_fn, tokens: bool) -> str | None:
    """"same" if a reshape leaves the channel dimension alone, "flatten" for (B, C, H, W) -> (B, C*H*W), else None.

    ``tokens``: the model runs Linear layers on (B, N, C) tensors, whose channels are the last dimension.
    """
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None) or getattr(grad_fn, "_saved_self_sizes", None)
    metadata = getattr(grad_fn, "_input_metadata", None)  # the shapes of the op's outputs
    if sizes is None or not metadata:
        return None
    before, after = tuple(int(s) for s in sizes), tuple(int(s) for s in metadata[0].shape)
    if tokens and max(len(before), len(after)) <= 3 and before[-1:] == after[-1:]:
        return "same"  # (B, N, C) tokens, channels last: batch and tokens merged or split (as nn.Linear does)
    if [s for s in before if s != 1] == [s for s in after if s != 1]:
        return "same"  # only size-1 dimensions added or removed (a batch of one included)
    if before[:1] != after[:1]:
        return None
    if len(before) >= 4 and after[:2] == before[:2]:
        return "same"  # channels first, spatial dimensions merged or split
    if len(before) == 4 and after == (before[0], math.prod(before[1:])):
        return "flatten"
    return None


def _slices_channels(grad_fn) -> bool:
    """Whether a slice cuts the dimension Torch-Pruning takes for channels (1, or 2 for (B, N, C) tokens)."""
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    dim = getattr(grad_fn, "_saved_dim", None)
    if sizes is None or dim is None:
        return True
    sizes = tuple(int(s) for s in sizes)
    if dim % len(sizes) != (2 if len(sizes) == 3 else 1):
        return False
    start, end, step = (getattr(grad_fn, f"_saved_{k}", None) for k in ("start", "end", "step"))
    whole = start in (0, None) and (end is None or end >= sizes[dim]) and step in (1, None)
    return not whole


def prunable_safely(dg, group) -> bool:
    """Whether every channel of ``group`` reaches its layers through ops Torch-Pruning maps correctly."""
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

    for dep, idxs in group:
        node = dep.target
        if node in dg.unsafe_nodes:
            return False
        if node in dg.flatten_nodes and not any(isinstance(m, _FlattenIndexMapping) for m in dep.index_mapping):
            return False
        if dg.is_out_channel_pruning_fn(dep.handler):
            get = dg.get_out_channels
        elif dg.is_in_channel_pruning_fn(dep.handler):
            get = dg.get_in_channels
        else:
            continue
        try:
            limit = get(node)
        except AttributeError:  # an op without channels of its own
            limit = None
        if limit is not None and idxs and max(int(i) for i in idxs) >= limit:
            return False  # an index beyond the layer's channels: the mapping is wrong (e.g. a mean over channels)
    return True
