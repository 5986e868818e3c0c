"""The README's own-model example, run command by command as a new user runs it (in a copy of examples/own_model)."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import autocomp
from autocomp.app.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_model"
MARKER = "<!-- own-model-example"


def readme_blocks() -> tuple[list[str], str]:
    """The example's shell commands (comments dropped) and the YAML block that follows them in the README."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(MARKER) :]
    commands = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    config = re.search(r"```yaml\n(.*?)```", after, re.S).group(1)
    lines = [line.split("#", 1)[0].strip() for line in commands.splitlines()]
    return [line for line in lines if line], config


def test_the_readme_shows_the_example_config_as_it_is():
    _, shown = readme_blocks()
    config = yaml.safe_load((EXAMPLE / "mynet.yaml").read_text())
    for section, values in yaml.safe_load(shown).items():
        assert {key: config[section][key] for key in values} == values


@pytest.mark.slow
def test_the_readme_own_model_example_runs_to_an_exported_model(tmp_path, monkeypatch):
    project = tmp_path / "own_model"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("images", "runs", "deploy", "*.pt", "__pycache__"))
    commands, _ = readme_blocks()
    assert commands[0] == "cd examples/own_model"
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))  # as `python prepare.py` puts its folder first
    try:
        outputs = run_commands(commands[1:])
        check_results(project, outputs)
    finally:
        sys.modules.pop("mynet", None)


def run_commands(commands: list[str]) -> list[str]:
    """Each command in this process (the same entry points, without a new interpreter's start-up each time)."""
    outputs = []
    for command in commands:
        program, *args = shlex.split(command)
        if program == "python":
            runpy.run_path(args[0], run_name="__main__")
            continue
        assert program == "autocomp"
        done = CliRunner().invoke(app, args, terminal_width=200)
        assert done.exit_code == 0, f"{command}\n{done.output[-3000:]}"
        outputs.append(done.output)
    return outputs


def check_results(project: Path, outputs: list[str]) -> None:
    dry_run, _, cost, _ = outputs
    assert "smallest policy" in dry_run and "nothing was trained or written" in dry_run
    report = json.loads((project / "runs/mynet/report.json").read_text())
    assert report["model"] == "mynet:make_net" and report["data"] == "image_folder"
    assert report["best"]["macs"] <= 0.4 * report["baseline"]["macs"]
    baseline = report["baseline"]["test_accuracy"]
    assert baseline > 0.9  # the user's own weights, not an untrained net: the checkpoint was used
    assert report["best"]["test_accuracy"] > baseline - 0.1
    assert f"MACs {report['best']['macs']:,} " in cost  # the cost command counts the rebuilt model as the search did
    # the exported program and the trusted rebuild compute what the saved model computes
    x = torch.randn(5, 1, 8, 8)
    program = torch.export.load(project / "deploy/model.pt2").module()
    rebuilt = autocomp.load(project / "deploy/model.pt", trust_factory="mynet:make_net")
    with torch.no_grad():
        assert torch.allclose(program(x), rebuilt(x), atol=1e-4)
    assert sum(m.out_channels for m in rebuilt.modules() if isinstance(m, torch.nn.Conv2d)) < 32 + 64 + 64
