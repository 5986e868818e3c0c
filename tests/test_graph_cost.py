"""Exact cost of any policy without building it: ModelGraph.predict_params / predict_size_bits (and predict_macs /
predict_bops) equal what `autocomp.measure` finds on the model `compress` returns.

Random policies (seeded) mix every operator: keep ratios per coupled group, the width multiplier,
channel rounding, the resolution multiplier, low-rank factorization (both schemes) and weight and
input bits under every weight scheme.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from pattern_models import PATTERN_MODELS, example_input
from torch import nn

import autocomp
from autocomp.compress import Compressor
from autocomp.cost import Cost, count_params, storage_bits
from autocomp.graph import ModelGraph
from autocomp.policy import (
    FIXED_BITS,
    MAX_BITS,
    MIN_BITS,
    WEIGHT_SCHEMES,
    LayerDecision,
    Policy,
)


class Norms(nn.Module):
    """Parameters outside conv/linear layers of every kind: GroupNorm, per-channel and shared PReLU, affine
    InstanceNorm, a free per-channel gain (an unwrapped parameter pruned with conv2) and a free scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(1, 16)  # one group: any channel count stays valid
        self.act1 = nn.PReLU(16)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1, bias=False)
        self.inorm = nn.InstanceNorm2d(24, affine=True)
        self.act2 = nn.PReLU()
        self.gain = nn.Parameter(torch.ones(1, 24, 1, 1))
        self.temperature = nn.Parameter(torch.tensor(2.0))
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.gn(self.conv1(x)))
        x = self.act2(self.inorm(self.conv2(x))) * self.gain
        return self.fc(x.mean(dim=(2, 3))) / self.temperature


ZOO = {"resnet20": {}, "resnet56": {}, "mobilenet_v2": {"width_mult": 0.5}, "vgg_small": {}}
NAMES = list(ZOO) + list(PATTERN_MODELS) + ["norms"]
POLICIES = {"resnet56": 5, "mobilenet_v2": 5, "vgg_small": 5}
"""Random policies per model (the largest models get fewer: each costs a compress and a measure)."""
DEFAULT_POLICIES = 10


@functools.cache
def case(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name in ZOO:
        return autocomp.zoo.create(name, num_classes=10, in_channels=1, **ZOO[name]).eval(), torch.randn(1, 1, 28, 28)
    if name == "norms":
        return Norms().eval(), torch.randn(1, 3, 16, 16)
    return PATTERN_MODELS[name]().eval(), example_input(name)


@functools.cache
def graph_of(name: str) -> ModelGraph:
    model, x = case(name)
    return ModelGraph(copy.deepcopy(model), x)


@functools.cache
def compressor_of(name: str) -> Compressor:
    return Compressor(*case(name))


@functools.cache
def resolutions(name: str) -> tuple[float, ...]:
    """The resolution multipliers the model can run at (a flatten or a position embedding fixes its size)."""
    try:
        graph_of(name).check(Policy(resolution=0.75))
    except autocomp.ConfigError:
        return (1.0,)
    return (1.0, 0.75)


def random_policy(name: str, seed: int) -> Policy:
    """Per group a keep ratio (often below 1), per layer maybe a rank and maybe bits, random multipliers."""
    graph, rng = graph_of(name), np.random.default_rng(seed)
    keeps = [1.0 if rng.random() < 0.2 else float(rng.uniform(0.05, 1.0)) for _ in graph.groups]
    layers = {}
    for layer in graph.layers:
        keep = 1.0 if layer.group is None else keeps[layer.group]
        options = {}
        if layer.factorizable and rng.random() < 0.3:
            options.update(rank=float(rng.uniform(0.05, 1.0)), rank_scheme=str(rng.choice(["pair", "separable"])))
        if layer.quantizable and rng.random() < 0.4:
            scheme = str(rng.choice(WEIGHT_SCHEMES))
            bits = FIXED_BITS.get(scheme) or int(rng.integers(MIN_BITS, MAX_BITS + 1))
            act_bits = None if rng.random() < 0.4 else int(rng.integers(MIN_BITS, MAX_BITS + 1))
            options.update(weight_bits=bits, weight_scheme=scheme, act_bits=act_bits)
        if keep < 1.0 or options:
            layers[layer.name] = LayerDecision(keep, **options)
    width = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1.0))
    return Policy(
        layers,
        width=width,
        resolution=float(rng.choice(resolutions(name))),
        channel_multiple=int(rng.choice([1, 1, 2, 4, 8])),
    )


def predicted(graph: ModelGraph, policy: Policy) -> Cost:
    return Cost(
        macs=graph.predict_macs(policy),
        params=graph.predict_params(policy),
        size_bits=graph.predict_size_bits(policy),
        bops=graph.predict_bops(policy),
    )


CASES = [(name, seed) for name in NAMES for seed in range(POLICIES.get(name, DEFAULT_POLICIES))]


@pytest.mark.parametrize("name, seed", CASES)
def test_predicted_cost_equals_the_measured_cost_of_the_compressed_model(name, seed):
    policy = random_policy(name, seed)
    small = compressor_of(name)(policy)
    assert predicted(graph_of(name), policy) == autocomp.measure(small, case(name)[1])


