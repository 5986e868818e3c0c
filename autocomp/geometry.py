"""What decisions do to shapes, from geometry alone: a factorization's full rank, weight shapes and MACs (the layers
`compress.lowrank` builds), and an input's size and resampling at a resolution multiplier (`compress.resize`). The
graph predicts costs with these without building a model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autocomp.errors import ConfigError
from autocomp.policy import RANK_SCHEMES


def as_pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A 2-d layer's kernel, stride or dilation (typed by PyTorch as a tuple of any length) as the pair it is."""
    first, second = values
    return first, second


def full_rank_of(in_channels: int, out_channels: int, kernel_size: tuple[int, int], scheme: str = "pair") -> int:
    """Full rank of a layer's reshaped weight, from its geometry (a linear layer has kernel (1, 1))."""
    kh, kw = kernel_size
    if scheme == "separable":
        return min(in_channels * kh, out_channels * kw)
    return min(out_channels, in_channels * kh * kw)


def rank_of(
    fraction: float, in_channels: int, out_channels: int, kernel_size: tuple[int, int], scheme: str = "pair"
) -> int:
    """The rank a ``fraction`` in (0, 1] of a layer's full rank means: ``max(1, round(fraction * full))``, the one
    rule compress, the graph's prediction and the latency table share."""
    return max(1, round(fraction * full_rank_of(in_channels, out_channels, kernel_size, scheme)))


def factor_shapes(
    kind: str, in_channels: int, out_channels: int, kernel_size: tuple[int, int], rank: int, scheme: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Weight shapes of ``first`` and ``second`` in a rank-``rank`` factorization (`factorized_shell`'s layers).

    ``kind`` is "linear" or "conv"; ``second`` also carries the layer's bias, when it has one.
    """
    if kind == "linear":
        return (rank, in_channels), (out_channels, rank)
    kh, kw = kernel_size
    if scheme == "pair":
        return (rank, in_channels, kh, kw), (out_channels, rank, 1, 1)
    return (rank, in_channels, kh, 1), (out_channels, rank, 1, kw)


def _conv_length(size: int, kernel: int, stride: int, padding: int | str, dilation: int) -> int:
    """Output length of a convolution along one axis (PyTorch's arithmetic; 'same' needs stride 1)."""
    if padding == "same":
        return size
    if isinstance(padding, str):
        if padding != "valid":
            raise ConfigError(f"padding {padding!r} is not known; allowed: a number, 'same', 'valid'.")
        padding = 0
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _required(input_hw: tuple[int, int] | None) -> tuple[int, int]:
    """A convolution's input size, where its low-rank MACs need it."""
    if input_hw is None:
        raise ConfigError(
            "a convolution's low-rank MACs need its input size here (separable scheme, or no output size)."
        )
    return input_hw


def lowrank_macs(
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int],
    input_hw: tuple[int, int] | None,
    output_hw: tuple[int, int] | None,
    stride: tuple[int, int],
    padding: tuple[int, int] | str,
    dilation: tuple[int, int],
    rank: int,
    scheme: str,
    rows: int = 1,
) -> int:
    """MACs per example of a rank-``rank`` factorization of a layer with this geometry.

    ``kind`` is "linear" (``rows``: how many rows, e.g. tokens, it is applied to per example) or
    "conv". For a conv, ``output_hw`` may be None and is then derived from ``input_hw``;
    "separable" needs ``input_hw``: its kh x 1 conv keeps the input width.
    """
    if kind == "linear":
        return rows * rank * (in_channels + out_channels)
    if kind != "conv":
        raise ConfigError(f"layer kind {kind!r} is not known; allowed: linear, conv.")
    if scheme not in RANK_SCHEMES:
        raise ConfigError(f"rank scheme {scheme!r} is not known; allowed: {', '.join(RANK_SCHEMES)}.")
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    ph, pw = (padding, padding) if isinstance(padding, str) else padding
    if output_hw is None:
        input_hw = _required(input_hw)
        output_hw = (_conv_length(input_hw[0], kh, sh, ph, dh), _conv_length(input_hw[1], kw, sw, pw, dw))
    oh, ow = output_hw
    if scheme == "pair":
        return oh * ow * rank * (in_channels * kh * kw + out_channels)
    first_width = _required(input_hw)[1]  # the kh x 1 conv has horizontal stride 1 and no horizontal padding
    return oh * first_width * rank * in_channels * kh + oh * ow * out_channels * rank * kw


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
    return resample(example_inputs, resized_size(example_inputs.shape, resolution))


def resample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``images`` resampled to ``size`` (bilinear, antialiased), the one resize every consumer uses."""
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
