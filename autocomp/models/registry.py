"""The zoo's registry: factories by name, and the record of how a model was built."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from autocomp.errors import ConfigError

Factory = Callable[..., nn.Module]
_FACTORIES: dict[str, Factory] = {}
RECORD_ATTRIBUTE = "autocomp_factory"


def register(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(num_classes, in_channels, **kwargs) -> nn.Module`` under ``name``."""

    def decorate(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        return factory

    return decorate


def names() -> list[str]:
    return sorted(_FACTORIES)


def create(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build zoo model ``name``; the model remembers how it was built (see `factory_record`)."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown model {name!r}; allowed: {', '.join(names())}.")
    factory = _FACTORIES[name]
    allowed = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_channels")]
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(f"model {name!r} has no argument {key!r}; allowed: {', '.join(allowed) or 'none'}.")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r} is not allowed; a classifier needs an integer >= 2.")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels={in_channels!r} is not allowed; need an integer >= 1.")
    width = kwargs.get("width_mult", 1.0)
    if not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"width_mult={width!r} is not allowed; need a number > 0.")
    model = factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    setattr(model, RECORD_ATTRIBUTE, {"name": name, "kwargs": {"num_classes": num_classes,
                                                               "in_channels": in_channels, **kwargs}})
    return model


def factory_record(model: nn.Module) -> dict[str, Any] | None:
    """``{"name": ..., "kwargs": {...}}`` for a zoo model (also after deepcopy or pruning), else None."""
    return getattr(model, RECORD_ATTRIBUTE, None)


def scaled(channels: int, width_mult: float) -> int:
    """``channels`` times the width multiplier, rounded, at least one."""
    return max(1, int(round(channels * width_mult)))
