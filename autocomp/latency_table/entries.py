"""What the latency table measures: one conv/linear layer's geometry, built and fed alone (and its two factor layers),
the grid of channel counts it is timed at, and the arithmetic between grid points."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autocomp.graph import LayerInfo


@dataclass(frozen=True)
class Geometry:
    """A conv/linear layer apart from its channel counts; ``groups`` 0 means depthwise (groups = channels).

    ``size``: the input's spatial size (conv) or its leading dimensions before the features (linear).
    """

    kind: str
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()
    padding_mode: str = "zeros"
    groups: int = 1
    bias: bool = True
    size: tuple[int, ...] = ()

    def key(self, in_channels: int, out_channels: int) -> str:
        """The entry's name in the cache file."""
        return f"{self.kind} {in_channels}>{out_channels} {self._described}"

    @functools.cached_property
    def _described(self) -> str:
        if self.kind == "linear":
            return f"rows{list(self.size)} bias{int(self.bias)}"
        groups = "dw" if self.groups == 0 else self.groups
        return (
            f"g{groups} k{list(self.kernel)} s{list(self.stride)} "
            f"p{self.padding if isinstance(self.padding, str) else list(self.padding)} d{list(self.dilation)} "
            f"{self.padding_mode} bias{int(self.bias)} in{list(self.size)}"
        )

    def layer(self, in_channels: int, out_channels: int) -> nn.Module:
        """A fresh layer of this geometry."""
        if self.kind == "linear":
            return nn.Linear(in_channels, out_channels, bias=self.bias)
        conv: Callable[..., nn.Module] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[len(self.kernel) - 1]  # by dimensions
        return conv(
            in_channels,
            out_channels,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            groups=self.groups or in_channels,
            bias=self.bias,
            padding_mode=self.padding_mode,
        )

    def example(self, in_channels: int) -> torch.Tensor:
        """An input of one example for the layer (with the batch dimension)."""
        shape = (*self.size, in_channels) if self.kind == "linear" else (in_channels, *self.size)
        return torch.zeros(1, *shape)


@dataclass(frozen=True)
class Grid:
    """The channel counts at which one geometry is measured; depthwise grids hold the diagonal only."""

    geometry: Geometry
    ins: tuple[int, ...]
    outs: tuple[int, ...]

    @property
    def depthwise(self) -> bool:
        return self.geometry.groups == 0

    def points(self) -> list[tuple[int, int]]:
        if self.depthwise:
            return [(count, count) for count in self.ins]
        return [(cin, cout) for cin in self.ins for cout in self.outs]


def counts(fewest: int, full: int, steps: int, multiple: int) -> tuple[int, ...]:
    """``steps`` evenly spaced channel counts from ``fewest`` to ``full`` (multiples of ``multiple``), both ends included."""
    inner = {round(full * k / steps / multiple) * multiple for k in range(1, steps)}
    return tuple(sorted({fewest, full} | {count for count in inner if fewest < count < full}))


def bracket(points: tuple[int, ...], value: int) -> tuple[int, int, float]:
    """Indices of the grid points around ``value`` and the weight of the upper one (clamped at the ends)."""
    if len(points) == 1:
        return 0, 0, 0.0
    upper = min(max(bisect.bisect_left(points, value), 1), len(points) - 1)
    low, high = points[upper - 1], points[upper]
    return upper - 1, upper, min(max((value - low) / (high - low), 0.0), 1.0)


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` with ``b >= 0`` (a flat line when the slope comes out negative)."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    slope = max(slope, 0.0)
    return mean_y - slope * mean_x, slope


def factor_geometries(whole: Geometry, scheme: str, output_size: tuple[int, ...]) -> tuple[Geometry, Geometry]:
    """The geometries of the two layers `compress.lowrank.factorized_shell` makes of a layer of geometry ``whole``."""
    if whole.kind == "linear":
        return Geometry("linear", bias=False, size=whole.size), whole
    if scheme == "pair":
        first = Geometry(
            "conv", whole.kernel, whole.stride, whole.padding, whole.dilation, whole.padding_mode, 1, False, whole.size
        )
        return first, Geometry("conv", (1, 1), (1, 1), (0, 0), (1, 1), "zeros", 1, whole.bias, output_size)
    (kh, kw), (sh, sw), (dh, dw) = whole.kernel, whole.stride, whole.dilation
    first = Geometry(
        "conv",
        (kh, 1),
        (sh, 1),
        whole.padding if isinstance(whole.padding, str) else (whole.padding[0], 0),
        (dh, 1),
        "zeros",
        1,
        False,
        whole.size,
    )
    middle = (output_size[0], whole.size[1])  # the k x 1 conv keeps the input's width
    second = Geometry(
        "conv",
        (1, kw),
        (1, sw),
        whole.padding if isinstance(whole.padding, str) else (0, whole.padding[1]),
        (1, dw),
        "zeros",
        1,
        whole.bias,
        middle,
    )
    return first, second


def tuple_or_str(padding: tuple[int, ...] | str) -> tuple[int, ...] | str:
    return padding if isinstance(padding, str) else tuple(padding)


def spatial(layer: LayerInfo, output_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output's size apart from its channels."""
    return tuple(output_shape[:-1]) if layer.kind == "linear" else tuple(output_shape[1:])
