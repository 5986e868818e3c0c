"""torchvision's MaxViT attention with its heads merged to their own width.

``RelativePositionalMultiHeadAttention`` merges its heads back to the width of its input
(``reshape(B, G, P, D)``, ``D`` read from the input's shape), which ties the heads' width to the
residual stream's: pruning the stream alone breaks that reshape. The same module with a forward
that merges them to ``n_heads * head_dim`` (a subclass made at run time, so nothing of torchvision
is imported) computes the same, and lets the stream lose channels while the heads keep theirs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class OwnWidthMerge(nn.Module):
    """MaxViT's attention forward, its heads merged to ``n_heads * head_dim`` (mixed into the module's own class)."""

    n_heads: int
    head_dim: int
    scale_factor: float
    to_qkv: nn.Module
    merge: nn.Module
    get_relative_positional_bias: Any

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, groups, positions, _ = x.shape
        heads, size = self.n_heads, self.head_dim
        q, k, v = (
            part.reshape(batch, groups, positions, heads, size).permute(0, 1, 3, 2, 4)
            for part in torch.chunk(self.to_qkv(x), 3, dim=-1)
        )
        scores = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k * self.scale_factor)
        weights = F.softmax(scores + self.get_relative_positional_bias(), dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", weights, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(batch, groups, positions, heads * size))


_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def own_width_class(source: type[nn.Module]) -> type[nn.Module]:
    """``source`` (torchvision's class) with `OwnWidthMerge`'s forward, made once per class."""
    if source not in _CLASSES:
        _CLASSES[source] = type(source.__name__, (OwnWidthMerge, source), {"__module__": __name__})
    return _CLASSES[source]


def is_relative_attention(module: nn.Module) -> bool:
    """torchvision's ``RelativePositionalMultiHeadAttention`` (by class name and the attributes its forward reads), not
    yet given its own width."""
    return (
        type(module).__name__ == "RelativePositionalMultiHeadAttention"
        and not isinstance(module, OwnWidthMerge)
        and all(isinstance(getattr(module, name, None), nn.Linear) for name in ("to_qkv", "merge"))
        and all(
            hasattr(module, name) for name in ("n_heads", "head_dim", "scale_factor", "get_relative_positional_bias")
        )
    )
