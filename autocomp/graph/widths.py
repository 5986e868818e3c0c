"""Attributes of a model's own code that hold a number of channels, lowered when a group loses channels.

Pruning edits the layers' weights, but a model's forward may also read a width it stored at
construction: torchvision's ViT reshapes its patch embedding to ``self.hidden_dim``, attention
modules split their heads at ``self.num_heads``. Such attributes, found by name in the module
that holds all of a group's layers, are set to the width the group keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from autocomp.cost.macs import COUNTED_TYPES

HIDDEN_WIDTHS = ("hidden_dim", "embed_dim", "hidden_size", "d_model")
"""Attributes that hold the width of a residual stream (torchvision, timm, Hugging Face)."""


def owner_of(layers: Iterable[str]) -> str:
    """The innermost module holding all ``layers`` (never one of them), '' for the model itself."""
    parts = [name.split(".") for name in layers]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common[: min(len(p) for p in parts) - 1])


def lower_attributes(
    model: nn.Module, owner: str, changes: Sequence[tuple[tuple[str, ...], int, int]]
) -> dict[tuple[nn.Module, str], int]:
    """For each (names, before, after) of ``changes``: every int attribute called one of ``names`` that holds
    ``before``, in module ``owner`` of ``model`` and the modules inside it (layers excepted), set to ``after``; the old
    values, by (module, name)."""
    old = {}
    for module in model.get_submodule(owner).modules():
        if isinstance(module, COUNTED_TYPES):
            continue
        for names, before, after in changes:
            for name in names:
                value = getattr(module, name, None)
                if type(value) is int and value == before and (module, name) not in old:
                    old[module, name] = value
                    setattr(module, name, after)
    return old
