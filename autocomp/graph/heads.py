"""Attention heads: whether a group of heads can lose whole heads, and what its products outside layers cost.

A group of channels that are attention heads (q, k, v and the output projection's input) is
pruned in whole heads. Whether the model's code follows is found by trying: on a copy, one head
is cut out of the group's layers (the attributes that hold the head count lowered) and the
output must equal the original's with that head's input to the output projection zeroed,
which is what removing a head means. The same run tells how much of each module's MACs
outside layers (the scores and their product with v) one head computes.
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

from autocomp.cost.macs import MacCounter
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


def probe_heads(
    model: nn.Module, example_inputs: torch.Tensor, groups: list[HeadGroup], other_macs: dict[str, int]
) -> tuple[list[str | None], dict[str, dict[HeadGroup, int]]]:
    """For each group, None when its last head can be removed from the model's code exactly, else why not; and per
    module with MACs outside layers, the MACs one head of each group computes there (module -> group -> MACs)."""
    probe = copy.deepcopy(model).eval()
    reasons: list[str | None] = []
    per_head: dict[str, dict[HeadGroup, int]] = {}
    for group in groups:
        width = group.heads * group.head_size
        last = range(width - group.head_size, width)
        with _zeroed_inputs(probe, group.consumers, last):
            expected = _run(probe, example_inputs)
        try:
            with _cut(probe, group, last), MacCounter(probe) as counter:
                got = _run(probe, example_inputs)
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
        names = {module: name for name, module in probe.named_modules()}
        after = {names[module]: macs // example_inputs.shape[0] for module, macs in counter.own.items()}
        for name, macs in other_macs.items():
            if after.get(name, 0) != macs:
                per_head.setdefault(name, {})[group] = macs - after.get(name, 0)
    return reasons, per_head


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
    head count lowered."""
    width = group.heads * group.head_size
    keep = [c for c in range(width) if c not in channels]
    saved = {}
    for name, dim, kept in [
        (n, 0, [b * width + c for b in range(group.blocks) for c in keep]) for n in group.producers
    ] + [(n, 1, keep) for n in group.consumers]:
        layer, index = model.get_submodule(name), torch.tensor(kept)
        saved[name] = {key: getattr(layer, key) for key in ("weight", "bias", _width_attr(layer, dim))}
        bias = cast("torch.Tensor | None", layer.bias)
        layer.weight = nn.Parameter(_weight(model, name).detach().index_select(dim, index))
        if dim == 0 and bias is not None:
            layer.bias = nn.Parameter(bias.detach()[index])
        setattr(layer, _width_attr(layer, dim), len(kept))
    old_counts = set_head_count(model, group, group.heads - 1)
    try:
        yield
    finally:
        for name, attributes in saved.items():
            for key, value in attributes.items():
                setattr(model.get_submodule(name), key, value)
        for (module, key), value in old_counts.items():
            setattr(module, key, value)


def _width_attr(layer: nn.Module, dim: int) -> str:
    if isinstance(layer, nn.Linear):
        return "out_features" if dim == 0 else "in_features"
    return "out_channels" if dim == 0 else "in_channels"
