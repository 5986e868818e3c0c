"""Channel-importance criteria: callables that score the channels of a coupled group, registered by name.

A criterion takes a Torch-Pruning group (every coupled layer with its channel indices) and
returns one score per channel; `compress` removes the lowest-scoring channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from autocomp.errors import ConfigError

Criterion = Callable[[object], torch.Tensor]
_FACTORIES: dict[str, Callable[[], Criterion]] = {}


def register_criterion(name: str) -> Callable[[Callable[[], Criterion]], Callable[[], Criterion]]:
    """Register a zero-argument factory returning a criterion under ``name``."""

    def decorate(factory: Callable[[], Criterion]) -> Callable[[], Criterion]:
        _FACTORIES[name] = factory
        return factory

    return decorate


def criterion_names() -> list[str]:
    return sorted(_FACTORIES)


def get_criterion(name: str) -> Criterion:
    """The criterion registered as ``name``."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown pruning criterion {name!r}; allowed: {', '.join(criterion_names())}.")
    return _FACTORIES[name]()


@register_criterion("l1")
def _l1() -> Criterion:
    """Li et al. 2017: sum of absolute weights, averaged over the coupled layers."""
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)


@register_criterion("l2")
def _l2() -> Criterion:
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)


@register_criterion("random")
def _random() -> Criterion:
    import torch_pruning as tp

    return tp.importance.RandomImportance()
