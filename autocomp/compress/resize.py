"""Resolution multiplier: a model that first resizes its input, as in the MobileNet tables.

The resize is part of the model, so every consumer (evaluator, cost, latency, export) feeds
the smaller input without knowing about it; it costs no MACs in the papers' convention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autocomp.errors import ConfigError


def resized_size(shape: torch.Size | tuple[int, ...], resolution: float) -> tuple[int, int]:
    """Height and width of an (N, C, H, W) input scaled by ``resolution`` (at least 1 x 1)."""
    if len(shape) != 4:
        raise ConfigError(
            f"a resolution multiplier needs image input of shape (N, C, H, W); this model's example input has shape {tuple(shape)}."
        )
    return max(1, round(shape[2] * resolution)), max(1, round(shape[3] * resolution))


def resize_input(example_inputs: torch.Tensor, resolution: float) -> torch.Tensor:
    """``example_inputs`` as the model sees it at ``resolution`` (unchanged at 1)."""
    if resolution == 1.0:
        return example_inputs
    return InputResize.resample(example_inputs, resized_size(example_inputs.shape, resolution))


class InputResize(nn.Module):
    """Wraps ``model``: images are resampled to ``size`` (bilinear, antialiased) before it runs."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.size = (int(size[0]), int(size[1]))

    @staticmethod
    def resample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``images`` resampled to ``size``, the one resize every consumer uses."""
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.resample(images, self.size))

    def extra_repr(self) -> str:
        return f"size={self.size}"
