"""The typed report: report.json written and read back by one module, refused in one sentence when it is not one this
autocomp wrote, and worded once for the terminal and report.md."""

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from autocomp.app import search_loop
from autocomp.app.cli import app
from autocomp.app.report import Finalist, Report, load_report, save_report, write_report
from autocomp.app.report.record import (
    BestRecord,
    ConstraintRecord,
    EvaluatorRecord,
    FrontPoint,
    HistoryPoint,
    LatencySettings,
    ModelRecord,
    RuntimeRecord,
    SpaceRecord,
)
from autocomp.errors import ConfigError

GOOD = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "random", "trials": 2, "reference": False},
}

REPORT = Report(
    model="resnet20",
    data="digits",
    agent="tpe",
    constraints=(
        ConstraintRecord("macs", 1_234_567.5, 0.5, True, 1_200_001, 2_469_135),
        ConstraintRecord("latency_ms", 4.0, 4.0, False, 3.5, 6.25),
    ),
    space=SpaceRecord(12, "scale", ("prune",)),
    trials=3,
    probe_trials=0,
    pareto_front=(FrontPoint(0, 0.9, 0.95), FrontPoint(2, 0.93, 0.99)),
    failed_trials=1,
    pruned_trials=0,
    cached_trials=0,
    evaluator=EvaluatorRecord("proxy", "10-step proxy fine-tune", 1.25),
    wall_seconds=61.4,
    runtime=RuntimeRecord("cpu", "the CPU (2 threads), fp32", "fp32", 900.5, None, 2100.0),
    latency=LatencySettings(64, 2, "cpu"),
    baseline=ModelRecord(0.9512, 0.9433, 2_469_135, 272_474, 1_089_896, 8_719_168, 2_528_394_240, 12.34),
    history=(HistoryPoint(0, 0.9, True, 0.95), HistoryPoint(2, 0.93, True, 0.99)),
    best=BestRecord(
        0.93,
        0.9212,
        1_200_001,
        130_000,
        520_000,
        4_160_000,
        1_228_801_024,
        6.17,
        trial=2,
        finetuned_val_accuracy=0.9401,
        channels={"conv1": (8, 16), "layer1.0.conv1": (16, 16)},
        bits={"conv1": (8, 8), "fc": (4, None)},
    ),
    finalists=(Finalist(2, 0.93, 0.9401), Finalist(0, 0.9, 0.92)),
    config={"model": {"name": "resnet20"}, "search": {"agent": "tpe", "trials": 3}},
)


def test_a_written_report_reads_back_equal(tmp_path):
    save_report(tmp_path, REPORT)
    assert load_report(tmp_path) == REPORT
    assert json.loads((tmp_path / "report.json").read_text())["best"]["channels"] == {
        "conv1": [8, 16],
        "layer1.0.conv1": [16, 16],
    }  # the file's format: plain JSON lists


def broken(data: dict, path: str, value: object) -> dict:
    """``data`` with the key at the dotted ``path`` set to ``value`` (deleted when ``value`` is ...)."""
    data = json.loads(json.dumps(data))
    *parents, last = path.split(".")
    holder = data
    for key in parents:
        holder = holder[key]
    if value is ...:
        del holder[last]
    else:
        holder[last] = value
    return data


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not valid JSON (Expecting property name enclosed in double quotes at line 1)"),
        ("[1, 2]", 'is not an autocomp report (it has no "version")'),
        (json.dumps(broken(REPORT.to_dict(), "version", 2)), "has report version 2; this autocomp reads version 3"),
        (json.dumps(broken(REPORT.to_dict(), "finalists", ...)), "is not a report this autocomp wrote: finalists:"),
        (json.dumps(broken(REPORT.to_dict(), "best.macs", "many")), "is not a report this autocomp wrote: best.macs:"),
    ],
    ids=["not JSON", "not a mapping", "an old version", "a missing field", "a mistyped field"],
)
def test_a_file_that_is_not_a_report_is_refused_in_one_sentence_naming_it(tmp_path, text, message):
    (tmp_path / "report.json").write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_report(tmp_path)
    sentence = str(refused.value)
    assert sentence.startswith(f"report file {tmp_path / 'report.json'} {message}"), sentence
    assert sentence.endswith(".") and "\n" not in sentence and sentence.count(". ") == 0, sentence
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {sentence}"
    assert not (tmp_path / "report.md").exists()


def cells(lines: list[str], separator: str) -> list[list[str]]:
    """The cells of the table rows among ``lines`` (rows being the lines that hold ``separator``)."""
    return [[cell.strip() for cell in line.split(separator)[1:-1]] for line in lines if line.count(separator) > 2]


def test_the_terminal_summary_and_report_md_show_the_same_figures(tmp_path, monkeypatch):
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    monkeypatch.setattr(search_loop, "search", lambda config, out: search_loop.SearchResult(tmp_path, REPORT))
    printed = CliRunner().invoke(app, ["search", "--config", str(tmp_path / "good.yaml")], terminal_width=400)
    assert printed.exit_code == 0, printed.output
    write_report(tmp_path, REPORT)
    markdown = (tmp_path / "report.md").read_text().split("## Accuracy against budget use")[0]
    terminal = printed.output.replace("┃", "│")  # the header's rule is heavier
    terminal_rows = [row for row in cells(terminal.splitlines(), "│") if any(row)]
    markdown_rows = [row for row in cells(markdown.splitlines(), "|") if not set(row[1]) <= set("-:")]
    assert terminal_rows == markdown_rows and len(markdown_rows) == 1 + 7 + 2  # the header, the models, two limits
    assert ["budget: macs <= 1,234,568 (50.00% of the baseline)", "2,469,135", "1,200,001", "97.20% used"] in (
        markdown_rows
    )
    below = printed.output.split("└")[-1].split("run folder:")[0]
    caption = " ".join(line.strip() for line in below.splitlines()[1:])
    numbers = re.compile(r"\d[\d,.]*")
    assert numbers.findall(caption) == numbers.findall(markdown.splitlines()[2]) != []  # the run sentence
