import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import autocomp
from autocomp.graph import ModelGraph

ZOO_CASES = [("resnet20", {}), ("resnet56", {}), ("mobilenet_v2", {"width_mult": 0.5}), ("vgg_small", {})]


def resnet_macs_by_hand(blocks_per_stage: int, in_channels: int, size: int, num_classes: int) -> int:
    """CIFAR ResNet with 1x1 projection shortcuts, counted layer by layer from the paper's table."""
    macs = size * size * 16 * in_channels * 9  # stem
    macs += 2 * blocks_per_stage * size * size * 16 * 16 * 9  # stage 1
    width, side = 16, size
    for out in (32, 64):
        side = (side + 1) // 2
        macs += side * side * out * width * 9  # first conv, stride 2
        macs += side * side * out * width  # 1x1 projection shortcut
        macs += (2 * blocks_per_stage - 1) * side * side * out * out * 9
        width = out
    return macs + 64 * num_classes


@pytest.mark.parametrize("name, blocks", [("resnet20", 3), ("resnet56", 9)])
def test_resnet_macs_match_a_hand_count(name, blocks):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1)
    assert autocomp.measure(model, torch.zeros(1, 1, 28, 28)).macs == resnet_macs_by_hand(blocks, 1, 28, 10)


def test_resnet20_macs_are_31_million_on_28x28():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    assert autocomp.measure(model, torch.zeros(1, 1, 28, 28)).macs == 31_021_952


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2 // x.shape[0]


@pytest.mark.parametrize("name, kwargs", ZOO_CASES)
def test_thop_count_agrees_with_torch_flop_counter(name, kwargs):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1, **kwargs)
    x = torch.randn(2, 1, 28, 28)
    assert autocomp.measure(model, x).macs == flop_counter_macs(model, x)


def test_measuring_leaves_the_model_untouched():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    before = set(dict(model.named_buffers()))
    autocomp.measure(model, torch.zeros(1, 1, 28, 28))
    assert set(dict(model.named_buffers())) == before


def test_params_and_size_of_a_linear_layer():
    cost = autocomp.measure(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), torch.zeros(1, 3, 2, 2))
    assert (cost.macs, cost.params, cost.size_bytes, cost.flops, cost.bops) == (60, 65, 260, 120, 60 * 32 * 32)


@pytest.mark.parametrize("name, kwargs", ZOO_CASES)
def test_predicted_macs_equal_the_measured_macs_of_the_compressed_model(name, kwargs):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1, **kwargs)
    x = torch.zeros(1, 1, 28, 28)
    graph = ModelGraph(model, x)
    generator = torch.Generator().manual_seed(0)
    keeps = torch.empty(len(graph.groups)).uniform_(0.2, 1.0, generator=generator).tolist()
    policy = autocomp.Policy({name: autocomp.LayerDecision(k) for g, k in zip(graph.groups, keeps) for name in g.layers})
    small = autocomp.compress(model, policy, x)
    assert graph.predict_macs(policy) == autocomp.measure(small, x).macs


def test_a_pruned_model_is_measurably_faster():
    torch.manual_seed(0)
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    x = torch.zeros(1, 1, 28, 28)
    small = autocomp.compress(model, autocomp.Policy.uniform(autocomp.prunable_layers(model, x), 0.5), x)
    times = autocomp.cost.compare_latency_ms({"full": model, "small": small}, x, batch_size=32, repeats=7)
    assert times["small"] < 0.8 * times["full"]  # ~27% of the MACs; generous for a shared, noisy machine
