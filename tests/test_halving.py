"""Successive halving: rung scores equal to the single fidelities', the pruner's rule by hand, a halving search."""

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

import autocomp
from agents import create_agent
from autocomp.app.config import build_config
from autocomp.app.report.summary import run_sentence
from autocomp.app.runners.context import prepare
from autocomp.app.runners.halving import HalvingPruner
from autocomp.data import load_dataset
from autocomp.errors import ConfigError
from autocomp.evaluate import Evaluator, EvaluatorSettings, Fidelity, ProxyTraining
from autocomp.graph import ModelGraph
from autocomp.train import TrainSettings, train
from search_spaces import Axis, Budget, Constraint, PruneRatio, Space

RUNGS = (0, 4, 12)


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    data = load_dataset("digits", val_size=300, seed=0)
    model = autocomp.zoo.create("vgg_small", num_classes=10, in_channels=1, width_mult=0.25)
    train(model, data.train, TrainSettings(epochs=3, batch_size=64, lr=0.05), label="digits baseline")
    return data, model.eval()


def score(digits, fidelity: Fidelity, report=None):
    data, model = digits
    settings = EvaluatorSettings(
        fidelity=fidelity, proxy=ProxyTraining(batch_size=64, lr=0.02), bn_batches=2, batch_size=128, val_examples=300
    )
    evaluator = Evaluator(model, data.example_input(), data.train, data.val, settings)
    policy = autocomp.Policy.uniform(autocomp.prunable_layers(model, data.example_input()), 0.5)
    return evaluator.score(policy, report)


def test_each_rungs_score_is_the_single_fidelity_score_of_that_many_steps(digits):
    halving = score(digits, Fidelity("halving", rungs=RUNGS))
    assert [step for step, _ in halving.curve] == list(RUNGS)
    assert halving.curve[0][1] == score(digits, Fidelity("bn")).accuracy
    assert halving.curve[1][1] == score(digits, Fidelity("proxy", steps=4)).accuracy
    assert halving.stopped_at is None and halving.accuracy == halving.curve[-1][1]
    # from the second rung on the fine-tune restarts its cosine: not the 12-step proxy's single cosine
    single = score(digits, Fidelity("proxy", steps=12)).accuracy
    assert 0.0 < halving.accuracy <= 1.0 and 0.0 < single <= 1.0


def test_a_reporter_stops_a_candidate_at_a_rung_and_never_at_the_last(digits):
    seen = []

    def stop_at_four(step: int, accuracy: float) -> bool:
        seen.append(step)
        return step != 4

    stopped = score(digits, Fidelity("halving", rungs=RUNGS), stop_at_four)
    assert seen == [0, 4] and stopped.stopped_at == 4
    assert [step for step, _ in stopped.curve] == [0, 4] and stopped.accuracy == stopped.curve[-1][1]
    seen.clear()
    finished = score(digits, Fidelity("halving", rungs=RUNGS), lambda step, accuracy: seen.append(step) is None)
    assert seen == [0, 4] and finished.stopped_at is None  # the last rung's score is the result, not a report


def test_rungs_must_rise_from_zero_or_more():
    for rungs in [(5,), (0, 10, 10), (-1, 5)]:
        with pytest.raises(ConfigError, match=r"fidelity rungs \[.*\] are not allowed"):
            Fidelity("halving", rungs=rungs)


def study_with(scores_at_rung: dict[int, list[float]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for index, (step, scores) in enumerate(scores_at_rung.items()):
        for number, value in enumerate(scores):
            study.add_trial(
                optuna.trial.create_trial(
                    params={"x": index + number / 100},
                    distributions={"x": FloatDistribution(0, 10)},
                    state=TrialState.PRUNED,
                    intermediate_values={step: value},
                )
            )
    return study


def running(step: int, value: float, x: float = 5.0) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params={"x": x},
        distributions={"x": FloatDistribution(0, 10)},
        intermediate_values={step: value},
    )


def test_the_pruner_keeps_the_best_third_of_the_scores_at_a_rung():
    study = study_with({0: [0.5, 0.6, 0.7, 0.8, 0.9]})
    pruner = HalvingPruner((0, 50, 200), reduction=3)
    # six scores at rung 0 with this one: two go on, so a score goes on while fewer than two are above it
    assert pruner.prune(study, running(0, 0.85)) is False
    assert pruner.prune(study, running(0, 0.8)) is False  # ties go on
    assert pruner.prune(study, running(0, 0.75)) is True
    assert pruner.prune(study, running(50, 0.1)) is False  # no one scored at 50 yet: the best so far
    assert pruner.prune(study, running(200, 0.0)) is False  # the last rung stops nothing
    assert pruner.prune(study, running(7, 0.0)) is False  # not a rung


def test_the_first_candidates_at_a_rung_go_on_only_as_the_best_so_far():
    pruner = HalvingPruner((0, 50), reduction=3)
    assert pruner.prune(study_with({0: []}), running(0, 0.1)) is False
    assert pruner.prune(study_with({0: [0.5]}), running(0, 0.4)) is True
    assert pruner.prune(study_with({0: [0.5, 0.6]}), running(0, 0.55)) is True
    assert pruner.prune(study_with({0: [0.5, 0.6]}), running(0, 0.65)) is False


def test_brackets_compare_their_own_candidates_from_their_own_first_rung():
    pruner = HalvingPruner((0, 50, 200), reduction=3, brackets=2)
    trials = {x: running(0, 0.0, x) for x in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)}
    brackets = {x: pruner.bracket(trial) for x, trial in trials.items()}
    assert set(brackets.values()) == {0, 1}  # both brackets in use
    late = next(x for x, b in brackets.items() if b == 1)
    study = study_with({0: [0.9, 0.95, 0.99]})
    assert pruner.prune(study, trials[late]) is False  # bracket 1 is first compared at rung 50
    early = next(x for x, b in brackets.items() if b == 0)
    others = [pruner.bracket(t) for t in study.trials]
    expected = sum(b == 0 for b in others) >= 1  # worst of its bracket unless its bracket is empty so far
    assert pruner.prune(study, trials[early]) is expected


