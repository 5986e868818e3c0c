"""torchvision's shifted window attention (own copies, same class names) swapped for one that calls its layers, whose
heads are pruned whole: the reference for a removed head is the original with that head's input to ``proj`` zeroed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from pattern_models import ShiftedWindowAttention, ShiftedWindowAttentionV2, TinySwin, example_input

import autocomp
from autocomp.compress.criteria import get_criterion
from autocomp.cost import Cost
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


@pytest.mark.parametrize("version", [ShiftedWindowAttention, ShiftedWindowAttentionV2])
def test_keep_heads_keeps_the_per_head_parameters_of_those_heads_in_that_order(version):
    swapped = standard_form(torch.nn.Sequential(version(20, [4, 4], [2, 2], num_heads=4)))[0]
    before = {name: p.detach().clone() for name, p in swapped.named_parameters()}
    swapped.keep_heads([3, 1])
    after = dict(swapped.named_parameters())
    if version is ShiftedWindowAttention:
        per_head = {"relative_position_bias_table": 1}
    else:
        per_head = {"logit_scale": 0, "cpb_mlp.2.weight": 0}
        assert swapped.cpb_mlp[2].out_features == 2
    for name, parameter in before.items():
        dim = per_head.get(name)
        expected = parameter if dim is None else parameter.index_select(dim, torch.tensor([3, 1]))
        torch.testing.assert_close(after[name], expected, rtol=0, atol=0)
        assert after[name].requires_grad


def test_swin_prunes_its_residual_streams_mlps_and_heads():
    model = TinySwin().eval()
    graph = ModelGraph(copy.deepcopy(model), example_input("swin"))
    groups = {layer.name: layer.group for layer in graph.prunable}
    for block in ("features.1.0", "features.1.1", "features.3.0"):
        assert {f"{block}.attn.qkv", f"{block}.attn.proj", f"{block}.mlp.0", f"{block}.mlp.2"} <= set(groups)
        qkv = graph.groups[groups[f"{block}.attn.qkv"]]
        assert (qkv.blocks, qkv.heads) == (3, 4) and qkv.consumers == (f"{block}.attn.proj",)
    assert {"features.0.0", "features.2.reduction"} <= set(groups)
    assert graph.whole == {}


def swin_with_distinct_heads() -> torch.nn.Module:
    """TinySwin whose V2 block scales each head differently (torchvision starts them all at log 10)."""
    torch.manual_seed(0)
    model = TinySwin().eval()
    with torch.no_grad():
        model.features[1][1].attn.logit_scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(-1, 1, 1))
    return model


ATTENTIONS = ("features.1.0.attn", "features.1.1.attn", "features.3.0.attn")  # V1, V2 (shifted), V1 (padded)


def pruned_heads(model: torch.nn.Module, x: torch.Tensor, policy: autocomp.Policy) -> dict[str, list[int]]:
    """The heads each attention of ``model`` loses under ``policy``, as compress chooses them."""
    graph = ModelGraph(copy.deepcopy(model), x)
    kept = graph.prune(graph.kept_channels(policy), graph.channel_scores(get_criterion("l1")))
    heads = {}
    for attention in ATTENTIONS:
        size = model.get_submodule(attention).qkv.out_features // (3 * 4)
        heads[attention] = sorted(set(range(4)) - {int(c) // size % 4 for c in kept[f"{attention}.qkv"]})
    return heads


def test_swin_loses_whole_heads_and_equals_the_original_with_their_inputs_to_proj_zeroed(tmp_path):
    model, x = swin_with_distinct_heads(), example_input("swin", batch=2)
    graph = ModelGraph(copy.deepcopy(model), x[:1])
    policy = autocomp.Policy(
        {name: autocomp.LayerDecision(0.5) for group in graph.groups if group.head_size > 1 for name in group.layers}
    )
    small = autocomp.compress(model, policy, x[:1]).eval()
    lost = pruned_heads(model, x[:1], policy)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for attention, heads in lost.items():
            proj = reference.get_submodule(attention).proj
            size = proj.in_features // 4
            for head in heads:
                proj.weight[:, head * size : (head + 1) * size] = 0
    for attention, heads in lost.items():
        assert len(heads) == 2 and small.get_submodule(attention).num_heads == 2
    v1, v2 = small.features[1][0].attn, small.features[1][1].attn
    kept = [h for h in range(4) if h not in lost["features.1.1.attn"]]
    assert v1.relative_position_bias_table.shape == (49, 2) and v2.cpb_mlp[2].out_features == 2
    torch.testing.assert_close(v2.logit_scale.flatten(), torch.tensor(kept, dtype=torch.float32) + 1)  # cut once
    with torch.no_grad():
        torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-5)
    predicted = Cost(
        macs=graph.predict_macs(policy),
        params=graph.predict_params(policy),
        size_bits=graph.predict_size_bits(policy),
        bops=graph.predict_bops(policy),
    )
    assert predicted == autocomp.measure(small, x[:1])
    autocomp.save(small, tmp_path / "small.pt", x[:1])
    with torch.no_grad():
        torch.testing.assert_close(autocomp.load(tmp_path / "small.pt")(x), small(x), rtol=0, atol=1e-6)


SWIN_SOURCE = """
import sys
sys.path.insert(0, %r)
from pattern_models import TinySwin


def make_swin(num_classes, in_channels):
    return TinySwin(num_classes)
"""


def test_a_trusted_factory_rebuilds_a_swin_whose_heads_were_pruned(user_module, tmp_path):
    """The recipe replays the pruning on the factory's model, keep_heads included, before loading the weights."""
    from autocomp.models.user import build_user_model

    user_module("userswin", SWIN_SOURCE % str(Path(__file__).parent))
    torch.manual_seed(0)
    model = build_user_model("userswin:make_swin", 10, 3).eval()
    x = example_input("swin", batch=2)
    graph = ModelGraph(copy.deepcopy(model), x[:1])
    policy = autocomp.Policy({name: autocomp.LayerDecision(0.5) for group in graph.groups for name in group.layers})
    small = autocomp.compress(model, policy, x[:1]).eval()
    autocomp.save(small, tmp_path / "swin.pt", x[:1])
    again = autocomp.load(tmp_path / "swin.pt", trust_factory="userswin:make_swin")
    assert again.features[1][1].attn.logit_scale.shape == (2, 1, 1) and again.features[3][0].attn.num_heads == 2
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x), rtol=0, atol=1e-6)
