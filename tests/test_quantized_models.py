"""Quantized models: prune then quantize, size in bits and BOPs, save/load, and the real int8 path."""

import copy

import pytest
import torch
from torch import nn

import autocomp
from autocomp import ConfigError, LayerDecision, Policy
from autocomp.compress.int8 import Int8Conv2d, Int8Linear, int8_available, to_int8
from autocomp.compress.prune import model_layers
from autocomp.compress.quantize import (
    QUANTIZED_TYPES,
    QuantizedConv2d,
    calibrate,
    quantized_layer,
)
from autocomp.graph import ModelGraph

needs_int8 = pytest.mark.skipif(not int8_available(), reason="this PyTorch build has no oneDNN int8 kernels (x86 only)")


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3))


def test_size_in_bits_and_bops_equal_a_hand_computation():
    x = torch.randn(2, 1, 5, 5)
    policy = Policy(
        {
            "0": LayerDecision(weight_bits=4, act_bits=8),
            "4": LayerDecision(weight_bits=2, weight_scheme="ternary", act_bits=4),
        }
    )
    cost = autocomp.measure(autocomp.compress(tiny_net(), policy, x), x)
    conv = 36 * 4 + 4 * 32 + 32  # 4x1x3x3 weights at 4 bits, a 32-bit scale per channel, the input step
    norm = 8 * 32  # BatchNorm weight and bias stay float
    linear = 108 * 2 + 3 * 32 + 3 * 32 + 32  # ternary weights, scales, float bias, the input step
    assert cost.size_bits == conv + norm + linear == 1000
    assert cost.size_bytes == 125
    assert cost.macs == 36 * 9 + 108
    assert cost.bops == 36 * 9 * 4 * 8 + 108 * 2 * 4
    float_cost = autocomp.measure(tiny_net(), x)
    assert float_cost.size_bits == 32 * float_cost.params and float_cost.bops == 32 * 32 * float_cost.macs


def test_compress_prunes_then_quantizes_and_the_forward_runs_on_the_chosen_grid():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    x = torch.randn(2, 1, 28, 28)
    policy = Policy.uniform(model_layers(model, x), 0.5, weight_bits=3, act_bits=4)
    small = autocomp.compress(model, policy, x)
    first, block, fc = small.conv1, small.layer1[0].conv1, small.fc
    assert isinstance(block, QuantizedConv2d) and block.out_channels == 8  # 16 channels halved, then 3 bits
    assert (block.weight_bits, block.act_bits, first.weight_bits, fc.weight_bits) == (3, 4, 8, 8)
    assert first.inputs.signed and not block.inputs.signed  # the image can be negative, a ReLU's output cannot
    for module in small.modules():
        if isinstance(module, QUANTIZED_TYPES):
            values = [row.unique().numel() for row in module.quantized_weight().detach().flatten(1)]
            assert max(values) <= 2**module.weight_bits
    seen = {}
    block.inputs.register_forward_hook(lambda module, args, out: seen.update(out=out / module.step))
    small.eval()(x)
    assert torch.equal(seen["out"], seen["out"].round()) and seen["out"].min() >= 0 and seen["out"].max() <= 15


def test_predicted_bops_equal_the_measured_bops():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    x = torch.zeros(1, 1, 28, 28)
    layers = model_layers(model, x)
    policy = Policy(
        {
            **Policy.uniform(layers, 0.5, weight_bits=4, act_bits=6).layers,
            "layer2.0.conv1": LayerDecision(0.5, rank=0.5, weight_bits=2, act_bits=3),
            "layer3.1.conv2": LayerDecision(0.5, weight_bits=1),
        },
        width=0.75,
        resolution=0.75,
    )
    predicted = ModelGraph(copy.deepcopy(model), x).predict_bops(policy)
    assert predicted == autocomp.measure(autocomp.compress(model, policy, x), x).bops


