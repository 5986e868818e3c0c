"""Torch-Pruning's dependency graph, with the ops whose channel mapping it gets wrong kept out of pruning."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from autocomp.errors import ConfigError
from autocomp.graph.channel_ops import (
    map_last_dimension_concatenations,
    map_last_dimension_split,
    map_unbind,
    scrambling_nodes,
)


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
    `group_verdict` keeps every group whose channels pass through one out of
    `ModelGraph.groups`: those channels are never pruned. One exception: attention heads.
    A group whose channels are split into heads, (..., C) -> (..., heads, C/heads), and meet
    in products of activations (the scores q k^T and their product with v; Torch-Pruning
    couples q, k, v and the output projection's input through them) is pruned in whole heads
    (``graph.head_nodes`` holds the head size of each split or merge). Other failures of the
    tracer become a ConfigError.
    """
    graph = _graph_class()()
    try:
        with torch.enable_grad(), _shapes_saved_for_backward(), _concatenations_left_unmapped_when_unknown(graph):
            return graph.build_dependency(
                model, example_inputs=example_inputs, output_transform=_output_tensors, verbose=False
            )
    except ConfigError:
        raise
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"Torch-Pruning cannot trace {type(model).__name__} on the example input ({type(err).__name__}: {first})."
        ) from err


def _pack_shape(tensor: torch.Tensor) -> tuple[torch.Size, torch.dtype]:
    return tensor.shape, tensor.dtype


def _unpack_shape(packed: tuple[torch.Size, torch.dtype]) -> torch.Tensor:
    return torch.empty(packed[0], dtype=packed[1], device="meta")


@contextmanager
def _shapes_saved_for_backward() -> Iterator[None]:
    """Torch-Pruning reads the autograd graph of one forward pass, which no backward pass follows: the tensors autograd
    saves for backward are kept as their shapes alone (read back as meta tensors). Saved, they held every activation of
    the pass at once (vit_h_14 at 518x518: over 20 GB, against its 2.5 GB of weights)."""
    with torch.autograd.graph.saved_tensors_hooks(_pack_shape, _unpack_shape):
        yield


@contextmanager
def _concatenations_left_unmapped_when_unknown(graph) -> Iterator[None]:
    """Torch-Pruning's concatenation mapping fails (TypeError) where it cannot infer an input's channels (a cache of
    keys and values grown by torch.cat); such a concatenation is kept out of pruning instead (and made a plain
    element-wise node, which the mapping, run again for every group, passes by)."""
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_concat_index_mapping

    def update(dg, node) -> None:
        try:
            original(dg, node)
        except TypeError:
            dg.unsafe_nodes.add(node)
            node.type = ops.OPTYPE.ELEMENTWISE

    index_mapping.update_concat_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = original


MAX_GROUP_INDICES = 1 << 22
"""The most channel indices one group may map over all its layers and ops: a residual stream of a large CNN maps some
50 x 2,048, a flatten before a classifier C*H*W more (512 x 7 x 7 in VGG), while reshapes in a cycle (MaxViT's window
partitions) make Torch-Pruning map ever more indices, until memory runs out."""


@contextmanager
def _bounded_groups() -> Iterator[None]:
    """Torch-Pruning's groups refusing (ValueError) to hold more than `MAX_GROUP_INDICES` indices: such a group is
    kept whole, as any other whose mapping fails."""
    from torch_pruning.dependency.group import Group

    original = Group.add_dep

    def add_dep(group, dep, idxs) -> None:
        group.mapped_indices = getattr(group, "mapped_indices", 0) + len(idxs)
        if group.mapped_indices > MAX_GROUP_INDICES:
            raise ValueError(f"Torch-Pruning mapped over {MAX_GROUP_INDICES:,} indices (reshapes in a cycle)")
        original(group, dep, idxs)

    Group.add_dep = add_dep
    try:
        yield
    finally:
        Group.add_dep = original


def _output_tensors(output: object) -> list[torch.Tensor]:
    """The tensors a model's output holds with a gradient to trace (Hugging Face outputs, caches of keys and values)."""
    leaves = tree_leaves(output)
    caches = [leaf for leaf in leaves if not isinstance(leaf, torch.Tensor) and hasattr(leaf, "__iter__")]
    tensors = [
        leaf
        for leaf in leaves + [t for cache in caches for t in tree_leaves(list(cache))]
        if isinstance(leaf, torch.Tensor)
    ]
    return [tensor for tensor in tensors if tensor.grad_fn is not None]


