"""A user's own model: built by an importable factory (``package.module:function``), weights from a checkpoint.

The factory is called with the config's ``kwargs``, plus ``num_classes`` and ``in_channels`` from the
data set when its signature names them. The model remembers its factory (`registry.factory_record`),
so a pruned copy can be saved as a recipe and rebuilt by the same factory (`autocomp.io`), but only
when the caller trusts that import path: importing a module runs its code.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocomp.errors import ConfigError
from autocomp.imports import import_object
from autocomp.models.registry import RECORD_ATTRIBUTE

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
"""Where a training checkpoint commonly keeps the model's weights, tried in order."""


def build_user_model(factory: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The model ``factory`` (``package.module:function``) returns, recording how it was built."""
    function = import_object(factory, "model.factory")
    if not callable(function):
        raise ConfigError(f"model.factory {factory!r} names {type(function).__name__} object, not a function or class.")
    try:
        signature: inspect.Signature | None = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature: pass the kwargs alone
        signature = None
    arguments = dict(kwargs)
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if signature is not None and name in signature.parameters:
            arguments[name] = value
    if signature is not None:
        try:
            signature.bind(**arguments)
        except TypeError as err:
            raise ConfigError(
                f"model.factory {factory!r} cannot be called with {sorted(arguments) or 'no arguments'} "
                f"({err}); set model.kwargs to its arguments."
            ) from None
    model = function(**arguments)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory {factory!r} returned {type(model).__name__}, not a torch.nn.Module.")
    setattr(
        model,
        RECORD_ATTRIBUTE,
        {"import": factory, "num_classes": num_classes, "in_channels": in_channels, "kwargs": dict(kwargs)},
    )
    return model


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: Path, what: str, remedy: str) -> Any:
    """The contents of ``path`` read by ``torch.load(weights_only=True)`` on the CPU; a file that holds pickled objects,
    or is no torch file at all, is refused in one sentence about ``what`` ending with ``remedy``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))  # PyTorch's paragraph tells how to run it
        if found is None:
            raise ConfigError(f"{what} cannot be read as weights (not a file torch.save wrote); {remedy}.") from None
        raise ConfigError(
            f"{what} holds pickled Python objects ({found.group(1)}), which autocomp does not load; {remedy}."
        ) from None
    except Exception as err:  # a corrupt or foreign file: torch raises many kinds
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{what} cannot be read as weights ({first}); {remedy}.") from None


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the weights at ``path`` into ``model`` (strictly), read with ``torch.load(weights_only=True)``.

    The file holds a state dict, or a training checkpoint keeping one under ``state_dict``,
    ``model_state_dict`` or ``model``; a ``module.`` prefix left by ``DataParallel`` is dropped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.checkpoint {str(path)!r} does not exist or is not a file.")
    content = read_weights(path, f"model.checkpoint {str(path)!r}", "save model.state_dict() with torch.save")
    state = _state_dict(content, path)
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    missing, unexpected = _mismatch(model, state)
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ConfigError(
            f"model.checkpoint {str(path)!r} does not fit the model ({len(missing)} missing and "
            f"{len(unexpected)} unexpected keys, first {detail}); check model.factory and model.kwargs."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = next(
            (line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).splitlines()[0]
        )
        raise ConfigError(
            f"model.checkpoint {str(path)!r} does not fit the model ({first.rstrip('.')}); check model.kwargs."
        ) from None


def _state_dict(content: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(content, dict) and not all(isinstance(value, torch.Tensor) for value in content.values()):
        content = next((content[key] for key in CHECKPOINT_KEYS if isinstance(content.get(key), dict)), content)
    if not isinstance(content, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()
    ):
        raise ConfigError(
            f"model.checkpoint {str(path)!r} holds no state dict (names to tensors, also looked under "
            f"{', '.join(CHECKPOINT_KEYS)}); save model.state_dict() with torch.save."
        )
    return content


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)
