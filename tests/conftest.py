"""Shared fixtures: threads kept to the machine's two cores, baselines cached in a temp folder, whole models timed by
their pass counts alone."""

from __future__ import annotations

import sys

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Baselines trained by tests never land in (or come from) the user's cache."""
    monkeypatch.setenv("AUTOCOMP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _latency_by_pass_counts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole models are timed by the target's pass counts, without the time floor that steadies figures on a loaded
    machine (tests check what is measured; test_latency_meter checks the floor itself)."""
    if not request.module.__name__.endswith("test_latency_meter"):
        from autocomp.cost import latency

        monkeypatch.setattr(latency, "WHOLE_MODEL_SECONDS", 0.0)


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """``user_module(name, source)``: a module importable from the working directory, as a user's project folder has
    it; forgotten again after the test."""
    names = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.chdir(tmp_path)
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)
