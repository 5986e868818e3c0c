"""SVD low-rank factorization: exact at full rank, optimal below it, MACs by formula."""

import pytest
import torch
from torch import nn

from autocomp import ConfigError
from autocomp.compress.lowrank import factorize, factorized_shell, full_rank, lowrank_macs
from autocomp.cost import count_macs, count_params

CASES = [
    ("linear", lambda: nn.Linear(20, 12), (4, 20)),
    ("linear on tokens", lambda: nn.Linear(12, 20, bias=False), (2, 5, 12)),
    ("conv stride 2", lambda: nn.Conv2d(6, 10, 3, 2, 1), (2, 6, 9, 11)),
    ("conv rectangular", lambda: nn.Conv2d(6, 4, (3, 5), 1, (1, 2), bias=False), (2, 6, 8, 8)),
    ("conv dilated", lambda: nn.Conv2d(4, 8, 3, 1, 2, dilation=2), (1, 4, 10, 10)),
]


def schemes(layer: nn.Module) -> list[str]:
    return ["pair"] if isinstance(layer, nn.Linear) else ["pair", "separable"]


def expected_macs(layer: nn.Module, x: torch.Tensor, rank: int, scheme: str) -> int:
    if isinstance(layer, nn.Linear):
        return lowrank_macs("linear", layer.in_features, layer.out_features, (1, 1), None, None, (1, 1), (0, 0), (1, 1),
                            rank, scheme, rows=x[0].numel() // layer.in_features)
    out = layer(x)
    return lowrank_macs("conv", layer.in_channels, layer.out_channels, layer.kernel_size, tuple(x.shape[2:]),
                        tuple(out.shape[2:]), layer.stride, layer.padding, layer.dilation, rank, scheme)


@pytest.mark.parametrize("make, shape", [(make, shape) for _, make, shape in CASES], ids=[c[0] for c in CASES])
def test_full_rank_reproduces_the_layer(make, shape):
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    for scheme in schemes(layer):
        pair = factorize(layer, full_rank(layer, scheme), scheme)
        assert (pair(x) - layer(x)).abs().max() < 1e-4


@pytest.mark.parametrize("make, shape", [(make, shape) for _, make, shape in CASES], ids=[c[0] for c in CASES])
def test_macs_and_params_follow_the_formula(make, shape):
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    for scheme in schemes(layer):
        for rank in (1, full_rank(layer, scheme) // 2 or 1):
            pair = factorize(layer, rank, scheme)
            assert count_macs(pair, x[:1]) == expected_macs(layer, x[:1], rank, scheme)
            out_channels, in_channels = layer.weight.shape[:2]
            kernel = (1, 1) if isinstance(layer, nn.Linear) else layer.kernel_size
            first = in_channels * (kernel[0] if scheme == "separable" else kernel[0] * kernel[1])
            second = out_channels * (kernel[1] if scheme == "separable" else 1)
            bias = 0 if layer.bias is None else out_channels
            assert count_params(pair) == rank * (first + second) + bias


@pytest.mark.parametrize("scheme", ["pair", "separable"])
def test_truncation_is_the_best_approximation(scheme):
    torch.manual_seed(0)
    layer = nn.Conv2d(5, 7, 3, padding=1)
    weight = layer.weight.detach().double()
    matrix = weight.reshape(7, -1) if scheme == "pair" else weight.permute(1, 2, 0, 3).reshape(5 * 3, 7 * 3)
    singular = torch.linalg.svdvals(matrix)
    x = torch.randn(4, 5, 8, 8)
    errors = []
    for rank in range(1, full_rank(layer, scheme) + 1):
        pair = factorize(layer, rank, scheme)
        if scheme == "pair":
            product = (pair.second.weight.flatten(1) @ pair.first.weight.flatten(1)).double()
        else:
            first = pair.first.weight.double()[:, :, :, 0].reshape(rank, -1)            # (r, in kh)
            second = pair.second.weight.double()[:, :, 0, :].permute(1, 0, 2).reshape(rank, -1)  # (r, out kw)
            product = first.T @ second
        residual = torch.linalg.matrix_norm(matrix - product.detach()).item()
        assert residual == pytest.approx(singular[rank:].norm().item(), abs=1e-5)  # Eckart-Young
        errors.append((pair(x) - layer(x)).pow(2).mean().item())
    assert all(later <= earlier + 1e-9 for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-10


def test_shell_takes_the_factorized_weights():
    torch.manual_seed(0)
    layer, x = nn.Conv2d(4, 6, 3, padding=1), torch.randn(2, 4, 7, 7)
    pair = factorize(layer, 3, "separable")
    shell = factorized_shell(layer, 3, "separable")
    shell.load_state_dict(pair.state_dict(), strict=True)
    assert torch.equal(shell(x), pair(x))
    assert (shell.rank, shell.in_channels, shell.out_channels, shell.scheme) == (3, 4, 6, "separable")


@pytest.mark.parametrize(
    "layer, rank, scheme, message",
    [(nn.Conv2d(4, 4, 3, groups=4), 1, "pair", "groups=4"),
     (nn.Conv1d(4, 4, 3), 1, "pair", "not Conv1d"),
     (nn.Conv2d(4, 4, 3, padding="same"), 1, "separable", "padding='same'"),
     (nn.Linear(8, 4), 0, "pair", r"rank 0 .*\[1, 4\]"),
     (nn.Linear(8, 4), 5, "pair", r"rank 5 .*\[1, 4\]"),
     (nn.Linear(8, 4), 2, "tucker", "scheme 'tucker'")],
)
def test_unsupported_requests_are_refused_with_the_value(layer, rank, scheme, message):
    with pytest.raises(ConfigError, match=message):
        factorize(layer, rank, scheme)
