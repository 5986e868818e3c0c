"""MACs the papers' way: multiply-accumulates of convolutions and linear layers only; BOPs from them.

A k x k convolution producing an H x W x C_out map from C_in channels in ``groups`` groups
costs ``H * W * C_out * (C_in / groups) * k * k``; a linear layer ``out * in`` per row. Bias,
BatchNorm, activations and pooling count zero (MobileNet-v1 1.0-224 = 569M MACs).
FLOPs, where asked for, are ``2 * MACs``. BOPs weigh each layer's MACs by its weight bits
times its input bits (floating point counts its dtype's bits, 32 for float32).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

COUNTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
FLOAT_BITS = 32
"""Bits of the float32 weights and activations a layer that is not quantized computes with."""
SCALE_BITS = 32
"""Bits of the one scale per output channel stored with quantized weights (every scheme but DoReFa)."""


def is_quantized(module: nn.Module) -> bool:
    """Whether ``module`` is a conv/linear layer running at chosen bits (``weight_bits``, ``act_bits``, ``weight_scheme``)."""
    return isinstance(module, COUNTED_TYPES) and getattr(module, "weight_bits", None) is not None


def float_bits(tensor: torch.Tensor) -> int:
    return tensor.element_size() * 8


def module_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one conv/linear call that produced ``output`` (all rows of the batch together)."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return output.numel() * per_output
    raise TypeError(f"MACs are counted for conv and linear layers only, not {type(module).__name__}")


def bits_per_mac(module: nn.Module) -> int:
    """Weight bits x input bits of one multiply-accumulate of ``module``."""
    floating = float_bits(module.weight)
    if not is_quantized(module):
        return floating * floating
    return module.weight_bits * (module.act_bits or floating)


def _thop_zero(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Everything but conv and linear layers costs nothing in the papers' convention."""


def profile_ops(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """(MACs, BOPs) of one forward pass per example, counted in one thop pass on a copy."""
    from thop import profile  # thop prints at import; keep it out of `import autocomp`

    bops = 0.0

    def counted(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal bops
        macs = module_macs(module, output)
        module.total_ops += torch.tensor([float(macs)], dtype=torch.float64)
        bops += macs * bits_per_mac(module)

    probe = copy.deepcopy(model)
    custom_ops = {}
    for module in probe.modules():
        if isinstance(module, COUNTED_TYPES):
            custom_ops[type(module)] = counted
        elif not list(module.children()):
            custom_ops.setdefault(type(module), _thop_zero)
    total, _ = profile(probe, inputs=(example_inputs,), custom_ops=custom_ops, verbose=False)
    batch = example_inputs.shape[0]
    return int(round(total / batch)), int(round(bops / batch))


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """MACs of one forward pass per example (thop on a copy, configured to the papers' convention)."""
    return profile_ops(model, example_inputs)[0]


def count_bops(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Bit operations of one forward pass per example: each layer's MACs x weight bits x input bits."""
    return profile_ops(model, example_inputs)[1]
