"""How the ops between layers move channels, as Torch-Pruning's dependency graph sees them: which reshapes, slices,
splits and products of activations it cannot map (`scrambling_nodes`), and its mappings of the last dimension and of
unbinds set right (`map_last_dimension_split`, `map_last_dimension_concatenations`, `map_unbind`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

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


def scrambling_nodes(graph, module2node: Mapping, tokens: bool) -> tuple[set, set, dict, dict, set]:
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


def map_last_dimension_concatenations(module2node: Mapping) -> None:
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


def map_last_dimension_split(node) -> None:
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


def map_unbind(graph, node) -> None:
    """Torch-Pruning cuts an unbind of dimension 0 (q, k and v out of their packed heads) into as many parts as it has
    consumers, in their order: a part read twice (Swin V2's cosine attention normalizes q, a norm and a division) makes
    four parts of three. Here each consumer gets the part it reads; run once the graph is built, as the node then
    becomes a split of dimension 0, whose offsets and mapping Torch-Pruning leaves as they are (it maps splits of
    dimension 1 only)."""
    from torch_pruning import ops
    from torch_pruning.dependency.index_mapping import _SplitIndexMapping

    grad_fn = node.grad_fn
    if node.type != ops.OPTYPE.UNBIND or grad_fn is None or int(getattr(grad_fn, "_saved_dim", -1)) != 0:
        return
    parts, channels = len(grad_fn._input_metadata), _input_channels(graph, node)
    read = [
        {index for fn, index in getattr(out.grad_fn, "next_functions", ()) if fn is grad_fn} for out in node.outputs
    ]
    if channels is None or channels % parts or any(len(indices) != 1 for indices in read):
        return
    offsets = [i * channels // parts for i in range(parts + 1)]
    for out, (part,) in zip(node.outputs, read):
        for dep in node.dependencies:
            if dep.target == out:
                dep.index_mapping[0] = _SplitIndexMapping(offset=offsets[part : part + 2], reverse=False)
        for dep in out.dependencies:
            if dep.target == node:
                dep.index_mapping[0] = _SplitIndexMapping(offset=offsets[part : part + 2], reverse=True)
    node.module.offsets = offsets
    node.type = ops.OPTYPE.SPLIT


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
