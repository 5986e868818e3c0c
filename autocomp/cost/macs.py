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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

COUNTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
FLOAT_BITS = 32
"""Bits of the float32 weights and activations a layer that is not quantized computes with."""


@dataclass(frozen=True)
class Precision:
    """Bits a layer computes with; ``act_bits`` None means floating-point inputs."""

    weight_bits: int
    weight_scheme: str
    act_bits: int | None


def precision_of(module: nn.Module) -> Precision | None:
    """The precision of a quantized layer, None for any other module."""
    bits = getattr(module, "weight_bits", None)
    if not isinstance(module, COUNTED_TYPES) or bits is None:
        return None
    return Precision(bits, module.weight_scheme, module.act_bits)


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
    precision = precision_of(module)
    floating = float_bits(module.weight)
    if precision is None:
        return floating * floating
    return precision.weight_bits * (precision.act_bits or floating)


def _thop_zero(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Everything but conv and linear layers costs nothing in the papers' convention."""


def _profile(model: nn.Module, example_inputs: torch.Tensor, weight: Callable[[nn.Module], int]) -> int:
    """Sum of ``weight(layer) x MACs`` over the conv/linear calls of one forward pass, per example (thop, on a copy)."""
    from thop import profile  # thop prints at import; keep it out of `import autocomp`

    def counted(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        ops = module_macs(module, output) * weight(module)
        module.total_ops += torch.tensor([float(ops)], dtype=torch.float64)

    probe = copy.deepcopy(model)
    custom_ops = {}
    for module in probe.modules():
        if isinstance(module, COUNTED_TYPES):
            custom_ops[type(module)] = counted
        elif not list(module.children()):
            custom_ops.setdefault(type(module), _thop_zero)
    total, _ = profile(probe, inputs=(example_inputs,), custom_ops=custom_ops, verbose=False)
    batch = example_inputs.shape[0]
    return int(round(total / batch))


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """MACs of one forward pass per example (thop on a copy, configured to the papers' convention)."""
    return _profile(model, example_inputs, lambda module: 1)


def count_bops(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Bit operations of one forward pass per example: each layer's MACs x weight bits x input bits."""
    return _profile(model, example_inputs, bits_per_mac)
