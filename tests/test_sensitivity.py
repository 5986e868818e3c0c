"""The sensitivity profile: probes against direct scores, the guided policy against a brute force, a warm start."""

import itertools
import json
import math

import optuna
import pytest
import torch

import autocomp
from autocomp.app.config import build_config
from autocomp.app.report.record import SensitivityProfile
from autocomp.app.sensitivity import POINTS, guided_policy, measure_profile, threshold_policy
from autocomp.data import load_dataset
from autocomp.evaluate import Evaluator, EvaluatorSettings, Fidelity, accuracy
from autocomp.graph import ModelGraph
from autocomp.train import TrainSettings, train
from search_spaces import Axis, Budget, Constraint, PruneRatio, Space


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    data = load_dataset("digits", val_size=200, seed=0)
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    train(model, data.train, TrainSettings(epochs=2, batch_size=64, lr=0.1), label="digits baseline")
    model.eval()
    x = data.example_input()
    space = Space.from_graph(ModelGraph(model, x), [Axis(PruneRatio(0.2), "stage")])
    return data, model, space


def test_each_probe_is_the_bn_recalibrated_score_of_that_decision_lowered_alone(digits):
    data, model, space = digits
    settings = EvaluatorSettings(fidelity=Fidelity("bn"), bn_batches=2, batch_size=128, val_examples=200)
    scorer = Evaluator(model, data.example_input(), data.train, data.val, settings)
    profile = measure_profile(space, scorer)
    assert list(profile.probes) == [d.name for d in space.decisions]
    highest = space.to_params(space.largest())
    check = Evaluator(model, data.example_input(), data.train, data.val, settings)
    assert profile.reference == accuracy(check.build(space.largest()), data.val)
    decision = space.decisions[-1]
    (value, score), *_ = profile.probes[decision.name]
    low, high = decision.dim.low, decision.dim.high
    assert value == pytest.approx(low + POINTS[0] * (high - low))
    lowered = space.to_policy({**highest, decision.name: value})
    assert score == accuracy(check.build(lowered), data.val)  # compressed and recalibrated another time
    assert all(-1 <= drop <= 1 for drops in profile.drops().values() for drop in drops)


def test_the_guided_policy_has_the_smallest_largest_drop_the_budget_allows(digits):
    data, model, space = digits
    graph = ModelGraph(model, data.example_input())
    budget = Budget(graph, [Constraint.create("macs", 0.5, True, autocomp.measure(model, data.example_input()))])
    names = [d.name for d in space.decisions]
    values = {d.name: [d.dim.low + p * (d.dim.high - d.dim.low) for p in POINTS] for d in space.decisions}
    drop = {
        (name, value): (index + 1) * 0.01 * (rank + 1)
        for index, name in enumerate(names)
        for rank, value in enumerate(values[name])
    }
    profile = SensitivityProfile(0.9, {name: tuple((v, 0.9 - drop[name, v]) for v in values[name]) for name in names})
    drop = {(name, value): profile.reference - score for name in names for value, score in profile.probes[name]}
    highest = space.to_params(space.largest())
    best = math.inf
    for combo in itertools.product(*[[None, *values[name]] for name in names]):  # None: the decision at its highest
        params = {**highest, **{name: value for name, value in zip(names, combo) if value is not None}}
        if budget.feasible(space.to_policy(params)):
            best = min(
                best, max((drop[name, value] for name, value in zip(names, combo) if value is not None), default=0)
            )
    assert best < math.inf
    assert budget.feasible(threshold_policy(profile, space, best))
    assert not budget.feasible(threshold_policy(profile, space, best - 1e-9))
    assert guided_policy(profile, space, budget) == threshold_policy(profile, space, best)


def test_a_search_with_a_sensitivity_warm_start_starts_from_the_guided_policy(tmp_path):
    config = build_config(
        {
            "model": {"name": "resnet20"},
            "data": {"name": "digits", "val_size": 300},
            "baseline": {"epochs": 2, "batch_size": 64, "lr": 0.1},
            "constraints": [{"metric": "macs", "max": 0.5}],
            "space": {"keep": {"grouping": "stage"}},
            "search": {"agent": "tpe", "trials": 3, "warm_start": "sensitivity", "reference": False},
            "evaluator": {"fidelity": "bn", "bn_batches": 2, "batch_size": 128, "val_examples": 300},
            "finetune": {"epochs": 1, "batch_size": 64},
        }
    )
    result = autocomp.search(config, tmp_path)
    profile = SensitivityProfile.from_dict(json.loads((tmp_path / "sensitivity.json").read_text()))
    assert result.report.sensitivity == profile and len(profile.probes) == 3  # one decision per stage
    study = optuna.load_study(study_name="autocomp", storage=f"sqlite:///{tmp_path / 'study.db'}")
    first = min(study.trials, key=lambda t: t.number)
    assert first.user_attrs.get("warm_start") and len(study.trials) == 3 == result.report.trials
    from autocomp.app.runners.context import prepare

    setup = prepare(config)
    guided = setup.budget.project(setup.space, guided_policy(profile, setup.space, setup.budget), "auto")
    assert first.user_attrs["policy"] == guided.to_dict()  # projected once, as an agent's proposal is
    report = (tmp_path / "report.md").read_text()
    assert "## Sensitivity profile" in report and (tmp_path / "sensitivity.png").is_file()
