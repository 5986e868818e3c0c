"""The fast evaluator's fidelities: distillation, intermediate scores, cache, failures, repeatability."""

import math

import optuna
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch import nn
from torch.utils.data import TensorDataset

import autocomp
from autocomp.data import iterate_batches, load_dataset
from autocomp.distill import attention_loss, attention_map, attention_points
from autocomp.errors import ConfigError
from autocomp.evaluate import (
    Evaluator,
    EvaluatorSettings,
    Fidelity,
    ProxyTraining,
    kendall_tau,
)
from autocomp.evaluate import stream as stream_module
from autocomp.evaluate.stream import TrainingStream
from autocomp.train import TrainSettings, train

PROXY = Fidelity("proxy", steps=12)


@pytest.fixture(scope="module")
def digits():
    """A VGG-Small trained on digits for a few epochs: a baseline worth distilling from."""
    torch.manual_seed(0)
    data = load_dataset("digits", val_size=300, seed=0)
    model = autocomp.zoo.create("vgg_small", num_classes=10, in_channels=1, width_mult=0.25)
    train(model, data.train, TrainSettings(epochs=4, batch_size=64, lr=0.05), label="digits baseline")
    return data, model.eval()


def evaluator(digits, **settings) -> Evaluator:
    data, model = digits
    defaults = {
        "fidelity": PROXY,
        "proxy": ProxyTraining(batch_size=64, lr=0.02),
        "bn_batches": 2,
        "batch_size": 128,
        "val_examples": 300,
        "report_every": 4,
        "report_examples": 100,
    }
    return Evaluator(model, data.example_input(), data.train, data.val, EvaluatorSettings(**{**defaults, **settings}))


def half(digits, keep=0.5) -> autocomp.Policy:
    data, model = digits
    return autocomp.Policy.uniform(autocomp.prunable_layers(model, data.example_input()), keep)


