"""`autocomp cost` and `autocomp search --dry-run`: what a model costs, what a search would search, nothing written."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from typer.testing import CliRunner

import autocomp
from autocomp.app.cli import app
from autocomp.app.config import build_config
from autocomp.app.inspection import layer_costs, model_cost, preview_search
from autocomp.graph import ModelGraph


@pytest.fixture
def saved_resnet20(tmp_path):
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval()
    x = torch.zeros(1, 1, 28, 28)
    autocomp.save(model, tmp_path / "model.pt", x)
    return model, x, tmp_path / "model.pt"


def test_the_layer_table_counts_macs_as_the_papers_do(saved_resnet20):
    model, x, _ = saved_resnet20
    rows, whole = layer_costs(model, x)
    assert whole == []
    assert rows[0].name == "conv1" and rows[0].macs == 16 * 1 * 3 * 3 * 28 * 28  # by hand: out x in x k x k x H x W
    assert rows[-1].kind == "linear" and rows[-1].macs == 64 * 10
    assert sum(row.macs for row in rows) == model_cost(model, x, latency=False).macs == autocomp.measure(model, x).macs
    assert len(rows) == len(ModelGraph(copy.deepcopy(model), x).layers)


def test_cost_prints_the_table_and_the_totals_of_a_saved_model(saved_resnet20):
    model, x, path = saved_resnet20
    result = CliRunner().invoke(app, ["cost", str(path), "--latency", "--threads", "1"], terminal_width=200)
    assert result.exit_code == 0, result.output
    total = autocomp.measure(model, x)
    assert f"MACs {total.macs:,}" in result.output and f"params {total.params:,}" in result.output
    assert "112,896" in result.output and "latency" in result.output
    assert all(name in result.output for name, _ in model.named_modules() if name.endswith("conv2"))  # whole, not cut
    missing = CliRunner().invoke(app, ["cost", str(path.parent / "none.pt")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_dry_run_describes_the_space_and_budget_and_writes_nothing(tmp_path, monkeypatch):
    config = {
        "model": {"name": "resnet20"},
        "data": {"name": "digits", "val_size": 300},
        "constraints": [{"metric": "macs", "max": 0.5}],
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    preview = preview_search(build_config(config))
    assert preview.kinds == {"keep": preview.decisions} and preview.size == "continuous"
    assert preview.smallest_usage < 1 and preview.baseline.macs > 0
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["search", "--config", "run.yaml", "--dry-run"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"{preview.decisions} decisions" in result.output and f"{preview.baseline.macs:,} MACs" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, nothing trained


def test_a_discrete_space_counts_its_policies():
    config = build_config(
        {
            "model": {"name": "resnet20"},
            "data": {"name": "digits", "val_size": 300},
            "space": {"keep": None, "width": {"choices": [0.5, 0.75, 1.0]}, "resolution": {"choices": [0.75, 1.0]}},
        }
    )
    assert preview_search(config).size == "6 policies"  # 3 widths x 2 resolutions