def test_random_policies_use_every_operator():
    """Premise of the test above: the policies do prune, factorize and quantize, under every weight scheme."""
    policies = [random_policy(name, seed) for name, seed in CASES]
    decisions = [d for p in policies for d in p.layers.values()]
    assert any(d.keep < 1.0 for d in decisions) and any(p.width < 1.0 for p in policies)
    assert {d.rank_scheme for d in decisions if d.rank is not None} == {"pair", "separable"}
    assert {d.weight_scheme for d in decisions if d.quantized} == set(WEIGHT_SCHEMES)
    assert any(d.act_bits for d in decisions) and any(d.quantized and not d.act_bits for d in decisions)
    assert {p.channel_multiple for p in policies} == {1, 2, 4, 8} and {p.resolution for p in policies} == {1.0, 0.75}


def test_parameters_outside_the_layers_follow_their_group_or_count_as_they_are():
    model, x = case("norms")
    policy = Policy({"conv1": LayerDecision(0.3), "conv2": LayerDecision(0.5)})
    small = autocomp.compress(model, policy, x)
    shapes = {name: tuple(p.shape) for name, p in small.named_parameters()}
    assert shapes["gn.weight"] == shapes["act1.weight"] == (5,) and shapes["inorm.weight"] == (12,)
    assert shapes["gain"] == (1, 12, 1, 1) and shapes["temperature"] == () and shapes["act2.weight"] == (1,)
    graph = graph_of("norms")
    assert (graph.predict_params(policy), graph.predict_size_bits(policy)) == (count_params(small), storage_bits(small))


def test_sizes_by_hand_for_a_quantized_linear_layer():
    model, x = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), torch.zeros(1, 3, 2, 2)
    graph = ModelGraph(model, x)
    uniform = Policy({"1": LayerDecision(weight_bits=4, act_bits=4)})
    assert graph.predict_params(uniform) == 60 + 5 + 1  # weight, bias, the input quantizer's step
    assert graph.predict_size_bits(uniform) == 60 * 4 + 5 * 32 + 5 * 32 + 32  # weights, scales, bias, step
    dorefa = Policy({"1": LayerDecision(weight_bits=3, weight_scheme="dorefa")})
    assert graph.predict_size_bits(dorefa) == 60 * 3 + 5 * 32  # no scales
    factorized = Policy({"1": LayerDecision(rank=0.4, weight_bits=1, act_bits=8)})  # rank 2: 12 x 2 and 2 x 5
    assert graph.predict_params(factorized) == 24 + 10 + 5 + 2
    assert graph.predict_size_bits(factorized) == 24 + 2 * 32 + 10 + 5 * 32 + 5 * 32 + 2 * 32


def test_resolution_does_not_change_the_parameters():
    graph = graph_of("resnet20")
    policy = random_policy("resnet20", 0)
    smaller = Policy(policy.layers, width=policy.width, resolution=0.5, channel_multiple=policy.channel_multiple)
    assert graph.predict_params(smaller) == graph.predict_params(policy)
    assert graph.predict_size_bits(smaller) == graph.predict_size_bits(policy)


def test_an_untouched_model_predicts_its_own_size():
    for name in ("mobilenet_v2", "vit_cls", "norms"):
        model, _ = case(name)
        assert graph_of(name).predict_params(Policy()) == count_params(model)
        assert graph_of(name).predict_size_bits(Policy()) == storage_bits(model) == 32 * count_params(model)


def test_float64_parameters_count_64_bits():
    model, x = copy.deepcopy(case("lenet")[0]).double(), case("lenet")[1].double()
    graph = ModelGraph(copy.deepcopy(model), x)
    policy = Policy(
        {
            "0": LayerDecision(0.5, weight_bits=4),
            "3": LayerDecision(0.75, rank=0.5, weight_bits=2, weight_scheme="ternary", act_bits=6),
        }
    )
    small = autocomp.compress(model, policy, x)
    assert (graph.predict_params(policy), graph.predict_size_bits(policy)) == (count_params(small), storage_bits(small))


def test_sizes_are_refused_after_pruning():
    model, x = case("resnet20")
    graph = ModelGraph(copy.deepcopy(model), x)
    graph.prune(graph.kept_channels(Policy()), [torch.ones(group.channels) for group in graph.groups])
    with pytest.raises(RuntimeError, match="unpruned"):
        graph.predict_params(Policy())


def test_the_dependency_graph_keeps_no_activation_of_its_trace():
    # Torch-Pruning keeps the autograd graph of one forward pass; what autograd saved for a backward pass that never
    # comes is kept as shapes (meta tensors), not as every activation of the pass at once
    from autocomp.graph.dependency import dependency_graph

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    graph = dependency_graph(model, torch.randn(2, 3, 12, 12))
    second = graph.module2node[model[2]].grad_fn
    saved = second._saved_input  # the first ReLU's output, as the convolution's backward would read it
    assert saved.device.type == "meta" and saved.shape == (2, 8, 10, 10)
