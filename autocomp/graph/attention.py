"""nn.MultiheadAttention unpacked into layers autocomp can prune head by head.

``nn.MultiheadAttention`` keeps q, k and v in one bare weight (``in_proj_weight``) and calls its
output projection functionally, and its code needs q, k and v as wide as its input: no head
can be removed from it. `HeadAttention` computes the same with q, k, v and the output
projection as Linear modules and any number of heads of the same size, so its heads are
pruned like any hand-written attention's. `graph.standard.standard_form` swaps one for the other,
with the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HeadAttention(nn.Module):
    """``nn.MultiheadAttention``'s computation (same arguments and results) with separate q/k/v/output Linears.

    The head count follows the projections' width (``q_proj.out_features // head_dim``), so removing whole heads from
    them is all pruning a head takes.
    """

    in_proj_bias = None
    _qkv_same_embed_dim = False
    """What torch's encoder layers read to choose their fused inference path, which needs packed weights: not taken."""

    def __init__(self, source: nn.MultiheadAttention) -> None:
        super().__init__()
        self.batch_first = source.batch_first
        self.head_dim = source.head_dim
        self.dropout = source.dropout
        embed, bias = source.embed_dim, source.in_proj_bias is not None
        self.q_proj = nn.Linear(embed, embed, bias=bias)
        self.k_proj = nn.Linear(source.kdim, embed, bias=bias)
        self.v_proj = nn.Linear(source.vdim, embed, bias=bias)
        self.out_proj = nn.Linear(embed, embed, bias=source.out_proj.bias is not None)
        with torch.no_grad():
            if source._qkv_same_embed_dim:
                weights = source.in_proj_weight.chunk(3)
            else:
                weights = (source.q_proj_weight, source.k_proj_weight, source.v_proj_weight)
            biases = source.in_proj_bias.chunk(3) if bias else (None,) * 3
            for layer, weight, b in zip((self.q_proj, self.k_proj, self.v_proj), weights, biases):
                layer.weight.copy_(weight)
                if b is not None:
                    layer.bias.copy_(b)
            self.out_proj.weight.copy_(source.out_proj.weight)
            if source.out_proj.bias is not None:
                self.out_proj.bias.copy_(source.out_proj.bias)
        self.to(source.out_proj.weight).train(source.training)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched, batch_dim = query.dim() == 2, 0 if self.batch_first else 1
        if unbatched:  # one sequence
            query, key, value = (t.unsqueeze(batch_dim) for t in (query, key, value))
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = (
            layer(t).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
            for layer, t in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value))
        )
        mask = _additive_mask(attn_mask, key_padding_mask, q)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5
            probabilities = F.dropout((scores if mask is None else scores + mask).softmax(dim=-1), dropout)
            out = probabilities @ v
            weights = probabilities.mean(dim=1) if average_attn_weights else probabilities
        else:
            causal = is_causal and mask is None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        out = out if self.batch_first else out.transpose(0, 1)
        if unbatched:
            return out.squeeze(batch_dim), None if weights is None else weights[0]
        return out, weights


def _additive_mask(
    attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, q: torch.Tensor
) -> torch.Tensor | None:
    """nn.MultiheadAttention's masks (True or -inf: not attended) as one float mask for (batch, heads, L, S) scores."""
    masks = []
    if attn_mask is not None:
        if attn_mask.dim() == 3:  # (batch x heads, L, S)
            attn_mask = attn_mask.view(q.shape[0], -1, *attn_mask.shape[1:])
        masks.append(attn_mask)
    if key_padding_mask is not None:
        masks.append(key_padding_mask.view(key_padding_mask.shape[0], 1, 1, key_padding_mask.shape[1]))
    total = None
    for mask in masks:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf"))
        total = mask.to(q.dtype) if total is None else total + mask
    return total
