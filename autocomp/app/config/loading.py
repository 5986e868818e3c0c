"""Reading a run config: YAML files, ``key=value`` overrides laid over the defaults, errors in one sentence."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autocomp.app.config.run import RunConfig
from autocomp.errors import ConfigError

RENAMED = {
    "constraint": "constraints, a list",
    "search.min_keep": "space.keep.low",
    "search.channel_multiple": "space.channel_multiple",
}
"""Keys of earlier versions and where they went."""


def one_sentence(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # a section, a settings dataclass
        renamed = f" (renamed to {RENAMED[key]})" if key in RENAMED else ""
        return f"{source}: unknown config key {key!r}{renamed}."
    message = first["msg"].removeprefix("Value error, ").rstrip(".")  # a settings dataclass's sentence has its stop
    if first["type"] in ("model_type", "dataclass_type"):
        return f"{source}: config key {key!r} must be a mapping, got {first['input']!r}."
    if not first["loc"]:
        return f"{source}: {message}."
    if isinstance(first["input"], Mapping):
        return f"{source}: config section {key!r} is not allowed: {message}."
    return f"{source}: config key {key!r} = {first['input']!r} is not allowed: {message}."


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["search.trials=5", ...]`` into a nested mapping; values are read as YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not of the form key=value (for example search.trials=5).")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} conflicts with an earlier override of {part!r}.")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """``extra`` laid over ``base``; a list entry is addressed by its index (``constraints.0.max=0.3``)."""
    merged = dict(base)
    for key, value in extra.items():
        where = f"{path}{key}"
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = _merge(dict(current), value, f"{where}.")
        elif (
            isinstance(value, Mapping) and isinstance(current, list) and value and all(str(k).isdigit() for k in value)
        ):
            items = list(current)
            for index, entry in value.items():
                if int(index) >= len(items):
                    raise ConfigError(
                        f"override {where}.{index} names entry {index} of {where}, which has "
                        f"{len(items)} entr{'y' if len(items) == 1 else 'ies'} (indexes from 0)."
                    )
                item = items[int(index)]
                items[int(index)] = (
                    _merge(dict(item), entry, f"{where}.{index}.")
                    if isinstance(item, Mapping) and isinstance(entry, Mapping)
                    else entry
                )
            merged[key] = items
        else:
            merged[key] = value
    return merged


def build_config(
    data: Mapping[str, Any] | None = None, overrides: Sequence[str] = (), source: str = "config"
) -> RunConfig:
    """Validate a mapping (plus ``key=value`` overrides, laid over the defaults) into a `RunConfig`."""
    # Defaults, so that an override can address an entry of a default list; not the model's, whose default name would
    # clash with a user's model.factory.
    defaults = RunConfig().model_dump(mode="json", exclude={"model"})
    try:
        return RunConfig.model_validate(_merge(_merge(defaults, dict(data or {})), parse_overrides(list(overrides))))
    except ValidationError as err:
        raise ConfigError(one_sentence(err, source)) from None


def read_mapping(path: Path, what: str, holds: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``yaml.safe_load``; empty: {}); `ConfigError` naming the file as ``what``
    for a missing file, invalid YAML or anything but a mapping (of ``holds``)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML ({str(err).splitlines()[0]}).") from None
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{what} {path} must hold a mapping of {holds}, not a {type(data).__name__}.")
    return dict(data or {})


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config file with ``yaml.safe_load`` and validate it."""
    path = Path(path)
    return build_config(read_mapping(path, "config file", "sections"), overrides, source=f"config file {path}")
