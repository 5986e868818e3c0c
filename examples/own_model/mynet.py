"""A small CNN standing for your own model: autocomp imports `make_net` by the path in mynet.yaml."""

from torch import nn


def make_net(num_classes: int, in_channels: int, width: int = 32) -> nn.Module:
    """Three conv-BN-ReLU blocks, global pooling and a classifier; autocomp passes the data's class and channel counts."""
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(in_channels, width, 1), *block(width, 2 * width, 2), *block(2 * width, 2 * width, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))
