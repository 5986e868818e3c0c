"""torchvision's shifted window attention (Swin, Swin V2) with its q/k/v and output projections called as layers.

torchvision's ``ShiftedWindowAttention`` passes ``self.qkv.weight`` and ``self.proj.weight`` to a
function that applies them with ``F.linear``: the projections are never called as modules, so the
residual stream seems to reach the attention's products channel by channel and no layer of the
attention can be pruned. `WindowAttention` computes the same (padding, cyclic shift, windows,
heads with the relative position bias and the shift mask, windows reversed, shift undone,
padding cut) with ``self.qkv(x)`` and ``self.proj(x)``; `WindowAttentionV2` adds V2's cosine
attention (``logit_scale``) and its bias from a small MLP (``cpb_mlp``). `graph.standard` swaps
them in, with the same parameters and buffers (the same state-dict names). Their heads are pruned
whole: ``keep_heads`` cuts the parameters that hold one entry per head (see graph.heads).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class _ShiftedWindows(nn.Module):
    """What both versions share: windows, heads, the shift mask; ``qkv`` and ``proj`` called as layers.

    The head size follows from ``qkv``'s width and ``num_heads``, and the output projection reads all the heads, so
    pruning the residual stream (the projections' input and output) takes nothing more than their weights.
    """

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.window_size = [int(s) for s in cast("list[int]", source.window_size)]
        self.shift_size = [int(s) for s in cast("list[int]", source.shift_size)]
        self.num_heads = int(cast(int, source.num_heads))
        self.attention_dropout = float(cast(float, source.attention_dropout))
        self.dropout = float(cast(float, source.dropout))
        self.qkv, self.proj = cast(nn.Linear, source.qkv), cast(nn.Linear, source.proj)
        self.register_buffer("relative_position_index", cast(torch.Tensor, source.relative_position_index))
        self.train(source.training)

    def relative_position_bias(self) -> torch.Tensor:
        """The bias each head adds to its scores, (1, heads, N, N) for windows of N positions."""
        raise NotImplementedError

    def _per_pair(self, table: torch.Tensor) -> torch.Tensor:
        """A (relative positions, heads) table read at every pair of a window's positions: (1, heads, N, N)."""
        n = self.window_size[0] * self.window_size[1]
        index = cast(torch.Tensor, self.relative_position_index)
        return table[index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Scaled dot products of (windows, heads, N, head size) queries and keys."""
        return (q * q.shape[-1] ** -0.5).matmul(k.transpose(-2, -1))

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """q, k and v of (windows, N, C) tokens side by side: (windows, N, 3C)."""
        return self.qkv(x)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k and v of (windows, N, C) tokens, each (windows, heads, N, head size)."""
        qkv = self.packed(x).reshape(x.shape[0], x.shape[1], 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # Torch-Pruning maps an unbind's parts to their own channels, not a select's
        return q, k, v

    def keep_heads(self, heads: list[int]) -> None:
        """Keep only ``heads`` (in that order) of the parameters that hold one entry per head."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C), as torchvision's ``shifted_window_attention``."""
        b, h, w, _ = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
        padded_h, padded_w = x.shape[1], x.shape[2]
        shift = (0 if wh >= padded_h else self.shift_size[0], 0 if ww >= padded_w else self.shift_size[1])
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = (padded_h // wh) * (padded_w // ww)
        x = x.view(b, padded_h // wh, wh, padded_w // ww, ww, -1).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * windows, wh * ww, x.shape[-1])
        q, k, v = self.project(x)
        attn = self.scores(q, k) + self.relative_position_bias()
        if sum(shift) > 0:
            mask = _shift_mask(x, (padded_h, padded_w), (wh, ww), shift)
            heads, n = attn.shape[1], x.shape[1]
            attn = (attn.view(b, windows, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
        attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        x = F.dropout(self.proj(x), p=self.dropout, training=self.training)
        x = x.view(b, padded_h // wh, padded_w // ww, wh, ww, -1).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, padded_h, padded_w, x.shape[-1])
        if sum(shift) > 0:
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :h, :w, :].contiguous()


class WindowAttention(_ShiftedWindows):
    """torchvision's ``ShiftedWindowAttention`` (same parameters, same results): a learned bias per relative position
    and head."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__(source)
        self.relative_position_bias_table = cast(nn.Parameter, source.relative_position_bias_table)

    def relative_position_bias(self) -> torch.Tensor:
        return self._per_pair(self.relative_position_bias_table)

    def keep_heads(self, heads: list[int]) -> None:
        """The bias table's columns of ``heads``."""
        self.relative_position_bias_table = _kept(self.relative_position_bias_table, heads, dim=1)


class WindowAttentionV2(_ShiftedWindows):
    """torchvision's ``ShiftedWindowAttentionV2``: cosine attention scaled per head, the bias from ``cpb_mlp``."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__(source)
        self.logit_scale = cast(nn.Parameter, source.logit_scale)
        self.cpb_mlp = cast(nn.Module, source.cpb_mlp)
        self.register_buffer("relative_coords_table", cast(torch.Tensor, source.relative_coords_table))

    def relative_position_bias(self) -> torch.Tensor:
        table = self.cpb_mlp(self.relative_coords_table)
        return 16 * torch.sigmoid(self._per_pair(table.reshape(-1, table.shape[-1])))

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """The key bias taken back out: torchvision zeroes it in every call, so it neither counts nor learns.

        Subtracted through a mask over all the channels (a slice would hide the heads from Torch-Pruning), with the
        layer's output the last term (Torch-Pruning infers an element-wise op's channels from its last input).
        """
        qkv = self.qkv(x)
        bias = _output_bias(self.qkv)
        if bias is None:
            return qkv
        width = bias.shape[0] // 3
        keys = torch.zeros_like(bias)
        keys[width : 2 * width] = -1
        return bias * keys + qkv

    def keep_heads(self, heads: list[int]) -> None:
        """``logit_scale``'s rows of ``heads``, and the rows of ``cpb_mlp``'s last layer, which makes one bias per
        head."""
        self.logit_scale = _kept(self.logit_scale, heads)
        last = cast(nn.Linear, cast(nn.Sequential, self.cpb_mlp)[-1])
        last.weight = _kept(last.weight, heads)
        if last.bias is not None:
            last.bias = _kept(last.bias, heads)
        last.out_features = len(heads)

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        return attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()


def _kept(parameter: torch.Tensor, heads: list[int], dim: int = 0) -> nn.Parameter:
    """A new parameter holding ``heads``' entries of ``parameter`` along ``dim``."""
    index = torch.tensor(heads, dtype=torch.long, device=parameter.device)
    return nn.Parameter(parameter.detach().index_select(dim, index), requires_grad=parameter.requires_grad)


def _output_bias(layer: nn.Module) -> torch.Tensor | None:
    """The bias added to a layer's output: that of its last part when it was factorized into a sequence."""
    last = layer[-1] if isinstance(layer, nn.Sequential) else layer
    return cast("torch.Tensor | None", getattr(last, "bias", None))


def _shift_mask(
    x: torch.Tensor, size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> torch.Tensor:
    """-100 between positions of a window that the cyclic shift brought from different regions, else 0: (windows, N,
    N)."""
    mask = x.new_zeros(size)
    count = 0
    for top, bottom in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for left, right in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            mask[top:bottom, left:right] = count
            count += 1
    mask = mask.view(size[0] // window[0], window[0], size[1] // window[1], window[1]).permute(0, 2, 1, 3)
    mask = mask.reshape(-1, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
