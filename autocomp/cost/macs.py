"""MACs the papers' way, counted where PyTorch computes them; BOPs from them.

Every matrix product of a forward pass is counted at the dispatcher with torch's own formulas
(`torch.utils.flop_counter`: convolutions, mm, addmm, bmm, baddbmm, scaled dot-product
attention), so functional calls, bare weights, custom modules (Hugging Face's ``Conv1D``),
``matmul``, ``einsum`` and attention count as well as conv and linear modules. A k x k
convolution producing an H x W x C_out map from C_in channels in ``groups`` groups costs
``H * W * C_out * (C_in / groups) * k * k``; a linear layer ``out * in`` per row. Bias, norms,
activations and pooling count zero (MobileNet-v1 1.0-224 = 569M MACs). FLOPs, where asked
for, are ``2 * MACs``. BOPs weigh each MAC by the weight bits times the input bits of the layer
that computes it (floating point counts its dtype's bits, 32 for float32).
"""

from __future__ import annotations

import copy
import math
from typing import Protocol, TypeGuard

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

COUNTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""The layers autocomp prunes, factorizes and quantizes."""
FLOAT_BITS = 32
"""Bits of the float32 weights and activations a layer that is not quantized computes with."""
SCALE_BITS = 32
"""Bits of the one scale per output channel stored with quantized weights (every scheme but DoReFa)."""


class QuantizedLayer(Protocol):
    """What a conv/linear layer running at chosen bits has (the layers of `compress.quantize`)."""

    weight: torch.Tensor
    weight_bits: int
    weight_scheme: str

    @property
    def act_bits(self) -> int | None: ...


def is_quantized(module: nn.Module) -> TypeGuard[QuantizedLayer]:
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
    """Weight bits x input bits of one multiply-accumulate computed by ``module``: a float layer's weight dtype's bits
    squared; outside conv/linear layers (attention, functional products) float32's."""
    if not isinstance(module, COUNTED_TYPES):
        return FLOAT_BITS * FLOAT_BITS
    floating = float_bits(module.weight)
    if not is_quantized(module):
        return floating * floating
    return module.weight_bits * (module.act_bits or floating)


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU kernel of scaled dot-product attention (torch's formula for the other kernels)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_MORE_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


class MacCounter:
    """Within its context, the MACs each module of ``model`` computes itself (its submodules' excluded).

    ``own[module]`` sums over calls; MACs computed outside any submodule belong to ``model``.
    PyTorch's fused fast paths for attention (one kernel for a whole ``nn.MultiheadAttention``
    or encoder layer in inference) are switched off meanwhile, so that their products are seen.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.own: dict[nn.Module, int] = {}
        self._flops = FlopCounterMode(display=False, custom_mapping=_MORE_FORMULAS)
        self._open: list[list[int]] = []
        """Per module being run: [MACs counted when it started, MACs of its submodules]."""

    def _total(self) -> int:
        return self._flops.get_total_flops() // 2

    def _enter(self, module: nn.Module, inputs: tuple) -> None:
        self._open.append([self._total(), 0])

    def _leave(self, module: nn.Module, inputs: tuple, output: object) -> None:
        started, inner = self._open.pop()
        spent = self._total() - started
        self.own[module] = self.own.get(module, 0) + spent - inner
        if self._open:
            self._open[-1][1] += spent

    def __enter__(self) -> MacCounter:
        self._fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        self._handles = [m.register_forward_pre_hook(self._enter) for m in self.model.modules()]
        self._handles += [m.register_forward_hook(self._leave) for m in self.model.modules()]
        self._flops.__enter__()
        self._top = self._total()
        return self

    def __exit__(self, *exc: object) -> None:
        outside = self._total() - self._top - sum(self.own.values())
        self.own[self.model] = self.own.get(self.model, 0) + outside  # the root's own work, when not called as a module
        self._flops.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        torch.backends.mha.set_fastpath_enabled(self._fastpath)

    @property
    def total(self) -> int:
        return sum(self.own.values())


def profile_ops(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """(MACs, BOPs) of one forward pass per example, counted in eval mode on a copy (a first call may set
    quantizers' steps); each MAC weighed by the bits of the module computing it."""
    probe = copy.deepcopy(model).eval()
    with MacCounter(probe) as counter, torch.no_grad():
        probe(example_inputs)
    batch = example_inputs.shape[0]
    bops = sum(macs * bits_per_mac(module) for module, macs in counter.own.items())
    return counter.total // batch, bops // batch


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """MACs of one forward pass per example."""
    return profile_ops(model, example_inputs)[0]


def count_bops(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Bit operations of one forward pass per example: each MAC x weight bits x input bits of its layer."""
    return profile_ops(model, example_inputs)[1]
