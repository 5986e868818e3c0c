"""Low-rank factorization: a linear layer or convolution replaced by two thinner ones, from a truncated SVD.

* Linear(in, out) -> Linear(in, r, no bias) -> Linear(r, out, the original bias).
* Conv2d, scheme "pair": a kh x kw conv to r channels (same stride, padding, dilation and
  padding mode), then a 1 x 1 conv; the weight reshaped to out x (in kh kw) and factorized.
* Conv2d, scheme "separable" (Jaderberg et al. 2014 scheme 2, Tai et al. 2016): a kh x 1 conv
  to r channels (the vertical stride, padding, dilation), then a 1 x kw conv (the horizontal
  ones); the weight reshaped to M[(c, i), (n, j)] = W[n, c, i, j], (in kh) x (out kw).

At full rank both reproduce the layer exactly; below it, the product of the two layers is the
best approximation of that reshaped weight in the Frobenius norm (Eckart-Young). The SVD runs
in float64; the new layers take the original weight's dtype and device.
"""

from __future__ import annotations

import numbers
from typing import Any, cast

import torch
from torch import nn

from autocomp.errors import ConfigError
from autocomp.geometry import as_pair, full_rank_of, rank_of
from autocomp.policy import RANK_SCHEMES


class LowRank(nn.Sequential):
    """Two layers standing for one, run in order: ``first`` (no bias, ``rank`` outputs), then ``second``.

    ``second`` carries the original bias. Being an ``nn.Sequential`` of plain torch layers, its
    state dict (``first.weight``, ``second.weight``, ``second.bias``) loads into a `factorized_shell`.
    """

    def __init__(self, first: nn.Linear | nn.Conv2d, second: nn.Linear | nn.Conv2d, scheme: str) -> None:
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
    """Refuse schemes, layer types and paddings the factorization cannot reproduce exactly."""
    if scheme not in RANK_SCHEMES:
        raise ConfigError(f"rank scheme {scheme!r} is not known; allowed: {', '.join(RANK_SCHEMES)}.")
    if isinstance(module, nn.Linear):
        return
    if not isinstance(module, nn.Conv2d) or module.groups != 1:
        what = type(module).__name__ + (f" with groups={module.groups}" if isinstance(module, nn.Conv2d) else "")
        raise ConfigError(f"low-rank factorization applies to nn.Linear and nn.Conv2d with groups=1, not {what}.")
    if scheme == "separable" and module.padding_mode != "zeros":
        raise ConfigError(
            f"the separable low-rank scheme needs padding_mode='zeros', not {module.padding_mode!r}; "
            "use the 'pair' scheme for this layer."
        )


def _geometry(module: nn.Linear | nn.Conv2d, scheme: str) -> tuple[int, int, tuple[int, int]]:
    """In and out channels and kernel (1 x 1 for a linear layer) of a layer the scheme applies to."""
    _check(module, scheme)
    out_channels, in_channels = module.weight.shape[:2]
    return in_channels, out_channels, (1, 1) if isinstance(module, nn.Linear) else as_pair(module.kernel_size)


def full_rank(module: nn.Linear | nn.Conv2d, scheme: str = "pair") -> int:
    """The rank at which the factorization reproduces ``module`` exactly."""
    return full_rank_of(*_geometry(module, scheme), scheme)


def rank_from_fraction(module: nn.Linear | nn.Conv2d, fraction: float, scheme: str = "pair") -> int:
    """The rank a ``fraction`` in (0, 1] of ``module``'s full rank means (`geometry.rank_of`)."""
    if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"rank fraction {fraction!r} is not allowed; allowed: a number in (0, 1].")
    return rank_of(fraction, *_geometry(module, scheme), scheme)


def _checked_rank(module: nn.Linear | nn.Conv2d, rank: int, scheme: str) -> int:
    maximum = full_rank(module, scheme)
    if not isinstance(rank, numbers.Integral) or isinstance(rank, bool) or not 1 <= rank <= maximum:
        raise ConfigError(f"rank {rank!r} is not allowed for this layer; allowed: a whole number in [1, {maximum}].")
    return int(rank)


def factorized_shell(module: nn.Linear | nn.Conv2d, rank: int, scheme: str = "pair") -> LowRank:
    """The two-layer structure of a rank-``rank`` factorization of ``module``, with fresh (untouched) weights."""
    rank = _checked_rank(module, rank, scheme)
    out_channels, in_channels = module.weight.shape[:2]
    bias = module.bias is not None
    options: dict[str, Any] = {"device": module.weight.device, "dtype": module.weight.dtype}
    if isinstance(module, nn.Linear):
        linear = nn.Linear(in_channels, rank, bias=False, **options)
        return LowRank(linear, nn.Linear(rank, out_channels, bias=bias, **options), scheme)
    kernel, stride, dilation = as_pair(module.kernel_size), as_pair(module.stride), as_pair(module.dilation)
    padding = module.padding if isinstance(module.padding, str) else as_pair(module.padding)
    if scheme == "pair":
        first = nn.Conv2d(
            in_channels,
            rank,
            kernel,
            stride,
            padding,
            dilation,
            bias=False,
            padding_mode=module.padding_mode,
            **options,
        )
        return LowRank(first, nn.Conv2d(rank, out_channels, 1, bias=bias, **options), scheme)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    first_padding: str | tuple[int, int]
    second_padding: str | tuple[int, int]
    if isinstance(padding, str):  # 'same' / 'valid' split per axis exactly as in the original
        first_padding = second_padding = padding
    else:
        first_padding, second_padding = (padding[0], 0), (0, padding[1])
    first = nn.Conv2d(in_channels, rank, (kh, 1), (sh, 1), first_padding, (dh, 1), bias=False, **options)
    second = nn.Conv2d(rank, out_channels, (1, kw), (1, sw), second_padding, (1, dw), bias=bias, **options)
    return LowRank(first, second, scheme)


def _split_weights(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with A @ B the best rank-``rank`` approximation of ``matrix``; singular values split evenly."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


@torch.no_grad()
def factorize(module: nn.Linear | nn.Conv2d, rank: int, scheme: str = "pair") -> LowRank:
    """``module`` as two layers whose product is its best rank-``rank`` approximation; ``module`` is untouched."""
    pair = factorized_shell(module, rank, scheme)
    rank = pair.rank
    weight = module.weight
    out_channels, in_channels = weight.shape[:2]
    if isinstance(module, nn.Linear) or scheme == "pair":
        left, right = _split_weights(weight.reshape(out_channels, -1), rank)  # (out, r), (r, in kh kw)
        pair.first.weight.copy_(right.reshape(pair.first.weight.shape))
        pair.second.weight.copy_(left.reshape(pair.second.weight.shape))
    else:
        kh, kw = module.kernel_size
        matrix = weight.permute(1, 2, 0, 3).reshape(in_channels * kh, out_channels * kw)  # M[(c, i), (n, j)]
        left, right = _split_weights(matrix, rank)  # (in kh, r), (r, out kw)
        pair.first.weight.copy_(left.T.reshape(rank, in_channels, kh, 1))
        pair.second.weight.copy_(
            right.reshape(rank, out_channels, kw).permute(1, 0, 2).reshape(out_channels, rank, 1, kw)
        )
    if module.bias is not None:  # the shell gave ``second`` a bias, as ``module`` has one
        cast(torch.Tensor, pair.second.bias).copy_(module.bias)
    return pair
