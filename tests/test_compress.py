import copy

import pytest
import torch
from torch import nn

import autocomp
from autocomp.graph import ModelGraph

X = torch.randn(2, 1, 28, 28)


def uniform_macs_by_hand(model: nn.Module, keep: float) -> float:
    """Expected MACs at a uniform keep ratio: inner layers lose keep^2, the first layer, depthwise
    convolutions and the classifier only one factor of keep."""
    total = 0.0
    layers = ModelGraph(copy.deepcopy(model), X[:1]).layers
    for i, layer in enumerate(layers):
        factor = keep if i == 0 or layer.depthwise or i == len(layers) - 1 else keep * keep
        total += layer.macs * factor
    return total


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "mobilenet_v2", "vgg_small"])
def test_uniform_half_gives_a_smaller_working_model(name):
    torch.manual_seed(0)
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1).eval()
    layers = autocomp.prunable_layers(model, X[:1])
    small = autocomp.compress(model, autocomp.Policy.uniform(layers, keep=0.5), X[:1]).eval()

    assert small(X).shape == (2, 10)
    assert all(torch.isfinite(small(X)).flatten())
    assert sum(conv_widths(small)) < 0.6 * sum(conv_widths(model))
    expected = uniform_macs_by_hand(model, 0.5)
    measured = autocomp.measure(small, X[:1]).macs
    assert abs(measured - expected) / expected < 0.05


def test_compress_leaves_the_original_model_untouched():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    autocomp.compress(model, autocomp.Policy.uniform(autocomp.prunable_layers(model, X[:1]), 0.5), X[:1])
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_residual_channels_are_removed_together():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    graph = ModelGraph(copy.deepcopy(model), X[:1])
    stream = max(graph.groups, key=lambda g: len(g.layers))  # the stage-1 residual stream
    assert len(stream.layers) >= 4
    policy = autocomp.Policy({name: autocomp.LayerDecision(0.5) for name in stream.layers})
    small = autocomp.compress(model, policy, X[:1])
    modules = dict(small.named_modules())
    widths = {modules[name].out_channels for name in stream.layers}
    assert widths == {stream.channels // 2}
    assert small(X).shape == (2, 10)


def test_l1_keeps_the_channels_with_the_largest_weights():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 1, 8, 8))
    with torch.no_grad():
        for channel, scale in enumerate([0.1, 5.0, 0.2, 3.0]):
            model[0].weight[channel].fill_(scale)
    policy = autocomp.Policy({"0": autocomp.LayerDecision(0.5)})
    small = autocomp.compress(model, policy, torch.zeros(1, 1, 8, 8))
    kept = sorted(small[0].weight[:, 0, 0, 0].tolist())
    assert kept == pytest.approx([3.0, 5.0])


def test_coupled_layers_with_different_ratios_are_refused():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    graph = ModelGraph(copy.deepcopy(model), X[:1])
    a, b = max(graph.groups, key=lambda g: len(g.layers)).layers[:2]
    policy = autocomp.Policy({a: autocomp.LayerDecision(0.5), b: autocomp.LayerDecision(0.75)})
    with pytest.raises(autocomp.ConfigError, match="same keep ratio"):
        autocomp.compress(model, policy, X[:1])


def test_unknown_layer_names_are_refused():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    with pytest.raises(autocomp.ConfigError, match=r"'no.such.layer'"):
        autocomp.compress(model, autocomp.Policy({"no.such.layer": autocomp.LayerDecision(0.5)}), X[:1])


def test_no_layer_is_pruned_to_zero_channels():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    small = autocomp.compress(model, autocomp.Policy.uniform(autocomp.prunable_layers(model, X[:1]), 0.01), X[:1])
    assert min(conv_widths(small)) == 1
    assert small(X).shape == (2, 10)


def test_compress_works_under_no_grad():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    with torch.no_grad():
        small = autocomp.compress(model, autocomp.Policy.uniform(autocomp.prunable_layers(model, X[:1]), 0.5), X[:1])
    assert autocomp.measure(small, X[:1]).macs < autocomp.measure(model, X[:1]).macs
