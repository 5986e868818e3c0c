"""torchvision's shifted window attention (own copies, same class names) swapped for one that calls its layers."""

from __future__ import annotations

import copy

import pytest
import torch
from pattern_models import ShiftedWindowAttention, ShiftedWindowAttentionV2, TinySwin, example_input

from autocomp.graph import ModelGraph
from autocomp.graph.standard import standard_form
from autocomp.graph.window_attention import WindowAttention, WindowAttentionV2

CASES = [  # window, shift, (height, width) of the input
    ([4, 4], [2, 2], (8, 8)),
    ([4, 4], [0, 0], (8, 8)),
    ([3, 3], [1, 1], (4, 4)),  # padded to 6x6
    ([4, 2], [2, 1], (8, 6)),
    ([4, 4], [2, 2], (4, 4)),  # one window: no shift
]


@pytest.mark.parametrize("version", [ShiftedWindowAttention, ShiftedWindowAttentionV2])
@pytest.mark.parametrize("window, shift, size", CASES)
def test_the_swap_computes_what_torchvision_computes_and_learns_the_same(version, window, shift, size):
    torch.manual_seed(0)
    original = version(20, window, shift, num_heads=4)
    with torch.no_grad():
        original.qkv.bias.normal_()  # V2's key bias too: torchvision leaves it out of every call
    holder = torch.nn.Sequential(copy.deepcopy(original))
    swapped = standard_form(holder)[0]
    assert type(swapped) is (WindowAttention if version is ShiftedWindowAttention else WindowAttentionV2)
    assert swapped.state_dict().keys() == original.state_dict().keys()
    x = torch.randn(2, *size, 20)
    expected, got = original(x), swapped(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    expected.square().sum().backward()
    got.square().sum().backward()
    for name, parameter in original.named_parameters():
        torch.testing.assert_close(swapped.get_parameter(name).grad, parameter.grad, rtol=1e-3, atol=1e-4)


def test_the_swap_keeps_the_parameters_and_the_mode():
    original = ShiftedWindowAttentionV2(20, [4, 4], [2, 2], num_heads=4).train()
    swapped = standard_form(torch.nn.Sequential(original))[0]
    assert swapped.training
    assert {id(p) for p in swapped.parameters()} == {id(p) for p in original.parameters()}


def test_swin_prunes_its_residual_streams_and_mlps_and_names_the_heads_it_keeps():
    model = TinySwin().eval()
    graph = ModelGraph(copy.deepcopy(model), example_input("swin"))
    prunable = {layer.name for layer in graph.prunable}
    for block in ("features.1.0", "features.1.1", "features.3.0"):
        assert {f"{block}.attn.proj", f"{block}.mlp.0", f"{block}.mlp.2"} <= prunable
        assert f"{block}.attn.qkv" in graph.whole
    assert {"features.0.0", "features.2.reduction"} <= prunable
