"""Width and resolution multipliers, channel rounding, and low-rank decisions in a policy."""

import copy

import pytest
import torch
from torch import nn

import autocomp
from autocomp.compress import InputResize
from autocomp.graph import ModelGraph, rounded_channels

X = torch.randn(2, 1, 28, 28)


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize(
    "keep, channels, multiple, expected",
    [
        (0.5, 64, 8, 32),
        (0.3, 64, 8, 16),
        (0.55, 40, 8, 24),
        (0.02, 64, 8, 8),
        (0.1, 6, 8, 6),
        (1.0, 10, 8, 10),
        (0.99, 10, 8, 8),
        (0.01, 16, 1, 1),
        (0.5, 16, 1, 8),
        (0.45, 10, 1, 5),
    ],
)
def test_rounded_channels_by_hand(keep, channels, multiple, expected):
    assert rounded_channels(keep, channels, multiple) == expected


@pytest.mark.parametrize("name", ["resnet20", "vgg_small", "mobilenet_v2"])
def test_width_multiplier_scales_every_layer_first_included(name):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1).eval()
    small = autocomp.compress(model, autocomp.Policy(width=0.5, channel_multiple=8), X[:1])
    before, after = convs(model), convs(small)
    first = next(iter(before))
    assert after[first].out_channels == rounded_channels(0.5, before[first].out_channels, 8)
    for (
        layer_name,
        conv,
    ) in before.items():  # every conv output is halved, rounded to 8 (the classifier keeps its classes)
        assert after[layer_name].out_channels == rounded_channels(0.5, conv.out_channels, 8)
        assert after[layer_name].out_channels % 8 == 0 or after[layer_name].out_channels == conv.out_channels
    assert small(X).shape == (2, 10)


def test_width_multiplies_the_per_layer_keep():
    model = autocomp.zoo.create("vgg_small", num_classes=10, in_channels=1)
    first = autocomp.prunable_layers(model, X[:1])[0].name
    small = autocomp.compress(model, autocomp.Policy({first: autocomp.LayerDecision(0.5)}, width=0.5), X[:1])
    assert convs(small)[first].out_channels == rounded_channels(0.25, convs(model)[first].out_channels)


@pytest.mark.parametrize("resolution, side", [(0.75, 21), (0.5, 14)])
def test_resolution_multiplier_feeds_the_smaller_input(resolution, side):
    torch.manual_seed(0)
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    small = autocomp.compress(model, autocomp.Policy(resolution=resolution), X[:1]).eval()
    assert isinstance(small, InputResize) and small.size == (side, side)
    resized = nn.functional.interpolate(X, size=(side, side), mode="bilinear", antialias=True)
    assert torch.allclose(small(X), model(resized), atol=1e-6)
    assert autocomp.measure(small, X[:1]).macs == autocomp.measure(model, resized[:1]).macs
    assert (
        ModelGraph(copy.deepcopy(model), X[:1]).predict_macs(autocomp.Policy(resolution=resolution))
        == autocomp.measure(small, X[:1]).macs
    )


def test_resolution_needs_image_input():
    mlp = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    with pytest.raises(autocomp.ConfigError, match=r"\(N, C, H, W\)"):
        autocomp.compress(mlp, autocomp.Policy(resolution=0.5), torch.randn(1, 20))


def mixed_policy(model: nn.Module, **options) -> autocomp.Policy:
    """Alternating keep ratios per coupled group, low-rank on a plain conv, a separable conv and the classifier."""
    graph = ModelGraph(copy.deepcopy(model), X[:1])
    layers = {
        name: autocomp.LayerDecision(0.5 if group.index % 2 else 0.75)
        for group in graph.groups
        for name in group.layers
    }
    plain = [layer.name for layer in graph.layers if layer.factorizable and layer.kernel_size == (3, 3)]
    layers[plain[1]] = autocomp.LayerDecision(layers[plain[1]].keep, rank=0.5)
    layers[plain[2]] = autocomp.LayerDecision(layers[plain[2]].keep, rank=0.4, rank_scheme="separable")
    layers[graph.layers[-1].name] = autocomp.LayerDecision(1.0, rank=0.5)
    return autocomp.Policy(layers, **options)


@pytest.mark.parametrize("options", [{}, {"channel_multiple": 8}, {"width": 0.75, "resolution": 0.75}])
def test_predicted_macs_equal_measured_with_every_operator(options):
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    policy = mixed_policy(model, **options)
    small = autocomp.compress(model, policy, X[:1])
    predicted = ModelGraph(copy.deepcopy(model), X[:1]).predict_macs(policy)
    assert predicted == autocomp.measure(small, X[:1]).macs
    assert predicted < autocomp.measure(model, X[:1]).macs


def test_full_rank_policy_reproduces_the_model():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    graph = ModelGraph(copy.deepcopy(model), X[:1])
    policy = autocomp.Policy(
        {layer.name: autocomp.LayerDecision(rank=1.0) for layer in graph.layers if layer.factorizable}
    )
    small = autocomp.compress(model, policy, X[:1]).eval()
    assert torch.allclose(small(X), model(X), atol=1e-4)


def test_low_rank_on_a_depthwise_conv_is_refused():
    model = autocomp.zoo.create("mobilenet_v2", num_classes=10, in_channels=1, width_mult=0.5)
    depthwise = next(layer.name for layer in ModelGraph(copy.deepcopy(model), X[:1]).layers if layer.depthwise)
    with pytest.raises(autocomp.ConfigError, match="low-rank applies to"):
        autocomp.compress(model, autocomp.Policy({depthwise: autocomp.LayerDecision(rank=0.5)}), X[:1])


def test_pruning_the_classifier_outputs_is_refused():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    with pytest.raises(autocomp.ConfigError, match=r"'fc'.*cannot be pruned"):
        autocomp.compress(model, autocomp.Policy({"fc": autocomp.LayerDecision(0.5)}), X[:1])


@pytest.mark.parametrize("options", [{"channel_multiple": 8}, {"width": 0.75, "resolution": 0.75}])
def test_save_load_keeps_every_operator(tmp_path, options):
    torch.manual_seed(2)
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    small = autocomp.compress(model, mixed_policy(model, **options), X[:1]).eval()
    autocomp.save(small, tmp_path / "m.pt", X[:1])
    again = autocomp.load(tmp_path / "m.pt")
    assert torch.equal(again(X), small(X))
    assert autocomp.measure(again, X[:1]) == autocomp.measure(small, X[:1])
    again.train()  # a zoo model comes back trainable
    again(X).sum().backward()


def test_a_model_outside_the_zoo_saves_as_a_standalone_program(tmp_path):
    class Net(nn.Module):  # defined here: load() cannot import it
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.head = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    model = Net().eval()
    small = autocomp.compress(
        model, autocomp.Policy({"body.0": autocomp.LayerDecision(0.5)}, resolution=0.5), X[:1]
    ).eval()
    autocomp.save(small, tmp_path / "net.pt", X[:1])
    payload = torch.load(tmp_path / "net.pt", weights_only=True)
    assert "program" in payload and "state_dict" not in payload
    again = autocomp.load(tmp_path / "net.pt")
    batch = torch.randn(5, 1, 28, 28)  # another batch size than the example
    assert torch.allclose(again(batch), small(batch), atol=1e-5)


def test_a_model_that_cannot_run_at_the_resolution_is_refused_before_compressing():
    flat = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    with pytest.raises(autocomp.ConfigError, match=r"cannot run at resolution multiplier 0.5"):
        autocomp.compress(flat, autocomp.Policy(resolution=0.5), X[:1])
