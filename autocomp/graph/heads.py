"""Attention heads: whether a group of heads can lose whole heads, and what its products outside layers cost.

A group of channels that are attention heads (q, k, v and the output projection's input) is
pruned in whole heads. Whether the model's code follows is found by trying: on a copy, one head
is cut out of the group's layers (the attributes that hold the head count lowered, the
parameters that hold one entry per head cut by the attention's own ``keep_heads(heads)``, where
it has one: Swin's bias tables) and the output must equal the original's with that head's input
to the output projection zeroed, which is what removing a head means. The same run tells how
much of each module's MACs outside layers (the scores and their product with v) one head
computes, and what one head holds outside the group's layers (`HeadParts`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from autocomp.cost.macs import COUNTED_TYPES, MacCounter
from autocomp.graph.widths import lower_attributes, owner_of

HEAD_COUNTS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
"""Attributes of attention modules that hold their number of heads (torch, timm, Hugging Face)."""
HEAD_WIDTHS = ("all_head_size", "inner_dim", "split_size")
"""Attributes that hold heads x head size (GPT-2 splits its packed q, k, v at ``split_size``)."""


@dataclass(frozen=True)
class HeadGroup:
    """The layers of one group of attention heads: ``producers`` write the heads (q, k, v; packed in one layer, its
    ``blocks`` blocks each hold every head), ``consumers`` read them (once)."""

    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    heads: int
    head_size: int
    blocks: int = 1

    @property
    def owner(self) -> str:
        """The innermost module holding all its layers (the attention), '' for the model itself."""
        return owner_of((*self.producers, *self.consumers))


def set_head_count(model: nn.Module, group: HeadGroup, heads: int) -> dict[tuple[nn.Module, str], int]:
    """Set the head count (and heads x head size) attributes of ``group``'s attention to ``heads``; the old values."""
    return lower_attributes(
        model,
        group.owner,
        [
            (HEAD_COUNTS, group.heads, heads),
            (HEAD_WIDTHS, group.heads * group.head_size, heads * group.head_size),
        ],
    )


@dataclass(frozen=True)
class HeadParts:
    """What one head of a group holds outside the group's layers, as its attention's ``keep_heads`` cuts it."""

    layers: dict[str, tuple[int, int]]
    """Other layers -> the (input, output) channels one head holds there (Swin V2's ``cpb_mlp``: one output)."""
    elements: dict[str, int]
    """Parameters outside layers -> the elements one head holds there (a bias table's column)."""


def keep_head_parameters(model: nn.Module, group: HeadGroup, heads: list[int]) -> None:
    """Keep only ``heads`` (in that order) of the parameters of ``group``'s attention that hold one entry per head,
    where the attention has them: it then says which, with a ``keep_heads(heads)`` method."""
    keep_heads = getattr(model.get_submodule(group.owner), "keep_heads", None)
    if keep_heads is not None:
        keep_heads(heads)


