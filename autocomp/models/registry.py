"""The zoo's registry: factories by name, argument checks, and the record of how a model was built."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from autocomp.errors import ConfigError

Factory = Callable[..., nn.Module]
_FACTORIES: dict[str, Factory] = {}
RECORD_ATTRIBUTE = "autocomp_factory"
_COMMON = ("num_classes", "in_channels")


def register(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(num_classes, in_channels, **kwargs) -> nn.Module`` under ``name``."""

    def decorate(factory: Factory) -> Factory:
        if name in _FACTORIES:
            raise ConfigError(f"model name {name!r} is already registered; choose a name not in: {', '.join(names())}.")
        _FACTORIES[name] = factory
        return factory

    return decorate


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_FACTORIES)


def _check_kwargs(name: str, factory: Factory, kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments that ``factory`` does not take."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    allowed = [p for p in parameters if p not in _COMMON]
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(f"model {name!r} has no argument {key!r}; allowed: {', '.join(allowed) or 'none'}.")


def _check_values(num_classes: Any, in_channels: Any, kwargs: dict[str, Any]) -> None:
    """Refuse out-of-range values of the arguments the zoo's models share."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r} is not allowed; a classifier needs an integer >= 2.")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels={in_channels!r} is not allowed; it must be an integer >= 1.")
    width = kwargs.get("width_mult", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (0 < width < math.inf):
        raise ConfigError(f"width_mult={width!r} is not allowed; it must be a finite number > 0.")
    small_input = kwargs.get("small_input", True)
    if not isinstance(small_input, bool):
        raise ConfigError(f"small_input={small_input!r} is not allowed; it must be true or false.")


def create(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build zoo model ``name``; the model remembers how it was built (see `factory_record`)."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown model {name!r}; allowed: {', '.join(names())}.")
    factory = _FACTORIES[name]
    _check_kwargs(name, factory, kwargs)
    _check_values(num_classes, in_channels, kwargs)
    model = factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    record = {"name": name, "kwargs": {"num_classes": num_classes, "in_channels": in_channels, **kwargs}}
    setattr(model, RECORD_ATTRIBUTE, record)
    return model


def factory_record(model: nn.Module) -> dict[str, Any] | None:
    """How ``model`` was built (also after deepcopy or pruning), else None: ``{"name": ..., "kwargs": {...}}`` for a zoo
    model, ``{"import": "package.module:function", "num_classes": ..., "in_channels": ..., "kwargs": {...}}`` for a
    user's (`autocomp.models.user`)."""
    return getattr(model, RECORD_ATTRIBUTE, None)
