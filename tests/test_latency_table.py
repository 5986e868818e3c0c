"""Measured latency on a target and the per-layer lookup table that predicts it (issue 7)."""

import json
import re

import pytest
import torch
from torch import nn

import autocomp
from autocomp import ConfigError
from autocomp.compress import Compressor
from autocomp.cost import LatencyTarget, measure_latency_ms
from autocomp.graph import ModelGraph
from autocomp.latency_table import ENTRY_ROUNDS, LatencyTable
from autocomp.policy import LayerDecision, Policy

QUICK = LatencyTarget(threads=1, warmup=1, repeats=3)
"""Short timings, where only the table's bookkeeping is tested."""


def tiny(width: int = 16) -> tuple[nn.Module, torch.Tensor]:
    """Conv, depthwise conv, 1x1 conv, pooling, linear: every kind of layer the table knows, in milliseconds."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, groups=width, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 8, 1),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 4),
    )
    return model.eval(), torch.randn(1, 3, 8, 8)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"device": "tpu"}, "'tpu'"),
        ({"device": "cuda:0"}, "'cuda:0'"),
        ({"threads": 0}, "threads must be a positive integer or None, not 0."),
        ({"threads": 1.5}, "threads must be a positive integer or None, not 1.5."),
        ({"batch_size": 0}, "batch_size must be a positive integer, not 0."),
        ({"batch_size": True}, "batch_size must be a positive integer, not True."),
        ({"warmup": -1}, "warmup must be a whole number >= 0, not -1."),
        ({"repeats": 0}, "repeats must be a positive integer, not 0."),
    ],
)
def test_bad_targets_are_refused_naming_the_value(options, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        LatencyTarget(**options)


def test_cuda_is_refused_in_one_sentence_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'cuda' is not available.*allowed here: 'cpu'"):
        LatencyTarget(device="cuda")


def test_the_key_names_the_target_safely_and_ignores_the_timing_effort():
    key = LatencyTarget(threads=1, batch_size=4).key()
    assert re.fullmatch(r"[a-z0-9.-]+", key) and "-t1-b4-" in key
    assert key != LatencyTarget(threads=2, batch_size=4).key() != LatencyTarget(threads=1).key()
    assert LatencyTarget(threads=1, batch_size=4, warmup=0, repeats=3).key() == key
    assert LatencyTarget().used_threads == torch.get_num_threads()
    assert "1 threads, batch 4" in LatencyTarget(threads=1, batch_size=4).describe()


def test_measuring_restores_threads_and_modes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).train()
    threads = torch.get_num_threads()
    milliseconds = measure_latency_ms(model, torch.randn(1, 3, 16, 16), LatencyTarget(threads=1, batch_size=3))
    assert milliseconds > 0 and torch.get_num_threads() == threads and model.training


def test_the_cache_is_written_and_a_second_table_measures_nothing(tmp_path):
    model, x = tiny()
    policy = Policy.uniform(ModelGraph(model, x).prunable, 0.6)
    first = LatencyTable(ModelGraph(model, x), QUICK, tmp_path)
    predicted = first.predict_ms(policy)
    assert first.measurements > 0 and first.path.parent == tmp_path and first.path.name == f"{QUICK.key()}.json"
    stored = json.loads(first.path.read_text())
    assert stored["format"] == "autocomp.latency_table" and stored["entries"] and stored["calibrations"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind

    second = LatencyTable(ModelGraph(model, x), QUICK, tmp_path)
    assert second.predict_ms(policy) == predicted and second.measurements == 0


def test_the_default_cache_is_under_the_autocomp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_CACHE", str(tmp_path))
    model, x = tiny()
    assert LatencyTable(ModelGraph(model, x), QUICK).path.parent == tmp_path / "latency"


def test_tables_of_two_models_merge_into_one_file(tmp_path):
    models = [tiny(16), tiny(24)]
    for model, x in models:  # both write the same target's file
        LatencyTable(ModelGraph(model, x), QUICK, tmp_path).predict_ms(Policy())
    for model, x in models:
        again = LatencyTable(ModelGraph(model, x), QUICK, tmp_path)
        again.predict_ms(Policy())
        assert again.measurements == 0


def test_grid_points_are_their_entries_and_read_nothing_else(tmp_path):
    model, x = tiny()
    graph = ModelGraph(model, x)
    table = LatencyTable(graph, QUICK, tmp_path, steps=4)
    full = table.layer_ms(Policy())
    assert table.measurements == ENTRY_ROUNDS * len(graph.layers)  # one entry per layer, at its full size
    entries = set(json.loads(table.path.read_text())["entries"].values())
    assert set(full.values()) <= entries

    half = Policy.uniform(
        graph.prunable, 0.5
    )  # grid points of steps=4: 16 -> 8 of (1, 4, 8, 12, 16), 8 -> 4 of (1, 2, 4, 6, 8)
    assert graph.kept_channels(half) == [8, 4]
    table.measurements = 0
    halved = table.layer_ms(half)
    assert table.measurements == ENTRY_ROUNDS * len(graph.layers)  # all four layers changed size
    assert set(halved.values()) <= set(json.loads(table.path.read_text())["entries"].values())


def test_between_grid_points_the_prediction_lies_between_their_entries(tmp_path):
    model, x = tiny()
    graph = ModelGraph(model, x)
    table = LatencyTable(graph, QUICK, tmp_path, steps=4)
    at = {keep: table.layer_ms(Policy.uniform(graph.prunable, keep)) for keep in (0.5, 0.75)}
    between = table.layer_ms(Policy.uniform(graph.prunable, 10 / 16))
    depthwise = "2"
    low, high = sorted((at[0.5][depthwise], at[0.75][depthwise]))
    assert low <= between[depthwise] <= high  # linear along the depthwise diagonal


def test_policies_with_bits_are_refused(tmp_path):
    model, x = tiny()
    table = LatencyTable(ModelGraph(model, x), QUICK, tmp_path)
    with pytest.raises(ConfigError, match=r"'0' 8-bit weights.*floating-point models only"):
        table.predict_ms(Policy({"0": LayerDecision(weight_bits=8)}))
    assert table.measurements == 0


def test_after_build_predictions_are_arithmetic_and_cover_resolution_and_low_rank(tmp_path):
    model, x = tiny()
    graph = ModelGraph(model, x)
    table = LatencyTable(graph, QUICK, tmp_path, steps=2)
    table.build(resolutions=(1.0, 0.5), rank_schemes=("pair", "separable"))
    built = table.measurements
    assert built > 0
    policies = [
        Policy.uniform(graph.prunable, 0.3),
        Policy(
            {
                "0": LayerDecision(keep=0.6, rank=0.5),
                "2": LayerDecision(keep=0.6),
                "4": LayerDecision(keep=0.4, rank=0.3, rank_scheme="separable"),
                "7": LayerDecision(rank=0.5),
            },
            resolution=0.5,
        ),
    ]
    for policy in policies:
        assert table.predict_ms(policy) > 0
    assert table.measurements == built


def test_low_rank_layers_are_predicted_as_their_two_factors(tmp_path):
    model, x = tiny()
    graph = ModelGraph(model, x)
    table = LatencyTable(graph, QUICK, tmp_path, steps=1)  # grids hold the ends only: every rank is interpolated
    factorized = Policy({"4": LayerDecision(rank=1.0)})
    small = Compressor(model, x)(factorized)
    assert [m.out_channels for m in small[4]] == [8, 8]  # rank 8 = full: a grid end, read exactly
    assert table.layer_ms(factorized)["4"] > 0
    assert table.measurements == ENTRY_ROUNDS * (len(graph.layers) + 1)  # one more layer: the second factor


def test_predictions_fall_with_the_keep_ratio_and_the_baseline_is_close_to_measured(tmp_path):
    model, x = autocomp.zoo.create("resnet20", num_classes=10, in_channels=3).eval(), torch.randn(1, 3, 32, 32)
    graph = ModelGraph(model, x)
    target = LatencyTarget(threads=1)
    keeps = (1.0, 0.6, 0.25)
    for attempt in range(3):  # load on a shared machine only slows a timing: a fresh table in a quieter moment
        measured = min(measure_latency_ms(model, x, target) for _ in range(3))
        table = LatencyTable(graph, target, tmp_path / str(attempt), steps=2)
        predicted = [table.predict_ms(Policy.uniform(graph.prunable, keep)) for keep in keeps]
        measured = min(measured, *(measure_latency_ms(model, x, target) for _ in range(3)))
        if predicted[0] == pytest.approx(measured, rel=0.35):
            break
    assert predicted[0] > predicted[1] > predicted[2] > 0
    assert predicted[0] == pytest.approx(measured, rel=0.35)


def test_a_bad_grid_and_a_foreign_cache_file(tmp_path):
    model, x = tiny()
    with pytest.raises(ConfigError, match="steps=0 is not allowed"):
        LatencyTable(ModelGraph(model, x), QUICK, tmp_path, steps=0)
    (tmp_path / f"{QUICK.key()}.json").write_text('{"format": "something else", "entries": {"x": 1}}')
    table = LatencyTable(ModelGraph(model, x), QUICK, tmp_path)
    assert table.predict_ms(Policy()) > 0 and table.measurements > 0  # nothing read from a file that is not a table
    assert json.loads(table.path.read_text())["format"] == "autocomp.latency_table"
