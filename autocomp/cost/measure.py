"""Cost of a model: MACs and BOPs per example, parameter count and storage in bits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autocomp.cost.macs import float_bits, is_quantized, profile_ops


@dataclass(frozen=True)
class Cost:
    """What a model costs for one example.

    ``size_bits`` counts parameter storage: quantized weights at their bits plus one 32-bit
    scale per output channel (uniform, binary, ternary), everything else at its dtype's bits.
    ``bops``: bit operations, each layer's MACs x weight bits x input bits (floats at 32).
    """

    macs: int
    params: int
    size_bits: int
    bops: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def size_bytes(self) -> int:
        return math.ceil(self.size_bits / 8)

    def to_dict(self) -> dict[str, int]:
        return {"macs": self.macs, "params": self.params, "size_bytes": self.size_bytes, "size_bits": self.size_bits,
                "bops": self.bops}

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> Cost:
        """The cost `to_dict` wrote (an older record without bits counts 8 per byte and 32 x 32 per MAC)."""
        return cls(macs=data["macs"], params=data["params"], size_bits=data.get("size_bits", 8 * data["size_bytes"]),
                   bops=data.get("bops", 32 * 32 * data["macs"]))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def storage_bits(model: nn.Module) -> int:
    """Bits to store the parameters: quantized weights at their bits (plus their scales), others at their dtype's."""
    quantized_weights = {}
    for module in model.modules():
        if is_quantized(module):
            scales = 0 if module.weight_scheme == "dorefa" else 32 * module.weight.shape[0]
            quantized_weights[id(module.weight)] = module.weight.numel() * module.weight_bits + scales
    return sum(quantized_weights.get(id(p), p.numel() * float_bits(p)) for p in model.parameters())


def measure(model: nn.Module, example_inputs: torch.Tensor) -> Cost:
    """Measure ``model`` on ``example_inputs`` (shape with a batch dimension; costs are per example)."""
    macs, bops = profile_ops(model, example_inputs)
    return Cost(macs=macs, params=count_params(model), size_bits=storage_bits(model), bops=bops)
