"""BatchNorm recalibration: re-estimate running statistics after surgery (AutoSlim, EagleEye)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from autocomp.memory_format import channels_last
from autocomp.runtime import CPU, Runtime


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], runtime: Runtime = CPU) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them as an exact average over ``batches`` (on the
    model's device, at ``runtime``'s precision)."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return model
    saved_momentum = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    with runtime.autocast(), channels_last(model, enabled=runtime.channels_last_scoring) as layout:
        for images in batches:
            model(layout(images))
    for norm, momentum in zip(norms, saved_momentum):
        norm.momentum = momentum
    return model.eval()
