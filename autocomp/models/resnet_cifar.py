"""CIFAR-style ResNets (He et al. 2016, section 4.2): 6n+2 layers, stages of 16/32/64 channels.

Shortcuts that change shape are 1x1 convolutions with BatchNorm (option B): option A's
zero-padding cannot be channel-pruned.
"""

from __future__ import annotations

import torch
from torch import nn

from autocomp.models.channels import scaled
from autocomp.models.registry import register


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; the shortcut is identity, or 1x1 conv + BN when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages of ``blocks`` basic blocks, global average pooling, linear ``fc``."""

    def __init__(self, blocks: int, num_classes: int, in_channels: int, width_mult: float = 1.0) -> None:
        super().__init__()
        widths = [scaled(c, width_mult) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, previous = [], widths[0]
        for index, width in enumerate(widths):
            layers = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(previous, width, stride))
                previous = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-20: 3 basic blocks per stage."""
    return CifarResNet(3, num_classes, in_channels, width_mult)


@register("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-32: 5 basic blocks per stage."""
    return CifarResNet(5, num_classes, in_channels, width_mult)


@register("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> CifarResNet:
    """ResNet-56: 9 basic blocks per stage."""
    return CifarResNet(9, num_classes, in_channels, width_mult)
