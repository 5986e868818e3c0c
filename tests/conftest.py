"""Shared fixtures: threads kept to the machine's two cores, baselines cached in a temp folder."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Baselines trained by tests never land in (or come from) the user's cache."""
    monkeypatch.setenv("AUTOCOMP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