def test_halving_is_the_default_and_refuses_a_second_early_stopper():
    config = build_config({})
    assert config.evaluator.fidelity == "halving" and config.evaluator.level() == Fidelity()
    with pytest.raises(ConfigError, match="pruner median does not apply to fidelity halving"):
        build_config({"evaluator": {"pruner": "median"}})
    with pytest.raises(ConfigError, match="brackets 3 is more than the 2 rungs"):
        build_config({"evaluator": {"brackets": 3}})


def test_a_tpe_agent_learns_a_stopped_candidate_by_its_furthest_rung(digits):
    data, model = digits
    x = data.example_input()
    graph = ModelGraph(model, x)
    space = Space.from_graph(graph, [Axis(PruneRatio(0.2), "stage")])
    budget = Budget(graph, [Constraint("macs", 0.5 * autocomp.measure(model, x).macs)])
    agent = create_agent("tpe", space, budget)
    proposal = agent.ask()
    partial = autocomp.evaluate.EvalResult(
        0.4, autocomp.measure(model, x), 1.0, curve=((0, 0.3), (4, 0.4)), stopped_at=4
    )
    agent.tell(proposal, partial)
    trial = agent._study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.intermediate_values == {0: 0.3, 4: 0.4}


def test_a_halving_search_stops_candidates_at_the_rungs_and_keeps_complete_ones(tmp_path):
    config = build_config(
        {
            "model": {"name": "resnet20"},
            "data": {"name": "digits", "val_size": 300},
            "baseline": {"epochs": 3, "batch_size": 64, "lr": 0.1},
            "constraints": [{"metric": "macs", "max": 0.5}],
            "search": {"agent": "random", "trials": 8},
            "evaluator": {
                "rungs": [0, 3, 8],
                "proxy": {"batch_size": 64},
                "bn_batches": 2,
                "batch_size": 128,
                "val_examples": 300,
            },
            "finetune": {"epochs": 1, "batch_size": 64},
            "threads": 1,
        }
    )
    threads = torch.get_num_threads()
    result = autocomp.search(config, tmp_path)
    assert torch.get_num_threads() == threads == 2  # the search's one thread is not left set in the process
    study = optuna.load_study(study_name="autocomp", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    reference = [t for t in trials if t.user_attrs.get("reference")]
    assert len(trials) == 9 and len(reference) == 1 and result.report.trials == 8  # the reference is not a trial
    pruner = HalvingPruner((0, 3, 8))
    for index, trial in enumerate(trials):
        steps = sorted(trial.intermediate_values)
        if trial.state == TrialState.PRUNED:
            assert steps in ([0], [0, 3]) and trial.user_attrs["stopped_at"] == steps[-1]
        else:
            assert trial.state == TrialState.COMPLETE and steps == [0, 3, 8]
            assert trial.value == trial.intermediate_values[8]
        if trial in reference:
            continue  # scored to the end, whatever its rungs say
        # the rule, checked again against the trials finished before this one
        earlier = optuna.create_study(direction="maximize")
        for other in trials[:index]:
            earlier.add_trial(other)
        for step in steps[:-1] if trial.state == TrialState.COMPLETE else steps:
            went_on = step != steps[-1] or trial.state == TrialState.COMPLETE
            assert pruner.prune(earlier, running(step, trial.intermediate_values[step])) is not went_on
    states = [t.state for t in trials if t not in reference]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    assert result.report.pruned_trials == states.count(TrialState.PRUNED)
    assert result.report.evaluator.rungs == tuple(
        (rung, sum(rung in t.intermediate_values for t in trials if t not in reference)) for rung in (0, 3, 8)
    )
    # the reference is what the uniform agent evaluates, and the report gives the best's lead over it
    setup = prepare(config)
    uniform = create_agent("uniform", setup.space, setup.budget)
    assert reference[0].user_attrs["policy"] == uniform.project(uniform.ask()).to_dict()
    assert result.report.reference is not None and result.report.reference.trial == reference[0].number
    assert result.report.reference.val_accuracy == reference[0].value
    lead = 100 * (result.report.best.val_accuracy - reference[0].value)
    assert f"Lead over uniform pruning to the same budget (trial {reference[0].number}" in run_sentence(result.report)
    assert f"{lead:+.2f} pt" in (tmp_path / "report.md").read_text()
    assert result.report.best.val_accuracy >= reference[0].value  # the best search score is at least the reference's
