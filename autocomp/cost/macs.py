"""MACs the papers' way: multiply-accumulates of convolutions and linear layers only.

A k x k convolution producing an H x W x C_out map from C_in channels in ``groups`` groups
costs ``H * W * C_out * (C_in / groups) * k * k``; a linear layer ``out * in`` per row. Bias,
BatchNorm, activations and pooling count zero (MobileNet-v1 1.0-224 = 569M MACs).
FLOPs, where asked for, are ``2 * MACs``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

COUNTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def module_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one conv/linear call that produced ``output`` (all rows of the batch together)."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return output.numel() * per_output
    raise TypeError(f"MACs are counted for conv and linear layers only, not {type(module).__name__}")


def _thop_counted(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    module.total_ops += torch.tensor([float(module_macs(module, output))], dtype=torch.float64)


def _thop_zero(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Everything but conv and linear layers costs nothing in the papers' convention."""


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """MACs of one forward pass per example (thop on a copy, configured to the papers' convention)."""
    from thop import profile  # thop prints at import; keep it out of `import autocomp`

    probe = copy.deepcopy(model)
    custom_ops = {}
    for module in probe.modules():
        if isinstance(module, COUNTED_TYPES):
            custom_ops[type(module)] = _thop_counted
        elif not list(module.children()):
            custom_ops.setdefault(type(module), _thop_zero)
    total, _ = profile(probe, inputs=(example_inputs,), custom_ops=custom_ops, verbose=False)
    batch = example_inputs.shape[0]
    return int(round(total / batch))
