"""Torch-Pruning's dependency graph, with the ops whose channel mapping it gets wrong kept out of pruning."""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

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
        with torch.enable_grad(), _concatenations_left_unmapped_when_unknown(graph):
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
            _map_last_dimension_concatenations(module2node)
            tokens = not self._2d_4d  # Torch-Pruning saw a Linear on (B, N, C) tokens: channels last
            (self.unsafe_nodes, self.flatten_nodes, self.head_nodes, self.regroup_nodes, self.product_nodes) = (
                _scrambling_nodes(self, module2node, tokens)
            )
            return module2node

        def _build_dependency(self, module2node: Mapping) -> None:
            super()._build_dependency(module2node)
            if not self._2d_4d:
                for node in module2node.values():
                    _map_last_dimension_split(node)

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


_PRODUCTS = frozenset(
    {
        "BmmBackward0",
        "BaddbmmBackward0",
        "ScaledDotProductFlashAttentionForCpuBackward0",
        "ScaledDotProductEfficientAttentionBackward0",
        "ScaledDotProductFlashAttentionBackward0",
    }
)
"""Autograd nodes of a product of two activations (attention's scores and their product with v)."""


def _scrambling_nodes(graph, module2node: Mapping, tokens: bool) -> tuple[set, set, dict, dict, set]:
    """(nodes that move channels out of Torch-Pruning's sight, flatten nodes that need its mapping,
    reshapes into or out of attention heads -> (blocks, head size), reshapes that regroup the leading dimensions ->
    the size of the last one, products of two activations). Slices of other dimensions than the channels become plain
    element-wise nodes."""
    from torch_pruning import ops

    unsafe, flattens, heads, regroups, products = set(), set(), {}, {}, set()
    for node in module2node.values():
        if node.type == ops.OPTYPE.RESHAPE:
            kind = _reshape_kind(node.grad_fn, tokens, _input_channels(graph, node))
            if kind == "flatten":
                flattens.add(node)
            elif kind != "same":
                unsafe.add(node)
                node.type = ops.OPTYPE.ELEMENTWISE
                if isinstance(kind, tuple):
                    heads[node] = kind
                elif kind == "regroup":
                    regroups[node] = int(node.grad_fn._input_metadata[0].shape[-1])
        elif node.type in (ops.OPTYPE.SPLIT, ops.OPTYPE.UNBIND):
            unsafe.add(node)
        elif node.type == ops.OPTYPE.SLICE:
            cut = _sliced_dimension(node.grad_fn, _input_channels(graph, node))
            if cut == "channels":
                unsafe.add(node)
            elif cut == "other":
                node.type = ops.OPTYPE.ELEMENTWISE  # Torch-Pruning would map dimension 1 of (B, H, W, C) as channels
        elif node.grad_fn is not None and node.grad_fn.name() in _PRODUCTS:
            products.add(node)
    return unsafe, flattens, heads, regroups, products


def _map_last_dimension_concatenations(module2node: Mapping) -> None:
    """Torch-Pruning leaves every concatenation unmapped when a 3-d parameter is computed before it (for ViT's class
    token and position embedding, concatenated along the tokens); a concatenation along the last dimension (Swin's
    patch merging, after V2's per-head ``logit_scale``) is not that case and keeps its mapping (which still checks
    that the parts' channels add up to the result's)."""
    from torch_pruning import ops

    for node in module2node.values():
        grad_fn = node.grad_fn
        dim, metadata = getattr(grad_fn, "_saved_dim", None), getattr(grad_fn, "_input_metadata", None)
        if node.type != ops.OPTYPE.CONCAT or dim is None or not metadata:
            continue
        rank = len(metadata[0].shape)
        if rank >= 3 and (dim - (1 << 64) if dim >= 1 << 63 else dim) % rank == rank - 1:
            node.enable_index_mapping = True


