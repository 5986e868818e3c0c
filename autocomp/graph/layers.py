"""The records a `ModelGraph` is made of: layers, channel groups, and how channels are shared among them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerInfo:
    """One conv or linear layer as traced on the example input (shapes without the batch)."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    params: int
    group: int | None
    """Index of the `ChannelGroup` its output channels belong to; None when they cannot be pruned."""

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels

    @property
    def kernel(self) -> tuple[int, ...]:
        """The kernel size, (1, 1) for a linear layer: the geometry a factorization sees."""
        return tuple(self.kernel_size) if self.kind == "conv" else (1, 1)

    @property
    def factorizable(self) -> bool:
        """Low-rank factorization applies to linear layers and 2-d convolutions without groups."""
        return self.kind == "linear" or (self.groups == 1 and len(self.kernel_size) == 2)

    @property
    def quantizable(self) -> bool:
        """Bits apply to linear layers and 2-d convolutions."""
        return self.kind == "linear" or len(self.kernel_size) == 2


@dataclass(frozen=True)
class ChannelGroup:
    """Channels shared by ``layers`` (they produce them) and read by ``consumers``."""

    index: int
    channels: int
    layers: tuple[str, ...]
    consumers: tuple[str, ...]
    blocks: int = 1
    """Equal blocks the channels form for grouped convolutions (neither plain nor depthwise) that read or
    write them; pruning removes the same positions from every block, so each conv group stays whole."""
    head_size: int = 1
    """Channels of one attention head when the channels are heads (q, k, v and the output projection's input):
    pruning removes whole heads, the same ones from every block (q, k and v packed in one layer: 3 blocks)."""

    @property
    def heads(self) -> int:
        """Heads per block (1 when the channels are not attention heads)."""
        return self.channels // (self.blocks * self.head_size)

    @property
    def unit(self) -> int:
        """The fewest channels pruning removes or keeps: one per block, or one head per block."""
        return self.blocks * self.head_size


@dataclass(frozen=True)
class Share:
    """How many of a layer's input or output channels (or of a carried parameter's channels) come from one group."""

    group: int
    count: int
    elements: int = 1
    """Elements one channel stands for: 1 for layers; for a parameter outside them, what it loses per pruned channel."""


@dataclass(frozen=True)
class Carried:
    """A parameter outside the conv/linear layers (norms, PReLU, free parameters): its size and the channels it carries."""

    elements: int
    bits: int
    shares: tuple[Share, ...]


def rounded_channels(keep: float, channels: int, multiple: int = 1) -> int:
    """``keep x channels`` rounded to a multiple of ``multiple``, at least one multiple, at most ``channels``."""
    if keep >= 1.0:
        return channels
    count = int(keep * channels / multiple + 0.5) * multiple  # half up, as MobileNet's make_divisible
    return min(channels, max(count, min(multiple, channels), 1))
