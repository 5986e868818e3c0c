"""The CLI: bad input exits 2 with one clear line and leaves an existing run folder as it was."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import agents
import autocomp
from autocomp.app.cli import app
from autocomp.app.config import build_config, load_config
from autocomp.app.spaces import space_from_config
from autocomp.graph import ModelGraph

GOOD = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 1, "batch_size": 64},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "random", "trials": 2, "reference": False},
    "evaluator": {"fidelity": "bn", "bn_batches": 2, "val_examples": 100},
    "finetune": {"epochs": 1, "batch_size": 64},
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autocomp.app.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def existing_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(build_config(GOOD).to_dict()))
    (run / "report.json").write_text('{"earlier": "result"}')
    return run


def with_change(section: str, key: str, value) -> dict:
    config = {name: dict(values) if isinstance(values, dict) else values for name, values in GOOD.items()}
    config[section][key] = value
    return config


@pytest.mark.parametrize(
    "config, message",
    [
        (with_change("search", "colour", "blue"), "unknown config key 'search.colour'"),
        ({**GOOD, "constraints": [{"metric": "macs", "max": 1.5}]}, "outside (0, 1]"),
        ({**GOOD, "constraints": [{"metric": "macs", "max": 0.0}]}, "constraints.0.max"),
        ({**GOOD, "constraints": [{"metric": "joules", "max": 0.5}]}, "constraints.0.metric"),
        ({**GOOD, "space": {"keep": {"grouping": "block"}}}, "space.keep.grouping"),
        ({**GOOD, "space": {"frozen": ["conv9"]}}, "frozen layer 'conv9' is not a conv/linear layer"),
        ({**GOOD, "constraints": [{"metric": "macs", "max": 0.001}]}, "the smallest model this space reaches has macs"),
        (with_change("model", "name", "resnet21"), "unknown model 'resnet21'"),
        (with_change("search", "agent", "genius"), "unknown agent 'genius'"),
        (with_change("search", "options", {"warmup": 3}), "agent 'random' has no option 'warmup'; allowed: none"),
        (
            {**GOOD, "search": {**GOOD["search"], "agent": "amc", "options": {"reward": "loss"}}},
            "reward 'loss' is not known; allowed: error, error_log_macs, accuracy",
        ),
        (with_change("evaluator", "pruner", "median"), "pruner median does not apply to fidelity bn"),
        (with_change("evaluator", "fidelity", "fast"), "config key 'evaluator.fidelity' = 'fast' is not allowed"),
        ({**GOOD, "data": {"name": "fashion_mnist", "dir": "/nonexistent/fmnist"}}, "/nonexistent/fmnist"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_touches_nothing(tmp_path, existing_run, config, message, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    before = snapshot(existing_run)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["search", "--config", str(path), "--out", str(existing_run)])  # in-process: fast
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert snapshot(existing_run) == before


def test_a_run_folder_of_another_config_is_refused(tmp_path, existing_run):
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(with_change("search", "seed", 3)))
    before = snapshot(existing_run)
    result = run_cli("search", "--config", str(path), "--out", str(existing_run), cwd=tmp_path)
    assert result.returncode == 2  # the process's own exit code; the cases above run in-process
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "search.seed" in line and "Traceback" not in result.stderr
    assert snapshot(existing_run) == before


def test_bad_override_syntax_exits_2(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    result = run_cli("search", "--config", str(path), "--set", "search.trials", cwd=tmp_path)
    assert result.returncode == 2
    assert "key=value" in result.stderr


def test_zoo_lists_the_models(tmp_path):
    result = run_cli("zoo", cwd=tmp_path)
    assert result.returncode == 0
    assert {"resnet20", "resnet56", "mobilenet_v2", "vgg_small"} <= set(result.stdout.split())


def test_overrides_address_list_entries_and_renamed_keys_say_where_they_went():
    from autocomp import ConfigError

    config = build_config(GOOD, ["constraints.0.max=0.3", "space.frozen.0=conv1", "space.weight_bits.low=4"])
    assert config.constraints[0].max == 0.3 and config.space.frozen == ["conv1", "last"]
    assert config.space.weight_bits.low == 4 and config.space.weight_bits.high == 8
    with pytest.raises(ConfigError, match=r"override constraints\.2 names entry 2 of constraints, which has 1 entry"):
        build_config(GOOD, ["constraints.2.max=0.3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'constraint' \(renamed to constraints, a list\)\.$"):
        build_config({"constraint": {"max": 0.5}})
    with pytest.raises(
        ConfigError, match=r"^config: metric macs has more than one limit; give each metric one entry\.$"
    ):
        build_config(GOOD, ["constraints=[{metric: macs, max: 0.5}, {metric: macs, max: 0.3}]"])


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_with_a_known_model_agent_and_space(path):
    config = load_config(path)
    agents.agent_options(config.search.agent, config.search.options)
    model = autocomp.zoo.create(config.model.name, num_classes=10, in_channels=1, **config.model.kwargs)
    space = space_from_config(ModelGraph(model, torch.zeros(1, 1, 28, 28)), config.space)
    assert space.decisions


def test_every_command_has_help_with_an_example():
    from typer.testing import CliRunner

    from autocomp.app.cli import app

    runner = CliRunner()
    commands = sorted(command.name or command.callback.__name__ for command in app.registered_commands)
    assert {"search", "worker", "tune", "dashboard", "zoo"} <= set(commands)
    for command in commands:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert command == "zoo" or "Example:" in result.output, command


def test_a_quiet_search_prints_the_summary_and_nothing_else(tmp_path):
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    quiet = run_cli("-q", "search", "--config", "good.yaml", "--out", "run", "--set", "search.trials=1", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # no baseline training, search or fine-tune lines, no progress bars
    assert "MACs" in quiet.stdout and "test accuracy" in quiet.stdout and "budget: macs <=" in quiet.stdout
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["search"]["trials"] == 1
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "report.md").is_file()
