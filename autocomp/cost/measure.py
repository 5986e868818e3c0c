"""Cost of a model: MACs per example, parameter count and weight size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from autocomp.cost.macs import count_macs


@dataclass(frozen=True)
class Cost:
    """What a model costs for one example; ``size_bytes`` counts parameter storage."""

    macs: int
    params: int
    size_bytes: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def measure(model: nn.Module, example_inputs: torch.Tensor) -> Cost:
    """Measure ``model`` on ``example_inputs`` (shape with a batch dimension; costs are per example)."""
    return Cost(macs=count_macs(model, example_inputs), params=count_params(model), size_bytes=weight_bytes(model))
