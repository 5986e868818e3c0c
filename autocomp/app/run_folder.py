"""The run folder: claimed only after every check passed, and never reused for another config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import yaml

from autocomp.app.config import RunConfig, build_config
from autocomp.errors import ConfigError
from autocomp.files import write_text

CONFIG_NAME = "config.yaml"
# A run may be continued with a larger trial budget, another thread count, device, data workers, cache bound or runner,
# or another number of finalists (the finish runs again); any other change is another run.
RESUMABLE_KEYS = (
    ("search", "trials"),
    ("threads",),
    ("device",),
    ("data", "workers"),
    ("evaluator", "cache_mb"),
    ("runner",),
    ("finetune", "finalists"),
)


def _without_none(value: object) -> object:
    """``value`` with None entries dropped from its mappings: a key added to the config later reads as absent."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    return value


def config_identity(config: dict) -> dict:
    """The config without the keys a resumed run may change (and without unset ones)."""
    identity = cast(dict, _without_none(config))  # a dict stays a dict
    for path in RESUMABLE_KEYS:
        node = identity
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return identity


def first_difference(a: object, b: object, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "(top level)"


def _with_defaults(saved: dict) -> dict:
    """A saved config with the keys added since it was written at their defaults (as it is, if it no longer validates)."""
    try:
        return build_config(saved).to_dict()
    except ConfigError:
        return saved


def check_creatable(folder: Path, what: str) -> None:
    """Refuse, in one sentence naming ``what``, a folder that could not be created or written: a file at it or above
    it, or a folder without write permission (nothing is written)."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} exists and is not a folder; choose another --out.")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{what} {folder} cannot be created: {existing} is a file, not a folder; choose another --out."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{what} {folder} cannot be written: no permission to write in {existing}; choose another --out."
        )


def check_run_folder(out: Path, config: RunConfig) -> None:
    """Refuse a folder that cannot be created, or holds something other than a run of this very config (nothing is
    written)."""
    check_creatable(out, "run folder")
    if not out.exists():
        return
    saved = out / CONFIG_NAME
    if saved.exists():
        previous = config_identity(_with_defaults(yaml.safe_load(saved.read_text()) or {}))
        current = config_identity(config.to_dict())
        if previous != current:
            key = first_difference(previous, current)
            raise ConfigError(
                f"run folder {out} holds a run with a different config (first difference: {key}); "
                "choose another --out or delete that folder."
            )
    elif any(out.iterdir()):
        raise ConfigError(f"run folder {out} is not empty and holds no autocomp run; choose another --out.")


def claim_run_folder(out: Path, config: RunConfig) -> None:
    """Create ``out`` and record the config that owns it (call after `check_run_folder`)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / CONFIG_NAME, yaml.safe_dump(config.to_dict(), sort_keys=False))
