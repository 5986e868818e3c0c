"""SVD low-rank factorization: exact at full rank, optimal below it, MACs and params by formula."""

import itertools
import math
import re

import pytest
import torch
from torch import nn

from autocomp import ConfigError
from autocomp.compress.lowrank import (
    LowRank,
    factorize,
    factorized_shell,
    full_rank,
    rank_from_fraction,
)
from autocomp.cost import count_macs, count_params
from autocomp.geometry import lowrank_macs
from autocomp.policy import RANK_SCHEMES

CASES = {
    "linear": (lambda: nn.Linear(20, 12), (4, 20)),
    "linear on tokens": (lambda: nn.Linear(12, 20, bias=False), (2, 5, 12)),
    "conv stride 2": (lambda: nn.Conv2d(6, 10, 3, 2, 1), (2, 6, 9, 11)),
    "conv rectangular": (lambda: nn.Conv2d(6, 4, (3, 5), 1, (1, 2), bias=False), (2, 6, 8, 8)),
    "conv mixed strides": (lambda: nn.Conv2d(3, 5, (2, 3), (2, 1), (0, 1)), (2, 3, 7, 6)),
    "conv dilated": (lambda: nn.Conv2d(4, 8, 3, 1, 2, dilation=2), (1, 4, 10, 10)),
    "conv same even kernel": (lambda: nn.Conv2d(3, 6, (4, 2), padding="same", dilation=(1, 2)), (2, 3, 7, 9)),
    "conv valid": (lambda: nn.Conv2d(5, 3, 3, padding="valid", bias=False), (2, 5, 6, 7)),
    "conv reflect": (lambda: nn.Conv2d(4, 6, 3, 2, 1, padding_mode="reflect"), (2, 4, 8, 8)),
}
IDS = list(CASES)
# 'same' padding with an even kernel pads asymmetrically; torch warns that it copies the input
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def schemes(layer: nn.Module) -> tuple[str, ...]:
    return ("pair",) if getattr(layer, "padding_mode", "zeros") != "zeros" else RANK_SCHEMES


def expected_macs(layer: nn.Module, x: torch.Tensor, rank: int, scheme: str, with_output: bool = True) -> int:
    if isinstance(layer, nn.Linear):
        return lowrank_macs(
            "linear",
            layer.in_features,
            layer.out_features,
            (1, 1),
            None,
            None,
            (1, 1),
            (0, 0),
            (1, 1),
            rank,
            scheme,
            rows=x[0].numel() // layer.in_features,
        )
    output_hw = tuple(layer(x).shape[2:]) if with_output else None
    return lowrank_macs(
        "conv",
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        tuple(x.shape[2:]),
        output_hw,
        layer.stride,
        layer.padding,
        layer.dilation,
        rank,
        scheme,
    )


@pytest.mark.parametrize("name", IDS)
def test_full_rank_reproduces_the_layer(name):
    make, shape = CASES[name]
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    for scheme in schemes(layer):
        pair = factorize(layer, full_rank(layer, scheme), scheme)
        assert isinstance(pair, LowRank) and pair.scheme == scheme
        assert (pair(x) - layer(x)).abs().max() < 1e-4, scheme


def test_dtype_is_kept_and_full_rank_is_exact_in_float64():
    torch.manual_seed(0)
    for layer, x in [
        (nn.Linear(7, 9).double(), torch.randn(3, 7, dtype=torch.float64)),
        (nn.Conv2d(3, 4, 3, padding=1).double(), torch.randn(2, 3, 6, 6, dtype=torch.float64)),
    ]:
        for scheme in RANK_SCHEMES:
            pair = factorize(layer, full_rank(layer, scheme), scheme)
            assert all(p.dtype == torch.float64 for p in pair.parameters())
            assert (pair(x) - layer(x)).abs().max() < 1e-10


