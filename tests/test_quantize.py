"""Quantizers: the number of distinct values, straight-through gradients, error falling with bits."""

import itertools

import pytest
import torch

from autocomp import ConfigError
from autocomp.compress.quantize import LSQ, PACT, quantize_weights, quantized_layer

W = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(0))


def distinct_per_channel(q: torch.Tensor) -> list[int]:
    return [row.unique().numel() for row in q.detach().flatten(1)]


@pytest.mark.parametrize("bits", range(2, 9))
def test_uniform_k_bits_gives_at_most_2_to_the_k_values_per_channel(bits):
    q = quantize_weights(W, "uniform", bits)
    assert max(distinct_per_channel(q)) <= 2**bits
    levels = 2 ** (bits - 1) - 1
    scale = W.abs().flatten(1).amax(dim=1) / levels
    integers = q.detach().flatten(1) / scale[:, None]
    assert torch.allclose(integers, integers.round(), atol=1e-4)  # integers times one scale per channel


@pytest.mark.parametrize("bits", range(2, 9))
def test_dorefa_k_bits_gives_at_most_2_to_the_k_values(bits):
    q = quantize_weights(W, "dorefa", bits)
    assert q.detach().unique().numel() <= 2**bits
    assert q.abs().max() <= 1.0 + 1e-6


def test_binary_weights_take_two_values_per_channel_with_the_mean_magnitude():
    q = quantize_weights(W, "binary").detach().flatten(1)
    assert distinct_per_channel(q) == [2] * 6
    assert torch.allclose(q.abs().amax(dim=1), W.abs().flatten(1).mean(dim=1))
    assert torch.equal(q.sign(), W.flatten(1).sign())


def test_ternary_weights_take_three_values_per_channel():
    q = quantize_weights(W, "ternary").detach().flatten(1)
    assert distinct_per_channel(q) == [3] * 6
    small = W.flatten(1).abs() <= 0.7 * W.flatten(1).abs().mean(dim=1, keepdim=True)
    assert (q[small] == 0).all() and (q[~small] != 0).all()


@pytest.mark.parametrize("scheme, bits", [("binary", None), ("ternary", None), ("uniform", 4), ("dorefa", 3)])
def test_straight_through_gradients_are_not_zero(scheme, bits):
    w = W.clone().requires_grad_(True)
    (quantize_weights(w, scheme, bits) * torch.randn_like(w)).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_quantization_error_shrinks_as_bits_grow():
    errors = [(quantize_weights(W, "uniform", bits) - W).pow(2).mean().item() for bits in range(2, 9)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert (quantize_weights(W, "binary") - W).pow(2).mean() > errors[2]  # one bit loses more than 4


def test_pact_clips_quantizes_and_learns_its_clipping_level():
    pact = PACT(bits=2, alpha=3.0)
    x = torch.tensor([-1.0, 0.4, 1.2, 2.9, 5.0], requires_grad=True)
    y = pact(x)
    assert y.detach().tolist() == pytest.approx([0.0, 0.0, 1.0, 3.0, 3.0])  # 4 levels: 0, 1, 2, 3
    y.sum().backward()
    assert pact.alpha.grad.item() > 0  # values above alpha pull it up
    assert x.grad[1:4].abs().sum() > 0 and x.grad[0] == 0 and x.grad[4] == 0


@pytest.mark.parametrize("bits", [1, 9, 4.0, True])
def test_bit_widths_outside_2_to_8_are_refused(bits):
    with pytest.raises(ConfigError, match="bit-width"):
        quantize_weights(W, "uniform", bits)


def test_unknown_weight_quantizer_is_refused():
    with pytest.raises(ConfigError, match=r"'fp4'.*uniform, dorefa, binary, ternary"):
        quantize_weights(W, "fp4", 4)


def test_lsq_keeps_inputs_on_its_grid_and_learns_its_step():
    torch.manual_seed(0)
    lsq = LSQ(bits=3, signed=True)
    x = torch.randn(64, 8, requires_grad=True)
    y = lsq(x)
    steps = y.detach() / lsq.step.detach()
    assert torch.allclose(steps, steps.round(), atol=1e-5)
    assert steps.min() >= -4 and steps.max() <= 3  # signed 3 bits: -4..3
    y.pow(2).sum().backward()
    assert lsq.step.grad is not None and lsq.step.grad != 0
    assert x.grad.abs().sum() > 0
    assert LSQ(bits=4, signed=False)(torch.randn(100)).min() == 0


@pytest.mark.parametrize(
    "layer, x",
    [(torch.nn.Conv2d(4, 6, 3, padding=1), torch.randn(2, 4, 5, 5)), (torch.nn.Linear(12, 5), torch.randn(3, 12))],
)
def test_a_quantized_layer_runs_on_the_quantized_weights(layer, x):
    for bits, scheme, values in [(1, "uniform", 2), (2, "ternary", 3), (4, "uniform", 16), (8, "dorefa", 256)]:
        quantized = quantized_layer(layer, bits, scheme, act_bits=8)
        weight = quantized.quantized_weight().detach()
        assert max(distinct_per_channel(weight)) <= values
        reference = torch.nn.functional.linear if isinstance(layer, torch.nn.Linear) else None
        expected_in = quantized.inputs(x).detach()
        out = quantized(x)
        if reference is not None:
            assert torch.allclose(out, reference(expected_in, weight, layer.bias), atol=1e-5)
        else:
            assert torch.allclose(out, layer._conv_forward(expected_in, weight, layer.bias), atol=1e-5)
    assert (quantized_layer(layer, 8)(x) - layer(x)).abs().max() < 0.05 * layer(x).abs().max()
    assert quantized.weight is layer.weight and quantized.bias is layer.bias  # shared: training updates both


def test_quantized_layer_refuses_bad_requests():
    with pytest.raises(ConfigError, match="ternary weights use 2 bits, not 4"):
        quantized_layer(torch.nn.Linear(4, 4), 4, "ternary")
    with pytest.raises(ConfigError, match="not BatchNorm2d"):
        quantized_layer(torch.nn.BatchNorm2d(4), 8)
    with pytest.raises(ConfigError, match="bit-width 9"):
        quantized_layer(torch.nn.Linear(4, 4), 9)


def test_binary_takes_one_bit():
    with pytest.raises(ConfigError, match="binary weights use 1 bit, not 4"):
        quantized_layer(torch.nn.Linear(4, 4), 4, "binary")
