"""MobileNetV2 (Sandler et al. 2018) with ``width_mult``, channels rounded to multiples of 8.

``small_input`` (default) keeps 28x28/32x32 inputs large enough: the stem and the first
24-channel stage use stride 1 instead of 2, as the usual CIFAR ports do.
"""

from __future__ import annotations

import torch
from torch import nn

from autocomp.models.registry import register

# expansion t, output channels c, repeats n, first stride s
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def make_divisible(value: float, divisor: int = 8) -> int:
    """The reference code's rounding: nearest multiple of ``divisor``, never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """Conv (padded to keep the size at stride 1, no bias) -> BatchNorm -> ReLU6."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear); residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = [] if expansion == 1 else [conv_bn_relu(in_channels, hidden, 1, 1)]
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """``features`` (stem, 17 inverted residuals, 1x1 conv), global average pooling, dropout, linear ``classifier``."""

    def __init__(self, num_classes: int, in_channels: int, width_mult: float, small_input: bool) -> None:
        super().__init__()
        channels = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_relu(in_channels, channels, 3, 1 if small_input else 2)]
        for row, (t, c, n, s) in enumerate(SETTINGS):
            out = make_divisible(c * width_mult)
            stride = 1 if small_input and row == 1 else s
            for i in range(n):
                layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, t))
                channels = out
        layers.append(conv_bn_relu(channels, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(last, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


@register("mobilenet_v2")
def mobilenet_v2(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, small_input: bool = True
) -> MobileNetV2:
    """MobileNetV2; ``small_input`` keeps 28x28/32x32 inputs from shrinking too fast (see the module doc)."""
    return MobileNetV2(num_classes, in_channels, width_mult, small_input)
