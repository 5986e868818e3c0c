"""One rule over every command: an error before work starts prints one line, exits 2, and leaves every byte of an
existing run folder and of the baseline cache as it was."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from postgres_server import free_port
from test_cli import GOOD, snapshot
from typer.testing import CliRunner

from autocomp.app.cli import app
from autocomp.policy import Policy

FINISHED = {**GOOD, "finetune": {**GOOD["finetune"], "max_steps": 2}}  # the CLI tests' run, shorter


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished run folder, its baseline in the cache, and the files the refused commands are given."""
    root = tmp_path_factory.mktemp("refusals")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOCOMP_CACHE", str(root / "cache"))
        config = root / "run.yaml"
        config.write_text(yaml.safe_dump(FINISHED))
        finished = CliRunner().invoke(app, ["--quiet", "search", "--config", str(config), "--out", str(root / "run")])
        assert finished.exit_code == 0, finished.output
    other = root / "other.yaml"
    other.write_text(yaml.safe_dump({**FINISHED, "search": {"agent": "tpe", "trials": 2, "reference": False}}))
    nan_alpha = root / "nan.yaml"
    nan_alpha.write_text(yaml.safe_dump(FINISHED).replace("max_steps: 2", "max_steps: 2\n  alpha: .nan"))
    (root / "a-file").write_text("not a folder")
    policy = Policy.from_dict(json.loads((root / "run" / "policy.json").read_text())).to_dict()
    first = next(iter(policy["layers"].values()))
    first["keep"] = math.nan
    (root / "nan-policy.json").write_text(json.dumps(policy))
    torch.save(torch.nn.Linear(2, 2), root / "pickled.pt")
    tune = root / "tune.yaml"
    tune.write_text(
        yaml.safe_dump({"config": str(config), "params": {"evaluator.bn_batches": {"choices": [1, 2]}}, "trials": 2})
    )
    (root / "empty").mkdir()
    return {
        "root": root,
        "run": root / "run",
        "cache": root / "cache",
        "config": config,
        "other": other,
        "nan": nan_alpha,
        "file": root / "a-file",
        "policy": root / "nan-policy.json",
        "pickled": root / "pickled.pt",
        "tune": tune,
        "empty": root / "empty",
    }


CASES = {  # command line (names of `world` in braces) -> the start of its one line
    "search, another config in the run folder": (
        "search --config {other} --out {run}",
        "run folder {run} holds a run with a different config",
    ),
    "search, --out under a file": (
        "search --config {config} --out {file}/run",
        "run folder {file}/run cannot be created: {file} is a file",
    ),
    "search, --out a file": ("search --config {config} --out {file}", "run folder {file} exists and is not a folder"),
    "search, a Ray address where nothing answers": (
        "search --config {config} --out {run} --runner ray --address 127.0.0.1:{port}",
        "runner.address '127.0.0.1:{port}': no Ray cluster answers there",
    ),
    "search, a GPU this machine lacks": (
        "search --config {config} --out {run} --device cuda:0",
        "device 'cuda:0' is not available on this machine",
    ),
    "search, a weight that is not a number": (
        "search --config {nan} --out {run}",
        "config file {nan}: config key 'finetune.alpha' = nan is not allowed: Input should be a finite number",
    ),
    "search, a storage whose server does not answer": (
        "search --config {config} --out {run} --storage postgresql://autocomp:secret@127.0.0.1:{port}/db",
        "cannot reach the study storage 'postgresql://autocomp:***@127.0.0.1:{port}/db'",
    ),
    "search, a storage whose driver is not installed": (
        "search --config {config} --out {run} --storage mysql://user@127.0.0.1/db",
        "storage 'mysql://user@127.0.0.1/db' needs the Python module 'MySQLdb'",
    ),
    "tune, a storage whose server does not answer": (
        "tune {tune} --out {root}/tuned --storage postgresql://autocomp@127.0.0.1:{port}/db",
        "cannot reach the study storage 'postgresql://autocomp@127.0.0.1:{port}/db'",
    ),
    "worker, a bad trial budget": (
        "worker --config {config} --storage {root}/journal.log --set search.trials=0",
        "config file {config}: config key 'search.trials' = 0 is not allowed",
    ),
    "tune, into a run folder": ("tune {tune} --out {run}", "tune folder {run} is not empty and holds no tuning"),
    "evaluate, a keep ratio that is not a number": (
        "evaluate --config {config} --policy {policy}",
        "keep ratio nan is not a number",
    ),
    "cost, a pickled module": (
        "cost {pickled}",
        "model file {pickled} holds pickled Python objects "
        "(torch.nn.modules.linear.Linear), which autocomp does not load",
    ),
    "report, a folder without a report": ("report {empty}", "{empty} holds no report.json"),
    "export, --out an existing file": ("export {run} --out {file}", "export folder {file} exists and is not a folder"),
    "export, --out the run folder itself": ("export {run} --out {run}", "{run}/model.pt exists already"),
    "dashboard, a folder without a study": ("dashboard {empty}", "{empty} holds no study"),
}


@pytest.mark.parametrize("case", CASES)
def test_an_error_before_work_starts_changes_no_byte_of_the_run_folder_or_the_cache(world, case, monkeypatch):
    command, start = CASES[case]
    names = {name: str(path) for name, path in world.items()} | {"port": str(free_port())}
    monkeypatch.setenv("AUTOCOMP_CACHE", str(world["cache"]))
    monkeypatch.chdir(world["root"])
    before = {name: snapshot(world[name]) for name in ("run", "cache")}
    result = CliRunner().invoke(app, ["--quiet", *command.format(**names).split()])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: " + start.format(**names)), result.output
    assert {name: snapshot(world[name]) for name in ("run", "cache")} == before
    assert not any((world["root"] / name).exists() for name in ("a-file/run", "journal.log", "tuned"))
    assert os.listdir(world["empty"]) == []