def probe_heads(
    model: nn.Module, example_inputs: torch.Tensor, groups: list[HeadGroup], other_macs: dict[str, int]
) -> tuple[list[str | None], dict[str, dict[HeadGroup, int]], dict[HeadGroup, HeadParts]]:
    """For each group, None when its last head can be removed from the model's code exactly, else why not; per
    module with MACs outside layers, the MACs one head of each group computes there (module -> group -> MACs); and
    what one head of each such group holds outside its layers."""
    probe = copy.deepcopy(model).eval()
    reasons: list[str | None] = []
    per_head: dict[str, dict[HeadGroup, int]] = {}
    parts: dict[HeadGroup, HeadParts] = {}
    for group in groups:
        width = group.heads * group.head_size
        last = range(width - group.head_size, width)
        with _zeroed_inputs(probe, group.consumers, last):
            expected = _run(probe, example_inputs)
        sizes = _sizes(probe, group)
        try:
            with _cut(probe, group, last), MacCounter(probe) as counter:
                got = _run(probe, example_inputs)
                cut_sizes = _sizes(probe, group)
        except Exception as err:
            reasons.append(
                f"are attention heads, and the model's code fails without one of them ({type(err).__name__})"
            )
            continue
        if len(got) != len(expected) or not all(
            a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(got, expected)
        ):
            reasons.append(
                "are attention heads, and the model's code computes differently without one of them (it "
                "fixes their number)"
            )
            continue
        reasons.append(None)
        layers, elements = _paired(sizes[0], cut_sizes[0]), _paired(sizes[1], cut_sizes[1])
        parts[group] = HeadParts(
            {name: (old[0] - new[0], old[1] - new[1]) for name, (old, new) in layers.items()},
            {name: old - new for name, (old, new) in elements.items()},
        )
        names = {module: name for name, module in probe.named_modules()}
        after = {names[module]: macs // example_inputs.shape[0] for module, macs in counter.own.items()}
        for name, macs in other_macs.items():
            if after.get(name, 0) != macs:
                per_head.setdefault(name, {})[group] = macs - after.get(name, 0)
    return reasons, per_head, parts


def _sizes(model: nn.Module, group: HeadGroup) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """In ``group``'s attention: the (input, output) channels of its layers other than the group's, and the elements
    of its parameters outside layers."""
    widths, elements = {}, {}
    for name, module in model.get_submodule(group.owner).named_modules(prefix=group.owner):
        if isinstance(module, COUNTED_TYPES):
            if name not in (*group.producers, *group.consumers):
                widths[name] = (_width(module, 1), _width(module, 0))
            continue
        for key, parameter in module.named_parameters(recurse=False):
            elements[f"{name}.{key}" if name else key] = parameter.numel()
    return widths, elements


def _paired(before: dict, after: dict) -> dict:
    """name -> (before, after) of the values that changed."""
    return {name: (value, after[name]) for name, value in before.items() if after[name] != value}


def _run(model: nn.Module, example_inputs: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [leaf for leaf in tree_leaves(model(example_inputs)) if isinstance(leaf, torch.Tensor)]


@contextmanager
def _zeroed_inputs(model: nn.Module, consumers: tuple[str, ...], channels: range) -> Iterator[None]:
    """The consumers' weights for ``channels`` of their input set to zero for a while."""
    saved = {name: _weight(model, name).detach().clone() for name in consumers}
    with torch.no_grad():
        for name in consumers:
            _weight(model, name)[:, channels] = 0
    try:
        yield
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                _weight(model, name).copy_(weight)


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight of layer ``name`` (a conv or linear layer) of ``model``."""
    return cast(torch.Tensor, model.get_submodule(name).weight)


@contextmanager
def _cut(model: nn.Module, group: HeadGroup, channels: range) -> Iterator[None]:
    """``group``'s layers without ``channels`` of each block (out of the producers) and of the consumers' inputs, its
    head count lowered, its attention's per-head parameters without the last head."""
    saved = _state(model.get_submodule(group.owner))
    width = group.heads * group.head_size
    keep = [c for c in range(width) if c not in channels]
    for name, dim, kept in [
        (n, 0, [b * width + c for b in range(group.blocks) for c in keep]) for n in group.producers
    ] + [(n, 1, keep) for n in group.consumers]:
        layer, index = model.get_submodule(name), torch.tensor(kept)
        bias = cast("torch.Tensor | None", layer.bias)
        layer.weight = nn.Parameter(_weight(model, name).detach().index_select(dim, index))
        if dim == 0 and bias is not None:
            layer.bias = nn.Parameter(bias.detach()[index])
        setattr(layer, _width_attr(layer, dim), len(kept))
    set_head_count(model, group, group.heads - 1)
    keep_head_parameters(model, group, list(range(group.heads - 1)))
    try:
        yield
    finally:
        for module, key, value in saved:
            setattr(module, key, value)


def _state(module: nn.Module) -> list[tuple[nn.Module, str, object]]:
    """(module, name, value) of every parameter and int attribute (widths, head counts) of ``module`` and the modules
    inside it."""
    return [
        (inner, key, value)
        for inner in module.modules()
        for key, value in [*inner._parameters.items(), *((k, v) for k, v in vars(inner).items() if type(v) is int)]
    ]


def _width(layer: nn.Module, dim: int) -> int:
    return int(getattr(layer, _width_attr(layer, dim)))


def _width_attr(layer: nn.Module, dim: int) -> str:
    if isinstance(layer, nn.Linear):
        return "out_features" if dim == 0 else "in_features"
    return "out_channels" if dim == 0 else "in_channels"
