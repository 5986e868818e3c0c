"""Bounds and allowed values of the settings dataclasses, stated once, on each field's annotation.

A field annotated ``Annotated[int, Ge(1)]`` or ``Annotated[str, OneOf(NAMES)]`` is checked by `check` (called in the
dataclass's ``__post_init__``: one sentence naming the setting); the application's pydantic config validates the same
dataclasses from the same annotations and names the config key instead. The bounds are annotated-types objects, the
vocabulary pydantic reads natively; `OneOf` carries pydantic's schema hook (called by pydantic only, never imported).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Union

from annotated_types import Ge, Gt, Le, Lt

from autocomp.errors import ConfigError

Positive = Annotated[int, Ge(1)]
"""A whole number >= 1."""
NonNegative = Annotated[int, Ge(0)]
"""A whole number >= 0."""
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Gt(0), Le(1)]
"""A number in (0, 1]."""
Weight = Annotated[float, Ge(0), Le(1)]
"""A number in [0, 1]."""
Momentum = Annotated[float, Ge(0), Lt(1)]
"""A number in [0, 1)."""


class OneOf:
    """The allowed values of a text setting: a constant tuple, or a function listing a registry's names."""

    def __init__(self, names: Iterable[str] | Callable[[], Iterable[str]]) -> None:
        self._names = names

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names() if callable(self._names) else self._names)

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def allowed(value: str) -> str:
            if value not in self.names:
                raise ValueError(f"use one of {', '.join(self.names)}")
            return value

        return core_schema.no_info_after_validator_function(allowed, handler(source))


def check(settings: Any, what: str) -> None:
    """`ConfigError` naming ``what`` and the field unless every annotated field of the dataclass ``settings`` holds an
    allowed value."""
    for name, (kind, optional, bounds) in _annotated_fields(settings.__class__).items():
        value = getattr(settings, name)
        if value is None and optional:
            continue
        for bound in bounds:
            if isinstance(bound, OneOf) and value not in bound.names:
                raise ConfigError(f"{what} {name} {value!r} is not allowed; allowed: {', '.join(bound.names)}.")
        numbers = [bound for bound in bounds if not isinstance(bound, OneOf)]
        if numbers and not _within(value, kind, numbers):
            allowed = _describe(kind, numbers) + (" or None" if optional else "")
            raise ConfigError(f"{what} {name} must be {allowed}, not {value!r}.")


@functools.cache
def _annotated_fields(cls: Any) -> dict[str, tuple[type, bool, tuple[Any, ...]]]:
    """Each annotated field of ``cls``: its type, whether None is allowed, its bounds."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = {}
    for field in dataclasses.fields(cls):
        hint, optional = hints[field.name], False
        if typing.get_origin(hint) in (Union, types.UnionType):
            parts = [part for part in typing.get_args(hint) if part is not type(None)]
            hint, optional = parts[0], len(parts) < len(typing.get_args(hint))
        if typing.get_origin(hint) is Annotated:
            kind, *bounds = typing.get_args(hint)
            found[field.name] = (kind, optional, tuple(bounds))
    return found


def _limits(bounds: list[Any]) -> tuple[Any, Any, Any, Any]:
    """The bounds' >=, >, <= and < limits (None where absent)."""
    return (
        next((b.ge for b in bounds if isinstance(b, Ge)), None),
        next((b.gt for b in bounds if isinstance(b, Gt)), None),
        next((b.le for b in bounds if isinstance(b, Le)), None),
        next((b.lt for b in bounds if isinstance(b, Lt)), None),
    )


def _within(value: object, kind: type, bounds: list[Any]) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        return False
    ge, gt, le, lt = _limits(bounds)
    return (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )


def _describe(kind: type, bounds: list[Any]) -> str:
    """The allowed values in words: "a positive integer", "in [0, 1)", "> 0"."""
    ge, gt, le, lt = _limits(bounds)
    if kind is int:
        if le is None:
            return "a positive integer" if ge == 1 else f"a whole number >= {ge}"
        return f"a whole number from {ge} to {le}"
    if le is None and lt is None:
        return f"> {gt}" if gt is not None else f">= {ge}"
    opening = f"({gt}" if gt is not None else f"[{ge}"
    closing = f"{lt})" if lt is not None else f"{le}]"
    return f"in {opening}, {closing}"
