"""The evaluator with every criterion, with reconstruction and with bits: scores are real and repeatable."""

import copy

import pytest
import torch

import autocomp
from autocomp.compress import criterion_names
from autocomp.data import load_dataset
from autocomp.evaluate import Evaluator, EvaluatorSettings, Fidelity, ProxyTraining
from autocomp.graph import ModelGraph


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    data = load_dataset("digits", val_size=200, seed=0)
    model = autocomp.zoo.create("vgg_small", num_classes=data.num_classes, in_channels=data.in_channels).eval()
    return data, model


@pytest.mark.parametrize("criterion, reconstruct", [(name, False) for name in criterion_names()] + [("l1", True)])
def test_scores_are_accuracies_with_the_predicted_cost(digits, criterion, reconstruct):
    data, model = digits
    x = data.example_input()
    settings = EvaluatorSettings(
        fidelity=Fidelity("bn"),
        bn_batches=2,
        batch_size=64,
        val_examples=200,
        criterion=criterion,
        reconstruct=reconstruct,
    )
    evaluator = Evaluator(model, x, data.train, data.val, settings)
    policy = autocomp.Policy.uniform(autocomp.prunable_layers(model, x), 0.5, channel_multiple=4)
    first = evaluator.score(policy)
    second = Evaluator(model, x, data.train, data.val, settings).score(policy)  # not from the cache
    assert 0.0 <= first.accuracy <= 1.0
    assert first.accuracy == second.accuracy  # repeatable
    assert first.cost.macs == ModelGraph(copy.deepcopy(model), x).predict_macs(policy)


def test_a_pruned_and_quantized_candidate_is_scored_with_its_bits(digits):
    data, model = digits
    x = data.example_input()
    settings = EvaluatorSettings(
        fidelity=Fidelity("proxy", steps=5),
        proxy=ProxyTraining(batch_size=64),
        bn_batches=2,
        batch_size=64,
        val_examples=200,
    )
    policy = autocomp.Policy.uniform(autocomp.model_layers(model, x), 0.5, weight_bits=4, act_bits=4)
    first = Evaluator(model, x, data.train, data.val, settings).score(policy)
    second = Evaluator(model, x, data.train, data.val, settings).score(policy)  # not from the cache
    graph = ModelGraph(copy.deepcopy(model), x)
    assert first.accuracy == second.accuracy
    assert (first.cost.macs, first.cost.bops) == (graph.predict_macs(policy), graph.predict_bops(policy))
    assert first.cost.bops < first.cost.macs * 32 * 32 / 10  # most MACs at 4 x 4 bits
