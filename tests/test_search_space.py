import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import autocomp
from autocomp.graph import ModelGraph
from search_spaces import Constraint, PruneRatio, Space

X = torch.zeros(1, 1, 16, 16)


@pytest.fixture(scope="module")
def resnet():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    graph = ModelGraph(copy.deepcopy(model), X)
    return model, graph, autocomp.measure(model, X)


@settings(max_examples=25, deadline=None)
@given(keeps=st.lists(st.floats(0.2, 1.0), min_size=12, max_size=12), budget=st.floats(0.25, 0.9))
def test_every_projected_policy_meets_the_budget_when_remeasured(resnet, keeps, budget):
    model, graph, base = resnet
    space = Space.from_graph(graph, PruneRatio(0.2))
    constraint = Constraint.create("macs", budget, relative=True, baseline=base)
    proposal = space.to_policy(dict(zip(space.names, itertools.cycle(keeps))))
    projected = constraint.project(graph, space, proposal)
    measured = autocomp.measure(autocomp.compress(model, projected, X), X).macs
    assert measured <= constraint.limit
    assert measured >= 0.9 * constraint.limit  # on the budget's edge, not far inside it


def test_projection_keeps_the_proposal_direction(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph)
    constraint = Constraint.create("macs", 0.5, relative=True, baseline=base)
    proposal = space.to_policy({name: 0.3 + 0.02 * i for i, name in enumerate(space.names)})
    projected = space.to_params(constraint.project(graph, space, proposal))
    ratios = [projected[name] / value for name, value in space.to_params(proposal).items()]
    assert max(ratios) == pytest.approx(min(ratios))  # one factor for all (no ratio hit its bound here)
    assert ratios[0] > 1  # this proposal was under budget and grew


def test_a_budget_above_the_full_model_gives_the_full_model(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph)
    constraint = Constraint.create("macs", 1.0, relative=True, baseline=base)
    projected = constraint.project(graph, space, space.fill(0.4))
    assert set(space.to_params(projected).values()) == {1.0}


def test_flops_are_twice_the_macs(resnet):
    _, graph, base = resnet
    macs = Constraint.create("macs", 0.5, True, base)
    flops = Constraint.create("flops", 0.5, True, base)
    assert flops.limit == 2 * macs.limit


def test_infeasible_budget_names_the_brute_force_minimum():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.zeros(1, 1, 6, 6)
    graph = ModelGraph(model, x)
    space = Space.from_graph(graph, PruneRatio(0.5))
    # brute force over every channel count the range allows (keep 0.5, 0.75, 1.0 of 4 channels)
    smallest = min(
        autocomp.measure(autocomp.compress(model, space.to_policy(dict(zip(space.names, combo))), x), x).macs
        for combo in itertools.product([0.5, 0.75, 1.0], repeat=len(space.names))
    )
    constraint = Constraint("macs", smallest - 1)
    with pytest.raises(autocomp.InfeasibleError, match=f"{smallest:,}"):
        constraint.check_reachable(graph, space)
    Constraint("macs", smallest).check_reachable(graph, space)


@pytest.mark.parametrize("metric", ["flops", "bops"])
def test_a_projected_policy_meets_a_flops_or_bops_budget_when_remeasured(resnet, metric):
    model, graph, base = resnet
    space = Space.from_graph(graph, PruneRatio(0.2))
    constraint = Constraint.create(metric, 0.4, relative=True, baseline=base)
    assert constraint.limit == 0.4 * getattr(base, metric)
    projected = constraint.project(graph, space, space.fill(0.9))
    measured = getattr(autocomp.measure(autocomp.compress(model, projected, X), X), metric)
    assert 0.9 * constraint.limit <= measured <= constraint.limit


def test_an_unknown_metric_is_refused_in_one_sentence(resnet):
    _, _, base = resnet
    with pytest.raises(autocomp.ConfigError, match=r"^constraint metric 'joules' is not supported yet; allowed: macs, flops, bops\.$"):
        Constraint.create("joules", 0.5, True, base)
