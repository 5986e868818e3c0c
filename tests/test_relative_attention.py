"""MaxViT's attention (an own copy of torchvision's, which merges its heads to its input's width): given its own
width, it computes the same, and the residual stream around it prunes without breaking its reshape."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import autocomp
from autocomp.graph.relative_attention import OwnWidthMerge
from autocomp.graph.standard import standard_form


class RelativePositionalMultiHeadAttention(nn.Module):
    """torchvision 0.29's MaxViT attention, copied (its forward reads D from the input)."""

    def __init__(self, feat_dim: int, head_dim: int, max_seq_len: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.max_seq_len = feat_dim // head_dim, head_dim, max_seq_len
        self.size = int(max_seq_len**0.5)
        self.to_qkv = nn.Linear(feat_dim, self.n_heads * self.head_dim * 3)
        self.scale_factor = feat_dim**-0.5
        self.merge = nn.Linear(self.head_dim * self.n_heads, feat_dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.randn(((2 * self.size - 1) * (2 * self.size - 1), self.n_heads)) * 0.02
        )
        coords = torch.stack(torch.meshgrid(torch.arange(self.size), torch.arange(self.size), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + self.size - 1
        self.register_buffer("relative_position_index", relative[..., 0] * (2 * self.size - 1) + relative[..., 1])

    def get_relative_positional_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(self.max_seq_len, self.max_seq_len, -1).permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, G, P, D = x.shape
        H, DH = self.n_heads, self.head_dim
        q, k, v = torch.chunk(self.to_qkv(x), 3, dim=-1)
        q = q.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        v = v.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k * self.scale_factor
        dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
        dot_prod = F.softmax(dot_prod + self.get_relative_positional_bias(), dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(B, G, P, D))


class TinyPartitionNet(nn.Module):
    """A conv stem, 4x4 windows as (B, G, P, C) rows, an attention and an MLP on them with residuals, a classifier."""

    def __init__(self, dim: int = 24) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, 2)
        self.attention = RelativePositionalMultiHeadAttention(dim, 8, 16)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        x = x.view(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // 4) * (w // 4), 16, c)
        x = x + self.attention(x)
        x = x + self.mlp(x)
        return self.head(x.mean(dim=(1, 2)))


def test_its_own_width_computes_the_same_and_the_stream_around_it_prunes():
    torch.manual_seed(0)
    model, x = TinyPartitionNet().eval(), torch.randn(2, 3, 16, 16)
    swapped = standard_form(copy.deepcopy(model))
    assert isinstance(swapped.attention, OwnWidthMerge)
    torch.testing.assert_close(swapped(x), model(x))
    layers = autocomp.prunable_layers(model, x)
    assert "stem" in {layer.name for layer in layers}  # the residual stream prunes
    small = autocomp.compress(model, autocomp.Policy.uniform(layers, keep=0.5), x).eval()
    assert small.stem.out_channels == 12 and small.attention.merge.in_features == 24  # the heads keep their width
    assert small(x).shape == (2, 10)
