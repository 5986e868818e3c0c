"""Optional extras: each feature whose package is missing says so in one sentence naming the extra that installs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import agents
from autocomp.app.config import build_config
from autocomp.app.report.writer import write_figures
from autocomp.app.runners.dashboard import serve
from autocomp.app.runners.reachable import check_reachable
from autocomp.errors import ConfigError
from autocomp.imports import require
from tests.test_agents import tiny_setting


def missing(monkeypatch, *modules: str) -> None:
    """Make ``modules`` unimportable (an ImportError naming each), as when their extra is not installed."""
    for module in modules:
        for loaded in [name for name in sys.modules if name.startswith(f"{module}.")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, module, None)


def test_require_names_the_feature_the_package_and_the_extra(monkeypatch):
    assert require("json", "none", "reading").loads("1") == 1
    missing(monkeypatch, "matplotlib")
    with pytest.raises(ConfigError) as refused:
        require("matplotlib.pyplot", "plots", "the report's figures")
    assert str(refused.value) == (
        "the report's figures needs the package 'matplotlib', which is not installed; "
        "install it with pip install 'autocomp[plots]'."
    )


@pytest.mark.parametrize("name", ["amc", "haq"])
def test_a_layerwise_agent_without_stable_baselines3_names_the_rl_extra(monkeypatch, name):
    _graph, space, budget = tiny_setting()
    missing(monkeypatch, "stable_baselines3")
    with pytest.raises(ConfigError, match=r"autocomp\[rl\]"):
        agents.create_agent(name, space, budget, seed=0)
    assert agents.create_agent("tpe", space, budget, seed=0).ask() is not None  # the other agents need none


def test_a_ray_run_without_ray_names_the_ray_extra(monkeypatch):
    config = build_config({"model": {"name": "resnet20"}, "data": {"name": "digits"}, "runner": {"kind": "ray"}})
    missing(monkeypatch, "ray")
    with pytest.raises(ConfigError, match=r"runner.kind: ray needs the package 'ray'.*autocomp\[ray\]"):
        check_reachable(config)


def test_the_dashboard_without_optuna_dashboard_names_its_extra(monkeypatch, tmp_path):
    missing(monkeypatch, "optuna_dashboard")
    with pytest.raises(ConfigError, match=r"autocomp\[dashboard\]"):
        serve(tmp_path, 8080)


def test_figures_without_matplotlib_name_the_plots_extra(monkeypatch, tmp_path: Path):
    missing(monkeypatch, "matplotlib")
    with pytest.raises(ConfigError, match=r"autocomp\[plots\]"):
        write_figures(tmp_path, {"best": {}, "model": "m", "data": "d", "agent": "a"})
    assert list(tmp_path.iterdir()) == []
