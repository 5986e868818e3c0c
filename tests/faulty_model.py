"""A user's model with a fault planted in its forward, importable by Ray workers (autocomp has no hooks)."""

from __future__ import annotations

import builtins

import torch
from torch import nn


class Faulty(nn.Module):
    """A small CNN whose forward raises ``error`` (a builtin exception's name) once a convolution is pruned:
    never while the baseline trains, in every candidate's evaluation."""

    def __init__(self, num_classes: int, in_channels: int, error: str, width: int = 8) -> None:
        super().__init__()
        self.error, self.width = error, width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.stem[0].out_channels, self.body[0].out_channels) != (self.width, 2 * self.width):
            raise getattr(builtins, self.error)("the planted fault of a pruned Faulty model")
        return self.head(self.body(self.stem(x)))