def test_a_quantized_model_saves_and_loads_with_its_bits_and_steps(tmp_path):
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    x = torch.randn(4, 1, 28, 28)
    layers = model_layers(model, x)
    policy = Policy(
        {
            **Policy.uniform(layers, 0.75, weight_bits=4, act_bits=4).layers,
            "layer2.0.conv1": LayerDecision(0.75, rank=0.5, weight_bits=2, weight_scheme="ternary", act_bits=5),
        }
    )
    small = calibrate(autocomp.compress(model, policy, x), x)
    autocomp.save(small, tmp_path / "q.pt", x)
    again = autocomp.load(tmp_path / "q.pt")
    factor = again.layer2[0].conv1.first
    assert isinstance(factor, QuantizedConv2d) and (factor.weight_scheme, factor.act_bits) == ("ternary", 5)
    assert factor.inputs.initialized and factor.inputs.step == small.layer2[0].conv1.first.inputs.step
    assert torch.equal(again(x), small.eval()(x))
    assert autocomp.measure(again, x) == autocomp.measure(small, x)


def test_a_quantized_model_outside_the_zoo_saves_as_a_program(tmp_path):
    x = torch.randn(4, 1, 5, 5)
    small = calibrate(
        autocomp.compress(tiny_net(), Policy.uniform(["0", "4"], weight_bits=4, act_bits=4, edge_bits=None), x), x
    )
    autocomp.save(small, tmp_path / "q.pt", x)
    assert torch.equal(autocomp.load(tmp_path / "q.pt")(x), small.eval()(x))


def test_bits_on_a_layer_that_cannot_take_them_are_refused():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(ConfigError, match=r"'0'.*bits apply to linear layers and 2-d convolutions"):
        autocomp.compress(model, Policy({"0": LayerDecision(weight_bits=4)}), torch.randn(1, 2, 5))


def test_quantization_aware_training_moves_weights_and_steps():
    torch.manual_seed(0)
    layer = quantized_layer(nn.Linear(8, 2), 2, act_bits=3)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    calibrate(layer, x)
    weight, step = layer.weight.detach().clone(), layer.inputs.step.detach().clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(layer(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(layer.weight.detach(), weight) and layer.inputs.step.detach() != step


@needs_int8
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(16, 8, 3, padding=1),
        nn.Conv2d(16, 16, 3, stride=2, groups=16, bias=False),
        nn.Conv2d(16, 8, 1, bias=False),
        nn.Linear(16, 8),
    ],
    ids=["conv", "depthwise", "1x1", "linear"],
)
@pytest.mark.parametrize("bits, scheme", [(8, "uniform"), (4, "uniform"), (2, "ternary"), (1, "binary")])
def test_an_int8_layer_computes_what_the_simulated_layer_computes(layer, signed, bits, scheme):
    torch.manual_seed(0)
    x = torch.randn(8, 16) if isinstance(layer, nn.Linear) else torch.randn(8, 16, 7, 7)
    x = x if signed else x.relu()
    simulated = quantized_layer(layer, bits, scheme, act_bits=8, signed_inputs=signed).eval()
    with torch.no_grad():
        expected = simulated(x)
        converted = to_int8(nn.Sequential(simulated))
        out = converted(x)
    assert isinstance(converted[0], Int8Linear if isinstance(layer, nn.Linear) else Int8Conv2d)
    # both multiply the same integers; only float rounding of the scales differs
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max()


@needs_int8
def test_the_int8_model_matches_the_simulated_8_bit_model():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    policy = Policy.uniform(model_layers(model, x[:1]), weight_bits=8, act_bits=8)
    simulated = autocomp.compress(model, policy, x[:1], data=[(x, torch.zeros(64, dtype=torch.long))]).eval()
    converted = to_int8(simulated)
    assert sum(isinstance(m, (Int8Conv2d, Int8Linear)) for m in converted.modules()) == len(policy.layers)
    assert not any(isinstance(m, QUANTIZED_TYPES) for m in converted.modules())
    with torch.no_grad():
        expected, out = simulated(x), converted(x)
    # Stated tolerance: every layer matches to float rounding; end to end, a value that float rounding moves
    # across a rounding boundary of the next layer's input grid shifts by one step, so: top-1 identical on
    # at least 98% of inputs and the mean logit difference within 1% of the logits' spread.
    assert (out.argmax(1) == expected.argmax(1)).float().mean() >= 0.98
    assert (out - expected).abs().mean() <= 0.01 * expected.std()


@needs_int8
def test_int8_refuses_a_model_with_nothing_to_convert():
    x = torch.randn(2, 1, 5, 5)
    weights_only = autocomp.compress(tiny_net(), Policy({"0": LayerDecision(weight_bits=8)}), x)
    with pytest.raises(ConfigError, match="no layer of this model can run in int8"):
        to_int8(weights_only)