def _map_last_dimension_split(node) -> None:
    """Torch-Pruning maps a split of dimension 1 only; a split of the last one, where the channels of (B, N, C) tokens
    are (GPT-2's packed q, k, v: ``split(C, dim=2)``), gets the same mapping here: each part its range of channels."""
    from torch_pruning import ops
    from torch_pruning.dependency.index_mapping import _SplitIndexMapping

    grad_fn = node.grad_fn
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if node.type != ops.OPTYPE.SPLIT or sizes is None or int(grad_fn._saved_dim) % len(sizes) != len(sizes) - 1:
        return
    width = int(sizes[-1])
    if hasattr(grad_fn, "_saved_split_sizes"):
        parts = [int(size) for size in grad_fn._saved_split_sizes]
    else:
        size = int(grad_fn._saved_split_size)
        parts = [size] * (width // size) + ([width % size] if width % size else [])
    offsets = [0]
    for part in parts:
        offsets.append(offsets[-1] + part)
    node.module.split_sizes, node.module.offsets = parts, offsets
    for i, out in enumerate(node.outputs):
        for dep in node.dependencies:
            if dep.target == out:
                dep.index_mapping[0] = _SplitIndexMapping(offset=offsets[i : i + 2], reverse=False)
                break
        for dep in out.dependencies:
            if dep.target == node:
                dep.index_mapping[0] = _SplitIndexMapping(offset=offsets[i : i + 2], reverse=True)
                break


def _reshape_kind(grad_fn, tokens: bool, channels: int | None = None) -> str | tuple[int, int] | None:
    """How a reshape treats the channel dimension: "same" (left alone), "flatten" ((B, C, H, W) -> (B, C*H*W)),
    "regroup" (the last dimension kept, the leading ones merged or split: channels-last tensors into rows, as a
    Linear on (B, H, W, C) does, or attention's heads into the batch); (1, d) for a split of the last dimension into
    heads of d channels, (..., C) -> (..., C/d, d), or its merge; (3, d) for packed q, k and v split into heads,
    (..., 3C) -> (..., 3, C/d, d); else None.

    ``tokens``: the model runs Linear layers on (B, N, C) tensors, whose channels are the last dimension;
    ``channels``: those of the reshaped tensor, as Torch-Pruning infers them (None: unknown).
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
    if before[-1] == after[-1] == channels != before[1]:
        return "same"  # channels last, the others merged or split: Swin's windows, (B, H, W, C) -> (B, h, w, w', w', C)
    if before[:1] != after[:1]:
        return "regroup" if before[-1] == after[-1] else None
    if len(before) >= 4 and after[:2] == before[:2]:
        return "same"  # channels first, spatial dimensions merged or split
    if len(before) == 4 and after == (before[0], math.prod(before[1:])):
        return "flatten"
    if len(after) == len(before) + 1 and before[:-1] == after[:-2] and before[-1] == after[-2] * after[-1]:
        return 1, after[-1]  # (..., C) -> (..., heads, d)
    if len(before) == len(after) + 1 and after[:-1] == before[:-2] and after[-1] == before[-2] * before[-1]:
        return 1, before[-1]  # (..., heads, d) -> (..., C)
    if len(after) == len(before) + 2 and before[:-1] == after[:-3] and before[-1] == math.prod(after[-3:]):
        return after[-3], after[-1]  # (..., 3C) -> (..., 3, heads, d): q, k and v packed
    return None


def _input_channels(graph, node) -> int | None:
    """The channels of the tensor a single-input node reads, as Torch-Pruning infers them from the layers before it,
    else from those after it (None: unknown)."""
    from torch_pruning.dependency.shape_infer import infer_in_channels_recursively, infer_out_channels_recursively

    if len(node.inputs) != 1:
        return None
    with warnings.catch_warnings():  # long chains of element-wise ops: None after Torch-Pruning's depth limit
        warnings.simplefilter("ignore", UserWarning)
        channels = infer_out_channels_recursively(graph, node.inputs[0], [0])
        if channels is None and len(node.outputs) == 1:
            channels = infer_in_channels_recursively(graph, node.outputs[0], [0])
    return channels


def _sliced_dimension(grad_fn, channels: int | None) -> str | None:
    """What a slice cuts: "channels", "other" (a dimension that is not the channels, which Torch-Pruning may still take
    for them: the height of a channels-last (B, H, W, C) tensor), or None (nothing: the whole dimension).

    A dimension as wide as the channels Torch-Pruning infers for the sliced tensor is taken for them; when the last
    dimension is that wide, any other is not; else the channels are dimension 1, or 2 of (B, N, C) tokens, as
    Torch-Pruning has them.
    """
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    dim = getattr(grad_fn, "_saved_dim", None)
    if sizes is None or dim is None:
        return "channels"
    sizes = tuple(int(s) for s in sizes)
    dim %= len(sizes)
    start, end, step = (getattr(grad_fn, f"_saved_{k}", None) for k in ("start", "end", "step"))
    if start in (0, None) and (end is None or end >= sizes[dim]) and step in (1, None):
        return None
    if sizes[dim] == channels:
        return "channels"
    if sizes[-1] == channels:  # channels last, and another dimension cut
        return "other"
    return "channels" if dim == (2 if len(sizes) == 3 else 1) else "other"


@dataclass(frozen=True)
class Verdict:
    """Whether a group of coupled channels can be pruned, in runs of ``head_size`` (whole attention heads, the same
    ones in each of ``blocks`` blocks: packed q, k, v), or why not."""

    head_size: int = 1
    blocks: int = 1
    reason: str | None = None
    """Why the group's channels are kept whole, said of them ("pass through ..."); None when they can be pruned."""


def group_verdict(dg, group, channels: int) -> Verdict:
    """Whether every channel of ``group`` (``channels`` wide) reaches its layers through ops Torch-Pruning maps
    correctly, or through attention heads, which are then pruned whole."""
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

    nodes = {dep.target for dep, _ in group}
    heads = _heads(dg, nodes, channels)
    if heads is None:
        return Verdict(reason="meet in a product of activations (attention) without whole heads to prune")
    blocks, head_size = heads
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
            return Verdict(reason=f"reach {_op_name(node)} at indices beyond its channels (a reduction over channels)")
    return Verdict(head_size=head_size, blocks=blocks)


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
