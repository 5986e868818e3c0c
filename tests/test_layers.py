"""The import contracts (pyproject.toml, checked by `make lint`) cover every module of the engine."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import tomllib

import autocomp

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_contract_names_every_engine_module():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    engine = next(c for c in contracts if c["type"] == "forbidden" and "autocomp.app" in c["forbidden_modules"])
    modules = {f"autocomp.{m.name}" for m in pkgutil.iter_modules(autocomp.__path__)} - {"autocomp.app"}
    assert set(engine["source_modules"]) == modules
