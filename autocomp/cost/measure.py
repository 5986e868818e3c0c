"""Cost of a model: MACs and BOPs per example, parameter count, storage in bits and, on a target, latency."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocomp.cost.latency import LatencyMeter, LatencyTarget, measure_latency_ms
from autocomp.cost.macs import SCALE_BITS, float_bits, is_quantized, profile_ops


@dataclass(frozen=True)
class Cost:
    """What a model costs for one example.

    ``size_bits`` counts parameter storage: quantized weights at their bits plus one 32-bit
    scale per output channel (uniform, binary, ternary), everything else at its dtype's bits.
    ``bops``: bit operations, each layer's MACs x weight bits x input bits (floats at 32).
    ``latency_ms``: the median latency on a `LatencyTarget`, when one was given (else None).
    """

    macs: int
    params: int
    size_bits: int
    bops: int
    latency_ms: float | None = None

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def size_bytes(self) -> int:
        return math.ceil(self.size_bits / 8)

    def to_dict(self) -> dict[str, float]:
        data: dict[str, float] = {
            "macs": self.macs,
            "params": self.params,
            "size_bytes": self.size_bytes,
            "size_bits": self.size_bits,
            "bops": self.bops,
        }
        return data if self.latency_ms is None else {**data, "latency_ms": self.latency_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cost:
        """The cost `to_dict` wrote (an older record without bits counts 8 per byte and 32 x 32 per MAC)."""
        return cls(
            macs=data["macs"],
            params=data["params"],
            size_bits=data.get("size_bits", 8 * data["size_bytes"]),
            bops=data.get("bops", 32 * 32 * data["macs"]),
            latency_ms=data.get("latency_ms"),
        )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def storage_bits(model: nn.Module) -> int:
    """Bits to store the parameters: quantized weights at their bits (plus their scales), others at their dtype's."""
    quantized_weights = {}
    for module in model.modules():
        if is_quantized(module):
            scales = 0 if module.weight_scheme == "dorefa" else SCALE_BITS * module.weight.shape[0]
            quantized_weights[id(module.weight)] = module.weight.numel() * module.weight_bits + scales
    return sum(quantized_weights.get(id(p), p.numel() * float_bits(p)) for p in model.parameters())


def measure(
    model: nn.Module, example_inputs: torch.Tensor, latency: LatencyTarget | LatencyMeter | None = None
) -> Cost:
    """Measure ``model`` on ``example_inputs`` (shape with a batch dimension; costs are per example).

    With a ``latency`` target, its latency there is measured too (a median after warm-up); with a `LatencyMeter`,
    beside the meter's reference model.
    """
    macs, bops = profile_ops(model, example_inputs)
    if latency is None:
        latency_ms = None
    elif isinstance(latency, LatencyMeter):
        latency_ms = latency.ms(model)
    else:
        latency_ms = measure_latency_ms(model, example_inputs, latency)
    return Cost(macs=macs, params=count_params(model), size_bits=storage_bits(model), bops=bops, latency_ms=latency_ms)
