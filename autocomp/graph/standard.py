"""The form of a model autocomp prunes: modules that hide their layers swapped for equivalent ones that show them.

* ``nn.MultiheadAttention`` (packed q/k/v weight, output projection called functionally) becomes a
  `HeadAttention` (graph.attention), whose heads can be pruned;
* Hugging Face's ``Conv1D`` (GPT-2's projections: a linear layer whose weight is stored (in, out))
  becomes the ``nn.Linear`` it computes;
* torchvision's ``ShiftedWindowAttention`` and ``ShiftedWindowAttentionV2`` (Swin: ``qkv`` and ``proj``
  applied functionally to their weights) become a `WindowAttention` / `WindowAttentionV2`
  (graph.window_attention), which call them as layers;
* torchvision's ``RelativePositionalMultiHeadAttention`` (MaxViT: heads merged to the width of its
  input) gets a forward that merges them to their own width (graph.relative_attention).

All keep the weights and compute the same; the swap happens in place, so a `ModelGraph`'s layer
names are those of this form (``attn.q_proj``, ...) and a compressed model has it.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from autocomp.graph.attention import HeadAttention
from autocomp.graph.relative_attention import is_relative_attention, own_width_class
from autocomp.graph.window_attention import WindowAttention, WindowAttentionV2

WINDOW_ATTENTIONS = {"ShiftedWindowAttention": WindowAttention, "ShiftedWindowAttentionV2": WindowAttentionV2}
"""torchvision's window attentions (recognised by class name and attributes, without importing torchvision)."""
_WINDOW_ATTRIBUTES = (
    "window_size",
    "shift_size",
    "num_heads",
    "attention_dropout",
    "dropout",
    "relative_position_index",
)
_BIAS_ATTRIBUTES = {
    "ShiftedWindowAttention": ("relative_position_bias_table",),
    "ShiftedWindowAttentionV2": ("logit_scale", "cpb_mlp", "relative_coords_table"),
}


def standard_form(model: nn.Module) -> nn.Module:
    """Swap, in place, every module inside ``model`` that hides its layers for the equivalent that shows them."""
    for name, module in list(model.named_modules()):
        replacement = _shown(module) if name else None
        if replacement is not None:
            model.set_submodule(name, replacement)
    return model


def needs_standard_form(model: nn.Module) -> bool:
    return any(_hides_layers(module) for module in model.modules())


def _hides_layers(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):  # learned key/value biases and zero attention stay as they are
        return module.bias_k is None and module.bias_v is None and not module.add_zero_attn
    return _is_transposed_linear(module) or _is_window_attention(module) or is_relative_attention(module)


def _shown(module: nn.Module) -> nn.Module | None:
    if not _hides_layers(module):
        return None
    if isinstance(module, nn.MultiheadAttention):
        return HeadAttention(module)
    if is_relative_attention(module):
        module.__class__ = own_width_class(type(module))  # the same module, its forward merging heads to their width
        return module
    if _is_window_attention(module):
        return WINDOW_ATTENTIONS[type(module).__name__](module)
    weight, bias = cast(torch.Tensor, module.weight), cast("torch.Tensor | None", module.bias)  # Conv1D's
    in_features, out_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        if bias is not None:
            linear.bias.copy_(bias)
    return linear.to(weight).train(module.training)


def _is_transposed_linear(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (recognised without importing transformers): ``nf`` outputs, weight (in, nf)."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and getattr(module, "nf", None) == weight.shape[1]
        and not list(module.children())
    )


def _is_window_attention(module: nn.Module) -> bool:
    """torchvision's ``ShiftedWindowAttention`` or ``ShiftedWindowAttentionV2``: its class name, its linear ``qkv``
    and ``proj`` and the attributes its forward reads."""
    name = type(module).__name__
    return (
        name in WINDOW_ATTENTIONS
        and all(isinstance(getattr(module, layer, None), nn.Linear) for layer in ("qkv", "proj"))
        and all(hasattr(module, attribute) for attribute in (*_WINDOW_ATTRIBUTES, *_BIAS_ATTRIBUTES[name]))
    )
