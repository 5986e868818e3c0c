"""Attention heads: nn.MultiheadAttention unpacked into prunable layers, whole heads removed, their cost predicted.

The reference for a removed head is the original model with that head's input to the output
projection zeroed: a head that contributes nothing is what removing it means.
"""

from __future__ import annotations

import copy

import pytest
import torch
from pattern_models import BertSelfAttention
from torch import nn

import autocomp
from autocomp.compress.criteria import get_criterion
from autocomp.graph import ModelGraph
from autocomp.graph.attention import HeadAttention
from autocomp.graph.standard import standard_form

DIM, HEADS, TOKENS = 32, 4, 6


def attention_cases() -> list[tuple[str, nn.MultiheadAttention, dict]]:
    torch.manual_seed(0)
    causal = torch.triu(torch.ones(TOKENS, TOKENS, dtype=torch.bool), diagonal=1)
    padding = torch.zeros(2, TOKENS, dtype=torch.bool)
    padding[1, -2:] = True
    return [
        ("batch first", nn.MultiheadAttention(DIM, HEADS, batch_first=True), {"need_weights": False}),
        ("sequence first, weights", nn.MultiheadAttention(DIM, HEADS), {}),
        ("weights per head", nn.MultiheadAttention(DIM, HEADS, batch_first=True), {"average_attn_weights": False}),
        (
            "causal mask",
            nn.MultiheadAttention(DIM, HEADS, batch_first=True),
            {"attn_mask": causal, "need_weights": False},
        ),
        (
            "float mask, padding",
            nn.MultiheadAttention(DIM, HEADS, batch_first=True),
            {
                "attn_mask": torch.randn(TOKENS, TOKENS),
                "key_padding_mask": torch.zeros(padding.shape).masked_fill(padding, float("-inf")),
            },
        ),
        ("other key widths", nn.MultiheadAttention(DIM, HEADS, batch_first=True, kdim=12, vdim=20), {}),
        ("no bias", nn.MultiheadAttention(DIM, HEADS, batch_first=True, bias=False), {"need_weights": False}),
        ("one sequence", nn.MultiheadAttention(DIM, HEADS), {}),
    ]


@pytest.mark.parametrize("name, attention, kwargs", attention_cases(), ids=[c[0] for c in attention_cases()])
def test_head_attention_computes_what_multihead_attention_does(name, attention, kwargs):
    attention.eval()
    query = torch.randn(2, TOKENS, DIM)
    key = torch.randn(2, TOKENS, attention.kdim)
    value = torch.randn(2, TOKENS, attention.vdim)
    if not attention.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    if name == "one sequence":
        query, key, value = query[:, 0], key[:, 0], value[:, 0]
    unpacked = HeadAttention(attention).eval()
    with torch.no_grad():
        expected, got = attention(query, key, value, **kwargs), unpacked(query, key, value, **kwargs)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    if expected[1] is None:
        assert got[1] is None
    else:
        torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-6)


def test_an_unpacked_encoder_layer_computes_the_same_on_its_fast_path_too():
    """torch's encoder layer reads its attention's packed weights to choose a fused path; unpacked, it takes the
    plain one and computes the same (masks included)."""
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(DIM, HEADS, 64, batch_first=True), 2, enable_nested_tensor=False
    ).eval()
    padding = torch.zeros(2, TOKENS, dtype=torch.bool)
    padding[0, -1] = True
    x = torch.randn(2, TOKENS, DIM)
    unpacked = standard_form(copy.deepcopy(encoder))
    assert isinstance(unpacked.layers[0].self_attn, HeadAttention)
    with torch.no_grad():
        torch.testing.assert_close(
            unpacked(x, src_key_padding_mask=padding), encoder(x, src_key_padding_mask=padding), rtol=1e-5, atol=1e-5
        )


