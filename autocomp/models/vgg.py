"""VGG-Small of the quantization literature (Zhang et al. 2018, LQ-Nets): 128-128-M-256-256-M-512-512-M."""

from __future__ import annotations

import torch
from torch import nn

from autocomp.models.channels import scaled
from autocomp.models.registry import register

LAYOUT: list[int | str] = [128, 128, "M", 256, 256, "M", 512, 512, "M"]


class VGGSmall(nn.Module):
    """Conv-BN-ReLU stacks with max pooling, global average pooling and a linear ``fc``."""

    def __init__(self, num_classes: int, in_channels: int, width_mult: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for item in LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            width = scaled(int(item), width_mult)
            layers += [nn.Conv2d(previous, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register("vgg_small")
def vgg_small(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGGSmall:
    """VGG-Small with every channel count scaled by ``width_mult``."""
    return VGGSmall(num_classes, in_channels, width_mult)
