import copy
import math

import pytest
import torch
from torch import nn

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


def thop_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of conv and linear modules counted by thop (by module type: the count autocomp made before it counted at
    the dispatcher), every other module counting zero."""
    from thop import profile

    def layer(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        per_output = (
            module.in_features
            if isinstance(module, nn.Linear)
            else module.in_channels // module.groups * math.prod(module.kernel_size)
        )
        module.total_ops += torch.tensor([float(output.numel() * per_output)], dtype=torch.float64)

    probe = copy.deepcopy(model).eval()
    ops = {
        type(m): (layer if isinstance(m, (nn.Conv2d, nn.Linear)) else lambda *args: None)
        for m in probe.modules()
        if not list(m.children())
    }
    total, _ = profile(probe, inputs=(x,), custom_ops=ops, verbose=False)
    return int(total) // x.shape[0]


@pytest.mark.parametrize("name, kwargs", ZOO_CASES)
def test_count_agrees_with_thop_on_models_of_conv_and_linear_modules(name, kwargs):
    model = autocomp.zoo.create(name, num_classes=10, in_channels=1, **kwargs)
    x = torch.randn(2, 1, 28, 28)
    assert autocomp.measure(model, x).macs == thop_macs(model, x)


class FunctionalAttention(nn.Module):
    """Self-attention from bare weights and functional calls: no conv/linear module computes any of it."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Parameter(torch.randn(dim, 3 * dim) / dim**0.5)  # (in, out), as Hugging Face's Conv1D
        self.out = nn.Parameter(torch.randn(dim, dim) / dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (x @ self.qkv).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        scores = torch.einsum("bhnd,bhmd->bhnm", q, k).softmax(dim=-1)
        mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # the same product again, fused
        return (torch.matmul(scores, v) + mixed).transpose(1, 2).flatten(2) @ self.out


class MultiheadModel(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def attention_macs_by_hand(tokens: int, dim: int) -> int:
    """q, k, v and output projections, then the scores (n x n x d per head) and their product with v."""
    return 4 * tokens * dim * dim + 2 * tokens * tokens * dim


def test_multihead_attention_macs_match_a_hand_count():
    """nn.MultiheadAttention projects with a bare weight inside its forward (and runs one fused kernel in
    inference): every product is counted, in eval mode too."""
    model = MultiheadModel(32, 4).eval()
    x = torch.randn(2, 10, 32)
    assert autocomp.measure(model, x).macs == attention_macs_by_hand(10, 32)
    assert ModelGraph(model, x).predict_macs(autocomp.Policy()) == attention_macs_by_hand(10, 32)


def test_functional_products_are_counted():
    """matmul on bare weights, einsum, matmul and the fused scaled dot-product attention each count."""
    tokens, dim = 6, 16
    cost = autocomp.measure(FunctionalAttention(dim, heads=2), torch.randn(3, tokens, dim))
    assert cost.macs == attention_macs_by_hand(tokens, dim) + 2 * tokens * tokens * dim
    assert cost.bops == cost.macs * 32 * 32


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
    policy = autocomp.Policy(
        {name: autocomp.LayerDecision(k) for g, k in zip(graph.groups, keeps) for name in g.layers}
    )
    small = autocomp.compress(model, policy, x)
    assert graph.predict_macs(policy) == autocomp.measure(small, x).macs


def test_a_pruned_model_is_measurably_faster():
    torch.manual_seed(0)
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    x = torch.zeros(1, 1, 28, 28)
    small = autocomp.compress(model, autocomp.Policy.uniform(autocomp.prunable_layers(model, x), 0.5), x)
    times = autocomp.cost.compare_latency_ms({"full": model, "small": small}, x, batch_size=32, repeats=7)
    assert times["small"] < 0.8 * times["full"]  # ~27% of the MACs; generous for a shared, noisy machine
