"""Resolution multiplier: a model that first resizes its input, as in the MobileNet tables.

The resize is part of the model, so every consumer (evaluator, cost, latency, export) feeds
the smaller input without knowing about it; it costs no MACs in the papers' convention.
"""

from __future__ import annotations

import torch
from torch import nn

from autocomp.geometry import resample


class InputResize(nn.Module):
    """Wraps ``model``: images are resampled to ``size`` (bilinear, antialiased) before it runs."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.size = (int(size[0]), int(size[1]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(resample(images, self.size))

    def extra_repr(self) -> str:
        return f"size={self.size}"
