"""Imports of what users name (``package.module:attribute``: their own model and data factories) and of the optional
packages a feature needs (`require`: the pip extra that installs each, named in one sentence)."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from autocomp.errors import ConfigError

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""``package.module:attribute`` (the attribute may be dotted: ``module:Class.create``)."""


def import_object(path: str, what: str) -> object:
    """The object at ``path``, its module imported with the working directory on ``sys.path`` (as uvicorn does)."""
    if not isinstance(path, str) or not IMPORT_PATH.fullmatch(path):
        raise ConfigError(f"{what} {path!r} is not of the form module.path:attribute.")
    module_name, _, attributes = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{what} {path!r} cannot be imported ({err}).") from None
    for attribute in attributes.split("."):
        if not hasattr(target, attribute):
            raise ConfigError(
                f"{what} {path!r} names nothing: {getattr(target, '__name__', module_name)} has no "
                f"attribute {attribute!r}."
            )
        target = getattr(target, attribute)
    return target


def source_digest(path: str) -> str:
    """The sha256 of the source file of the (imported) module ``path`` names; "" when it has none."""
    module = sys.modules.get(path.partition(":")[0])
    source = getattr(module, "__file__", None)
    if source is None or not os.path.isfile(source):
        return ""
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``module`` imported, or `ConfigError` naming ``feature``, the missing package and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        if err.name is None or err.name.split(".")[0] != package:
            raise  # the package is there but broken: its own error says why
        raise ConfigError(
            f"{feature} needs the package {package!r}, which is not installed; install it with "
            f"pip install 'autocomp[{extra}]'."
        ) from None