def test_attention_transfer_loss_matches_a_hand_computation():
    student = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)
    teacher = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]]]])  # (1, 1, 2, 2): channel counts may differ

    def hand_map(features):
        energy = [
            sum(features[0][c][i][j] ** 2 for c in range(len(features[0]))) / len(features[0])
            for i in range(2)
            for j in range(2)
        ]
        norm = math.sqrt(sum(e * e for e in energy))
        return [e / norm for e in energy]

    s, t = hand_map(student.tolist()), hand_map(teacher.tolist())
    expected = sum((a - b) ** 2 for a, b in zip(s, t)) / 4
    loss = attention_loss([student], [attention_map(teacher)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_a_smaller_student_map_is_resized_to_the_teacher():
    teacher = attention_map(torch.rand(3, 8, 8, 8))
    loss = attention_loss([torch.rand(3, 4, 4, 4)], [teacher])
    assert loss.shape == () and loss.item() > 0


def test_attention_points_are_the_ends_of_each_resolution():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    assert attention_points(model, torch.zeros(1, 1, 28, 28)) == ["layer1", "layer2", "layer3"]
    vgg = autocomp.zoo.create("vgg_small", num_classes=10, in_channels=1, width_mult=0.25)
    assert attention_points(vgg, torch.zeros(1, 1, 32, 32)) == ["features.5", "features.12", "features.19", "features"]


def test_kendall_tau_agrees_with_scipy_with_and_without_ties():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = torch.randint(0, 6, (15,), generator=generator).tolist()
        b = torch.randint(0, 6, (15,), generator=generator).tolist()
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_the_stream_is_seeded_epochs_with_the_teachers_logits(digits, monkeypatch):
    data, model = digits
    monkeypatch.setattr(stream_module, "MEMO_EXAMPLES", 3 * 64)  # three batches kept, the rest recomputed
    stream = TrainingStream(data.train, 64, seed=5, teacher=model)
    steps = stream.steps_per_epoch + 4  # across an epoch boundary
    expected = [
        labels
        for epoch in (0, 1)
        for _, labels in iterate_batches(data.train, 64, shuffle=True, seed=5, epoch=epoch, drop_last=True)
    ][:steps]
    first = list(stream.batches(steps))
    again = list(stream.batches(steps))  # the first three from the kept batches, the rest rebuilt
    assert [torch.equal(b.labels, e) for b, e in zip(first, expected, strict=True)] == [True] * steps
    assert all(torch.equal(a.images, b.images) and torch.equal(a.logits, b.logits) for a, b in zip(first, again))
    assert [a is b for a, b in zip(first, again)] == [True] * 3 + [False] * (steps - 3)
    with torch.no_grad():
        assert torch.allclose(first[0].logits, model(first[0].images), atol=1e-6)


def test_a_proxy_fine_tune_beats_bn_recalibration_alone(digits):
    policy = half(digits, keep=0.3)
    bn = evaluator(digits, fidelity=Fidelity("bn")).score(policy)
    proxy = evaluator(digits, fidelity=Fidelity("proxy", steps=40)).score(policy)
    assert not bn.failed and not proxy.failed
    assert proxy.loss < bn.loss
    assert proxy.cost == bn.cost  # same compressed architecture


def test_identical_seeds_give_identical_scores_and_another_seed_another(digits):
    policy = half(digits)
    first = evaluator(digits, proxy=ProxyTraining(batch_size=64, lr=0.02, attention=100.0)).score(policy)
    second = evaluator(digits, proxy=ProxyTraining(batch_size=64, lr=0.02, attention=100.0)).score(policy)
    other = evaluator(digits, proxy=ProxyTraining(batch_size=64, lr=0.02, attention=100.0), seed=1).score(policy)
    assert (first.accuracy, first.loss) == (second.accuracy, second.loss)
    assert other.loss != first.loss


def test_a_cached_candidate_is_not_evaluated_again(digits, monkeypatch):
    scorer = evaluator(digits)
    calls = []
    evaluate = scorer._evaluate
    monkeypatch.setattr(scorer, "_evaluate", lambda *args: calls.append(args[0].key()) or evaluate(*args))
    policy, other = half(digits, 0.5), half(digits, 0.7)
    first = scorer.score(policy)
    again = scorer.score(autocomp.Policy.from_dict(policy.to_dict()))  # an equal policy, another object
    scorer.score(other)
    assert calls == [policy.key(), other.key()]
    assert again.cached and not first.cached and again.seconds == 0.0
    assert (again.accuracy, again.loss, again.cost) == (first.accuracy, first.loss, first.cost)


def test_the_cache_key_follows_the_settings_that_change_a_score(digits):
    policy = half(digits)
    key = evaluator(digits).score_key(policy)
    assert evaluator(digits, report_every=2).score_key(policy) == key  # reporting does not change the score
    assert evaluator(digits, fidelity=Fidelity("proxy", steps=13)).score_key(policy) != key
    assert evaluator(digits, fidelity=Fidelity("bn")).score_key(policy) != key
    assert evaluator(digits, seed=3).score_key(policy) != key


class Fragile(nn.Module):
    """Its outputs are NaN once its first layer keeps 4 channels or fewer: log(0) * 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        scale = torch.log(torch.tensor(float(max(h.shape[1] - 4, 0))))
        return self.fc(h) * (scale / scale)


@pytest.mark.parametrize("fidelity", [Fidelity("bn"), PROXY])
def test_a_nan_candidate_fails_with_its_reason_and_the_next_one_is_scored(digits, fidelity):
    data, _ = digits
    model = Fragile().eval()
    x = data.example_input()
    scorer = Evaluator(
        model,
        x,
        data.train,
        data.val,
        EvaluatorSettings(
            fidelity=fidelity, proxy=ProxyTraining(batch_size=64), bn_batches=2, batch_size=128, val_examples=100
        ),
    )
    layers = autocomp.prunable_layers(model, x)
    broken = scorer.score(autocomp.Policy.uniform(layers, 0.5))
    assert broken.failed and math.isnan(broken.accuracy) and broken.cost is None
    assert "FloatingPointError" in broken.error
    assert ("not finite" if fidelity.level == "bn" else "loss became nan") in broken.error
    fine = scorer.score(autocomp.Policy.uniform(layers, 0.75))
    assert not fine.failed and 0.0 <= fine.accuracy <= 1.0


def test_a_policy_that_cannot_be_built_is_a_failed_result(digits):
    policy = autocomp.Policy({"no.such.layer": autocomp.LayerDecision(0.5)})
    result = evaluator(digits).score(policy)
    assert (
        result.failed and result.error.startswith("ConfigError while compressing: ") and "no.such.layer" in result.error
    )


def test_a_bug_during_an_evaluation_propagates_instead_of_failing_the_candidate(digits, monkeypatch):
    def broken(*args, **kwargs):
        return args.missing  # an AttributeError, as a typo in the code would raise

    monkeypatch.setattr("autocomp.evaluate.evaluator.recalibrate_batchnorm", broken)
    with pytest.raises(AttributeError, match="missing"):
        evaluator(digits).score(half(digits))


def test_a_diverging_fine_tune_is_a_failed_result(digits):
    result = evaluator(digits, proxy=ProxyTraining(batch_size=64, lr=1e12)).score(half(digits))
    assert result.failed and "while fine-tuning" in result.error


def test_intermediate_scores_reach_the_reporter_which_can_stop_the_candidate(digits):
    seen = []
    full = evaluator(digits).score(half(digits), report=lambda step, score: seen.append(step) or True)
    assert seen == [4, 8, 12] and [step for step, _ in full.curve] == [4, 8, 12] and full.stopped_at is None
    scorer = evaluator(digits)
    stopped = scorer.score(half(digits), report=lambda step, score: step < 8)
    assert stopped.stopped_at == 8 and stopped.accuracy == stopped.curve[-1][1]
    assert stopped.curve == full.curve[:2]  # same seed, same steps
    finished = scorer.score(half(digits))  # a stopped score is partial: not cached
    assert not finished.cached and finished.stopped_at is None and finished.loss == full.loss


def test_an_optuna_median_pruner_stops_a_candidate_below_the_median(digits):
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for value in (0.999, 1.0):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.5},
                distributions=distributions,
                value=value,
                intermediate_values={4: value, 8: value, 12: value},
            )
        )
    trial = study.ask(distributions)

    def report(step: int, score: float) -> bool:
        trial.report(score, step)
        return not trial.should_prune()

    result = evaluator(digits).score(half(digits, 0.2), report)
    assert result.curve[0][1] < 0.999 and result.stopped_at == 4


def test_timing_separates_passes_from_overhead(digits):
    result = evaluator(digits).score(half(digits))
    assert 0 < result.timing.compute <= result.timing.total == result.seconds
    assert result.timing.overhead == pytest.approx(result.timing.total - result.timing.compute)


def test_a_lower_resolution_student_distils_attention_from_the_full_size_teacher(digits):
    data, model = digits
    layers = autocomp.prunable_layers(model, data.example_input())
    policy = autocomp.Policy.uniform(layers, 0.5, resolution=0.75)
    result = evaluator(digits, proxy=ProxyTraining(batch_size=64, attention=1000.0)).score(policy)
    assert not result.failed, result.error


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Fidelity("fast"), "fidelity level 'fast' is not allowed; allowed: bn, proxy, epochs, halving."),
        (lambda: Fidelity("proxy", steps=0), "fidelity steps must be a positive integer, not 0."),
        (lambda: ProxyTraining(alpha=1.5), "proxy alpha must be in [0, 1], not 1.5."),
        (lambda: ProxyTraining(lr=0.0), "proxy lr must be > 0, not 0.0."),
        (lambda: EvaluatorSettings(report_every=0), "evaluator report_every must be a positive integer, not 0."),
        (lambda: kendall_tau([1.0], [2.0]), "kendall_tau needs two lists of equal length >= 2, got lengths 1 and 1."),
    ],
)
def test_bad_settings_are_refused_in_one_sentence(make, message):
    with pytest.raises(ConfigError) as error:
        make()
    assert str(error.value) == message


def test_a_batch_larger_than_the_training_split_is_refused():
    data = TensorDataset(torch.zeros(10, 1, 4, 4), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ConfigError, match="proxy batch_size 64 is larger than the 10 training examples"):
        TrainingStream(data, 64, seed=0, teacher=nn.Identity())