@functools.cache
def _graph_class():
    import torch_pruning as tp

    class DependencyGraph(tp.DependencyGraph):
        """Marks the ops that scramble channels right after tracing, before any index mapping."""

        def _trace(self, *args, **kwargs):
            module2node = super()._trace(*args, **kwargs)
            map_last_dimension_concatenations(module2node)
            tokens = not self._2d_4d  # Torch-Pruning saw a Linear on (B, N, C) tokens: channels last
            (self.unsafe_nodes, self.flatten_nodes, self.head_nodes, self.regroup_nodes, self.product_nodes) = (
                scrambling_nodes(self, module2node, tokens)
            )
            return module2node

        def _build_dependency(self, module2node: Mapping) -> None:
            super()._build_dependency(module2node)
            if not self._2d_4d:
                for node in module2node.values():
                    map_last_dimension_split(node)

        def build_dependency(self, *args, **kwargs):
            super().build_dependency(*args, **kwargs)
            for node in self.module2node.values():
                map_unbind(self, node)
            return self

        def followed_groups(self, root_types: tuple[type, ...]) -> Iterator[tuple[nn.Module, list | Exception]]:
            """Torch-Pruning's ``get_all_groups`` (each group once, rooted at its first layer), yielding (root, group);
            where Torch-Pruning's index mapping fails on a group (torchvision's ShuffleNetV2) or grows without end
            (MaxViT's window partitions), (root, the error)."""
            visited = set()
            for module in list(self.module2node):
                pruner = self.get_pruner_of_module(module) if isinstance(module, root_types) else None
                if pruner is None or pruner.get_out_channels(module) is None or module in visited:
                    continue
                try:
                    with _bounded_groups():
                        group = self.get_pruning_group(
                            module, pruner.prune_out_channels, list(range(pruner.get_out_channels(module)))
                        )
                except (IndexError, ValueError, RuntimeError) as err:
                    visited.add(module)
                    yield module, err
                    continue
                visited.update(dep.target.module for dep, _ in group if self.is_out_channel_pruning_fn(dep.handler))
                yield module, group

    return DependencyGraph


@dataclass(frozen=True)
class Verdict:
    """Whether a group of coupled channels can be pruned, in runs of ``head_size`` (whole attention heads, the same
    ones in each of ``blocks`` blocks: packed q, k, v), or why not."""

    head_size: int = 1
    blocks: int = 1
    reason: str | None = None
    """Why the group's channels are kept whole, said of them ("pass through ..."); None when they can be pruned."""
    per_head: frozenset = frozenset()
    """Modules and parameters of the group that hold one entry per head (a bias table, a per-head scale), not one per
    channel: Torch-Pruning's channel indices do not apply to them, the attention's ``keep_heads`` cuts them."""


def group_verdict(dg, group, channels: int) -> Verdict:
    """Whether every channel of ``group`` (``channels`` wide) reaches its layers through ops Torch-Pruning maps
    correctly, or through attention heads, which are then pruned whole."""
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

    nodes = {dep.target for dep, _ in group}
    heads = _heads(dg, nodes, channels)
    if heads is None:
        return Verdict(reason="meet in a product of activations (attention) without whole heads to prune")
    blocks, head_size = heads
    heads_per_block = channels // (blocks * head_size) if head_size > 1 else None
    per_head = set()
    for dep, idxs in group:
        node = dep.target
        if isinstance(node.module, nn.MultiheadAttention):
            return Verdict(
                reason="pass through an nn.MultiheadAttention, whose packed projections autocomp does not prune yet"
            )
        followed = (
            head_size > 1 and (node in dg.head_nodes or node in dg.regroup_nodes or _parts(node) == blocks)
        ) or dg.regroup_nodes.get(node) == channels  # channels last, rows regrouped
        if node in dg.unsafe_nodes and not followed:
            return Verdict(
                reason=f"pass through {_op_name(node)}, which splits, slices or reshapes channels "
                "in a way autocomp cannot follow"
            )
        if node in dg.flatten_nodes and not any(isinstance(m, _FlattenIndexMapping) for m in dep.index_mapping):
            return Verdict(reason="are flattened in a way autocomp cannot follow")
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
            if limit == heads_per_block:
                per_head.add(node.module)
                continue
            return Verdict(reason=f"reach {_op_name(node)} at indices beyond its channels (a reduction over channels)")
    return Verdict(head_size=head_size, blocks=blocks, per_head=frozenset(per_head))


def _heads(dg, nodes: set, channels: int) -> tuple[int, int] | None:
    """(blocks, head size) of a group of ``channels`` through ``nodes``: (1, 1) when no attention is involved; None
    for attention without one consistent head size and blocks (split by reshapes, or by equal parts)."""
    splits = {dg.head_nodes[node] for node in nodes if node in dg.head_nodes}
    if not splits and not nodes & dg.product_nodes:
        return 1, 1
    sizes = {size for _, size in splits}
    blocks = {b for b, _ in splits if b > 1} | {p for p in map(_parts, nodes) if p}
    if len(sizes) != 1 or len(blocks) > 1:
        return None
    (size,), parts = sizes, (blocks.pop() if blocks else 1)
    heads, rest = divmod(channels, parts * size)
    return (parts, size) if heads > 1 and not rest else None


def _parts(node) -> int | None:
    """The number of equal parts a split or unbind cuts the channels into (q, k, v: 3); None for other nodes."""
    offsets = getattr(node.module, "offsets", None) if type(node.module).__name__ in ("_SplitOp", "_UnbindOp") else None
    if not offsets or len(offsets) < 3:
        return None
    sizes = {b - a for a, b in itertools.pairwise(offsets)}
    return len(offsets) - 1 if len(sizes) == 1 else None


def _op_name(node) -> str:
    """A Torch-Pruning node as a user reads it: its op's name (``ViewBackward0`` -> ``view``)."""
    name = node.grad_fn.name() if node.grad_fn is not None else type(node.module).__name__
    return name.removesuffix("Backward0").removesuffix("Backward1").lower()
