"""Measured latency: median wall time of forward passes after warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import torch
from torch import nn


@torch.no_grad()
def _time_forward(model: nn.Module, batch: torch.Tensor) -> float:
    start = time.perf_counter()
    model(batch)
    return time.perf_counter() - start


@torch.no_grad()
def compare_latency_ms(models: Mapping[str, nn.Module], example_inputs: torch.Tensor, batch_size: int = 1,
                       warmup: int = 3, repeats: int = 15) -> dict[str, float]:
    """Median milliseconds per forward pass of a ``batch_size`` batch, for each model.

    The models take turns, pass by pass, so a noisy shared machine slows them alike and their
    ratio stays honest.
    """
    batch = torch.randn(batch_size, *example_inputs.shape[1:])
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(batch)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(_time_forward(model, batch))
    return {name: 1000 * statistics.median(values) for name, values in times.items()}
