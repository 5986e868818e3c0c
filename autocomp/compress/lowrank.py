"""Low-rank factorization: a linear layer or convolution replaced by two thinner ones, from a truncated SVD.

* Linear(in, out) -> Linear(in, r) -> Linear(r, out).
* Conv2d, scheme "pair": k x k conv to r channels, then a 1 x 1 conv (the weight reshaped to
  out x (in k k) and factorized).
* Conv2d, scheme "separable" (Jaderberg et al. 2014, Tai et al. 2016): a k x 1 conv to r
  channels, then a 1 x k conv (the weight reshaped to (in kh) x (out kw)).

At full rank both reproduce the layer exactly; below it, the factorization is the best
approximation of that reshaped weight in the Frobenius norm (Eckart-Young).
"""

from __future__ import annotations

import torch
from torch import nn

from autocomp.errors import ConfigError

SCHEMES = ("pair", "separable")


class LowRank(nn.Sequential):
    """Two layers standing for one: ``first`` (no bias, ``rank`` outputs) then ``second`` (the original bias)."""

    def __init__(self, first: nn.Module, second: nn.Module, scheme: str) -> None:
        super().__init__()
        self.first = first
        self.second = second
        self.scheme = scheme

    @property
    def rank(self) -> int:
        return self.first.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.first.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.second.weight.shape[0]

    def extra_repr(self) -> str:
        return f"scheme={self.scheme!r}, rank={self.rank}"


def _check(module: nn.Module, scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ConfigError(f"rank scheme {scheme!r} is not known; allowed: {', '.join(SCHEMES)}.")
    if isinstance(module, nn.Linear):
        return
    if not isinstance(module, nn.Conv2d) or module.groups != 1:
        what = f"{type(module).__name__}" + (f" with groups={module.groups}" if isinstance(module, nn.Conv2d) else "")
        raise ConfigError(f"low-rank factorization applies to nn.Linear and nn.Conv2d with groups=1, not {what}.")
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise ConfigError(
            f"low-rank factorization needs numeric zero padding, not padding={module.padding!r} "
            f"with padding_mode={module.padding_mode!r}."
        )


def full_rank(module: nn.Linear | nn.Conv2d, scheme: str = "pair") -> int:
    """The rank at which the factorization reproduces ``module`` exactly."""
    _check(module, scheme)
    out_channels, in_channels = module.weight.shape[:2]
    kernel = (1, 1) if isinstance(module, nn.Linear) else module.kernel_size
    return full_rank_of(in_channels, out_channels, kernel, scheme)


def full_rank_of(in_channels: int, out_channels: int, kernel_size: tuple[int, int], scheme: str = "pair") -> int:
    """Full rank of a layer's reshaped weight, from its geometry (a linear layer has kernel (1, 1))."""
    kh, kw = kernel_size
    if scheme == "separable":
        return min(in_channels * kh, out_channels * kw)
    return min(out_channels, in_channels * kh * kw)


def _split_weights(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with A @ B the best rank-``rank`` approximation of ``matrix``; singular values split evenly."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def factorized_shell(module: nn.Linear | nn.Conv2d, rank: int, scheme: str = "pair") -> LowRank:
    """The two-layer structure of a rank-``rank`` factorization of ``module``, with fresh weights."""
    maximum = full_rank(module, scheme)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= maximum:
        raise ConfigError(f"rank {rank!r} is not allowed for this layer; allowed: a whole number in [1, {maximum}].")
    out_channels, in_channels = module.weight.shape[:2]
    bias = module.bias is not None
    options = {"device": module.weight.device, "dtype": module.weight.dtype}
    if isinstance(module, nn.Linear):
        return LowRank(nn.Linear(in_channels, rank, bias=False, **options), nn.Linear(rank, out_channels, bias=bias, **options), scheme)
    if scheme == "pair":
        first = nn.Conv2d(in_channels, rank, module.kernel_size, module.stride, module.padding, module.dilation,
                          bias=False, **options)
        return LowRank(first, nn.Conv2d(rank, out_channels, 1, bias=bias, **options), scheme)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    first = nn.Conv2d(in_channels, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False, **options)
    second = nn.Conv2d(rank, out_channels, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias, **options)
    return LowRank(first, second, scheme)


@torch.no_grad()
def factorize(module: nn.Linear | nn.Conv2d, rank: int, scheme: str = "pair") -> LowRank:
    """``module`` as two layers whose product is its best rank-``rank`` approximation."""
    pair = factorized_shell(module, rank, scheme)
    weight = module.weight
    out_channels, in_channels = weight.shape[:2]
    if isinstance(module, nn.Linear) or scheme == "pair":
        left, right = _split_weights(weight.reshape(out_channels, -1), rank)  # (out, r), (r, in k k)
        pair.first.weight.copy_(right.reshape(pair.first.weight.shape))
        pair.second.weight.copy_(left.reshape(pair.second.weight.shape))
    else:
        kh, kw = module.kernel_size
        matrix = weight.permute(1, 2, 0, 3).reshape(in_channels * kh, out_channels * kw)  # M[(c, i), (n, j)]
        left, right = _split_weights(matrix, rank)  # (in kh, r), (r, out kw)
        pair.first.weight.copy_(left.T.reshape(rank, in_channels, kh, 1))
        pair.second.weight.copy_(right.reshape(rank, out_channels, kw).permute(1, 0, 2).reshape(out_channels, rank, 1, kw))
    if module.bias is not None:
        pair.second.bias.copy_(module.bias)
    return pair


def lowrank_macs(kind: str, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 input_hw: tuple[int, int] | None, output_hw: tuple[int, int] | None, stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], rank: int, scheme: str, rows: int = 1) -> int:
    """MACs per example of a rank-``rank`` factorization (``rows``: tokens a linear layer is applied to)."""
    if kind == "linear":
        return rows * rank * (in_channels + out_channels)
    (kh, kw), (oh, ow) = kernel_size, output_hw
    if scheme == "pair":
        return oh * ow * rank * (in_channels * kh * kw + out_channels)
    first_width = input_hw[1]  # the k x 1 conv runs on every input column
    return oh * first_width * rank * in_channels * kh + oh * ow * out_channels * rank * kw