@pytest.mark.parametrize("name", IDS)
def test_macs_and_params_follow_the_formula(name):
    make, shape = CASES[name]
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)[:1]
    out_channels, in_channels = layer.weight.shape[:2]
    kh, kw = (1, 1) if isinstance(layer, nn.Linear) else layer.kernel_size
    for scheme in schemes(layer):
        for rank in sorted({1, max(1, full_rank(layer, scheme) // 2), full_rank(layer, scheme)}):
            pair = factorize(layer, rank, scheme)
            macs = count_macs(pair, x)
            assert macs == expected_macs(layer, x, rank, scheme)
            assert macs == expected_macs(layer, x, rank, scheme, with_output=False)  # output size derived
            first, second = (
                (in_channels * kh, out_channels * kw)
                if scheme == "separable"
                else (in_channels * kh * kw, out_channels)
            )
            bias = 0 if layer.bias is None else out_channels
            assert count_params(pair) == rank * (first + second) + bias


def _reconstruction(pair: LowRank, scheme: str) -> torch.Tensor:
    """The reshaped weight matrix that ``pair`` stands for (as in the module docstring)."""
    first, second = pair.first.weight.detach().double(), pair.second.weight.detach().double()
    if scheme == "separable" and first.dim() == 4:
        rows = first[:, :, :, 0].reshape(pair.rank, -1)  # (r, in kh)
        columns = second[:, :, 0, :].permute(1, 0, 2).reshape(pair.rank, -1)  # (r, out kw)
        return rows.T @ columns
    return second.flatten(1) @ first.flatten(1)


@pytest.mark.parametrize("kind, scheme", [("linear", "pair"), ("conv", "pair"), ("conv", "separable")])
def test_truncation_is_the_best_approximation(kind, scheme):
    torch.manual_seed(0)
    if kind == "linear":
        layer, x = nn.Linear(9, 6), torch.randn(16, 9)
        matrix = layer.weight.detach().double()
    else:
        layer, x = nn.Conv2d(4, 5, 3, padding=1), torch.randn(4, 4, 6, 6)
        weight = layer.weight.detach().double()
        matrix = weight.reshape(5, -1) if scheme == "pair" else weight.permute(1, 2, 0, 3).reshape(4 * 3, 5 * 3)
    singular = torch.linalg.svdvals(matrix)
    errors = []
    for rank in range(1, full_rank(layer, scheme) + 1):
        pair = factorize(layer, rank, scheme)
        residual = torch.linalg.matrix_norm(matrix - _reconstruction(pair, scheme)).item()
        assert residual == pytest.approx(singular[rank:].norm().item(), abs=1e-5)  # Eckart-Young
        with torch.no_grad():
            errors.append((pair(x) - layer(x)).pow(2).mean().item())
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < 1e-10


@pytest.mark.parametrize("name", ["linear", "conv stride 2", "conv same even kernel", "conv reflect"])
def test_shell_takes_the_factorized_weights(name):
    make, shape = CASES[name]
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    for scheme in schemes(layer):
        rank = max(1, full_rank(layer, scheme) // 2)
        pair = factorize(layer, rank, scheme)
        shell = factorized_shell(layer, rank, scheme)
        assert not torch.equal(shell(x), pair(x))
        shell.load_state_dict(pair.state_dict(), strict=True)
        assert torch.equal(shell(x), pair(x))
        assert (shell.rank, shell.in_channels, shell.out_channels, shell.scheme) == (
            rank,
            layer.weight.shape[1],
            layer.weight.shape[0],
            scheme,
        )


def test_rank_from_fraction_rounds_and_keeps_at_least_one():
    layer = nn.Conv2d(4, 6, 3)  # pair: min(6, 36) = 6; separable: min(12, 18) = 12
    assert [rank_from_fraction(layer, f) for f in (0.01, 0.5, 1.0)] == [1, 3, 6]
    assert [rank_from_fraction(layer, f, "separable") for f in (0.01, 0.25, 1.0)] == [1, 3, 12]
    assert rank_from_fraction(nn.Linear(8, 5), 0.6) == 3


@pytest.mark.parametrize("fraction", [0, 0.0, 1.5, -0.5, math.nan, True, "0.5"])
def test_bad_fractions_are_refused_with_the_value(fraction):
    with pytest.raises(ConfigError, match=rf"rank fraction {re.escape(repr(fraction))} .*\(0, 1\]"):
        rank_from_fraction(nn.Linear(8, 4), fraction)


@pytest.mark.parametrize(
    "layer, rank, scheme, message",
    [
        (nn.Conv2d(4, 4, 3, groups=4), 1, "pair", "groups=4"),
        (nn.Conv2d(4, 8, 3, groups=2), 1, "separable", "groups=2"),
        (nn.Conv1d(4, 4, 3), 1, "pair", "not Conv1d"),
        (nn.Conv3d(4, 4, 3), 1, "pair", "not Conv3d"),
        (
            nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"),
            1,
            "separable",
            "padding_mode='zeros', not 'circular'",
        ),
        (nn.Linear(8, 4), 0, "pair", r"rank 0 .*\[1, 4\]"),
        (nn.Linear(8, 4), 5, "pair", r"rank 5 .*\[1, 4\]"),
        (nn.Conv2d(2, 3, 3), 7, "separable", r"rank 7 .*\[1, 6\]"),
        (nn.Linear(8, 4), 2.0, "pair", r"rank 2.0 .*whole number"),
        (nn.Linear(8, 4), 2, "tucker", "scheme 'tucker'"),
    ],
)
def test_unsupported_requests_are_refused_with_the_value(layer, rank, scheme, message):
    with pytest.raises(ConfigError, match=message):
        factorize(layer, rank, scheme)
    with pytest.raises(ConfigError, match=message):
        factorized_shell(layer, rank, scheme)


def test_lowrank_macs_refuses_unknown_kind_and_scheme():
    with pytest.raises(ConfigError, match="kind 'conv3d'"):
        lowrank_macs("conv3d", 4, 4, (3, 3), (8, 8), None, (1, 1), (1, 1), (1, 1), 2, "pair")
    with pytest.raises(ConfigError, match="scheme 'cp'"):
        lowrank_macs("conv", 4, 4, (3, 3), (8, 8), None, (1, 1), (1, 1), (1, 1), 2, "cp")