class Classifier(nn.Module):
    """Tokens -> one attention (an nn.MultiheadAttention, or any module from ``attention``) -> mean -> classes."""

    def __init__(self, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.embed = nn.Linear(8, DIM)
        self.attention = attention or nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.head = nn.Linear(DIM, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if isinstance(self.attention, (nn.MultiheadAttention, HeadAttention)):
            return self.head(self.attention(x, x, x, need_weights=False)[0].mean(dim=1))
        return self.head(self.attention(x).mean(dim=1))


def prune_heads(model: nn.Module, x: torch.Tensor, keep: float) -> tuple[nn.Module, ModelGraph, list[int]]:
    """The model with its attention heads (only) at ``keep``, the graph of the original and the heads kept."""
    graph = ModelGraph(copy.deepcopy(model), x)
    (index,) = [g.index for g in graph.groups if g.head_size > 1]
    group = graph.groups[index]
    policy = autocomp.Policy({name: autocomp.LayerDecision(keep) for name in group.layers})
    small = autocomp.compress(model, policy, x).eval()
    pruned = ModelGraph(copy.deepcopy(model), x)
    kept = pruned.prune(pruned.kept_channels(policy), pruned.channel_scores(get_criterion("l1")))[group.layers[0]]
    heads = sorted({int(c) // group.head_size % group.heads for c in kept})  # the same heads in each block
    return small, graph, heads


def test_multihead_attention_loses_whole_heads_and_equals_the_original_with_them_zeroed():
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.randn(2, TOKENS, 8)
    small, graph, heads = prune_heads(model, x, keep=0.5)
    assert small.attention.q_proj.out_features == small.attention.out_proj.in_features == DIM // 2 and len(heads) == 2
    reference = copy.deepcopy(model)
    head_dim = DIM // HEADS
    with torch.no_grad():
        for head in set(range(HEADS)) - set(heads):  # nn.MultiheadAttention applies out_proj.weight to each head's part
            reference.attention.out_proj.weight[:, head * head_dim : (head + 1) * head_dim] = 0
        torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-5)
    projections = TOKENS * (3 * DIM * DIM // 2 + DIM // 2 * DIM)  # q, k, v to half the heads, and back
    by_hand = 8 * DIM * TOKENS + projections + 2 * TOKENS * TOKENS * DIM // 2 + DIM * 3
    assert autocomp.measure(small, x).macs == by_hand
    assert (
        graph.predict_macs(autocomp.Policy({n: autocomp.LayerDecision(0.5) for n in graph.groups[1].layers})) == by_hand
    )


class FixedHeads(BertSelfAttention):
    """Splits into heads by a head count it keeps under a name of its own: autocomp cannot lower it."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.h = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], self.h, -1)
        q, k, v = (layer(x).view(shape).transpose(1, 2) for layer in (self.query, self.key, self.value))
        context = torch.matmul((q @ k.transpose(-1, -2) / self.attention_head_size**0.5).softmax(dim=-1), v)
        return context.transpose(1, 2).flatten(2)


class NamedHeads(FixedHeads):
    """The same with its head count in the attribute torch and timm use: pruned, the count lowered."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.h = self.num_attention_heads
        return super().forward(x)


class WithOutput(nn.Module):
    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention, self.dense = attention, nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.attention(x))


def test_heads_split_by_a_named_head_count_are_pruned_and_the_count_lowered():
    torch.manual_seed(0)
    model = Classifier(WithOutput(NamedHeads(DIM, HEADS))).eval()
    x = torch.randn(2, TOKENS, 8)
    small, _, heads = prune_heads(model, x, keep=0.25)
    assert small.attention.attention.num_attention_heads == len(heads) == 1
    reference = copy.deepcopy(model)
    head_dim = DIM // HEADS
    with torch.no_grad():
        for head in set(range(HEADS)) - set(heads):
            reference.attention.dense.weight[:, head * head_dim : (head + 1) * head_dim] = 0
        torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-5)


def test_heads_whose_count_the_code_fixes_are_kept_whole_and_named():
    model = Classifier(WithOutput(FixedHeads(DIM, HEADS))).eval()
    graph = ModelGraph(copy.deepcopy(model), torch.randn(2, TOKENS, 8))
    assert all(group.head_size == 1 for group in graph.groups)
    assert graph.whole_lines() == [
        f"layer 'attention.attention.{name}' is kept whole: its output channels are attention heads, and the model's "
        "code computes differently without one of them (it fixes their number)."
        for name in ("query", "key", "value")
    ]


class Conv1D(nn.Module):
    """Hugging Face's Conv1D (GPT-2's projections), copied: a linear layer whose weight is stored (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def test_conv1d_layers_are_counted_and_pruned_as_the_linear_layers_they_are():
    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(64, DIM), nn.GELU(), Conv1D(DIM, 64)).eval()
    x = torch.randn(2, TOKENS, DIM)
    assert autocomp.measure(model, x).macs == 2 * TOKENS * DIM * 64
    layers = autocomp.prunable_layers(model, x)
    assert [layer.name for layer in layers] == ["0"] and layers[0].kind == "linear"
    small = autocomp.compress(model, autocomp.Policy.uniform(layers, keep=0.25), x).eval()
    assert isinstance(small[0], nn.Linear) and small[0].out_features == small[2].in_features == 16
    assert autocomp.measure(small, x).macs == 2 * TOKENS * DIM * 16
    kept = {next(c for c in range(64) if torch.equal(model[0].weight[:, c], row)) for row in small[0].weight}
    reference = copy.deepcopy(model)
    with torch.no_grad():
        dropped = sorted(set(range(64)) - kept)
        reference[2].weight[dropped] = 0
        torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-5)


class GPT2Attention(nn.Module):
    """Hugging Face's GPT2Attention, copied: q, k, v packed in one Conv1D, split at ``split_size``, heads by view."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.split_size = heads, dim // heads, dim
        self.c_attn, self.c_proj = Conv1D(3 * dim, dim), Conv1D(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.split_size, dim=2)
        q, k, v = (t.view(*t.shape[:-1], -1, self.head_dim).transpose(1, 2) for t in (q, k, v))
        mixed = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(mixed.transpose(1, 2).reshape(*x.shape[:-1], -1))


def test_packed_heads_split_at_a_size_lose_the_same_heads_of_q_k_and_v():
    torch.manual_seed(0)
    model = Classifier(GPT2Attention(DIM, HEADS)).eval()
    x = torch.randn(2, TOKENS, 8)
    small, graph, heads = prune_heads(model, x, keep=0.75)
    attention = small.attention
    assert (attention.split_size, attention.num_heads, attention.c_attn.out_features) == (24, 3, 72) and len(heads) == 3
    reference = copy.deepcopy(model)
    head_dim = DIM // HEADS
    with torch.no_grad():
        for head in set(range(HEADS)) - set(heads):  # Conv1D's weight is (in, out): a head's inputs are rows
            reference.attention.c_proj.weight[head * head_dim : (head + 1) * head_dim] = 0
        torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-5)
    group = next(g for g in graph.groups if g.head_size > 1)
    assert (group.blocks, group.heads) == (3, HEADS)
    policy = autocomp.Policy({name: autocomp.LayerDecision(0.75) for name in group.layers})
    assert graph.predict_macs(policy) == autocomp.measure(small, x).macs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_unpacked_and_pruned_attention_computes_there(tmp_path):
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.randn(2, TOKENS, 8)
    small, _, _ = prune_heads(model, x, keep=0.5)
    autocomp.save(small, tmp_path / "small.pt", x)
    program = autocomp.load(tmp_path / "small.pt").to("cuda")
    attention = HeadAttention(model.attention).cuda()
    with torch.no_grad():
        torch.testing.assert_close(program(x.cuda()).cpu(), small(x), rtol=1e-3, atol=1e-4)
        query = torch.randn(2, TOKENS, DIM, device="cuda")
        torch.testing.assert_close(
            attention(query, query, query, need_weights=False)[0],
            model.attention.cuda()(query, query, query, need_weights=False)[0],
            rtol=1e-3,
            atol=1e-4,
        )


VIT_SOURCE = """
import sys
sys.path.insert(0, %r)
from pattern_models import MultiheadViT


def make_vit(num_classes, in_channels):
    return MultiheadViT(num_classes)
"""


def test_a_trusted_factory_rebuilds_a_model_whose_heads_were_pruned(user_module, tmp_path):
    """The recipe names the factory's nn.MultiheadAttention model; the rebuild unpacks it and removes the heads again."""
    from pathlib import Path

    from autocomp.models.user import build_user_model

    user_module("uservit", VIT_SOURCE % str(Path(__file__).parent))
    torch.manual_seed(0)
    model = build_user_model("uservit:make_vit", 10, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = ModelGraph(copy.deepcopy(model), x[:1])
    policy = autocomp.Policy({name: autocomp.LayerDecision(0.5) for group in graph.groups for name in group.layers})
    small = autocomp.compress(model, policy, x[:1]).eval()
    autocomp.save(small, tmp_path / "vit.pt", x[:1])
    again = autocomp.load(tmp_path / "vit.pt", trust_factory="uservit:make_vit")
    assert isinstance(again.layers[0].self_attention, HeadAttention)
    assert again.layers[0].self_attention.q_proj.out_features == DIM // 2
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x), rtol=0, atol=1e-6)
