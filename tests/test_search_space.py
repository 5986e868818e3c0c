"""Spaces, budgets and projections: every projected policy is re-measured on the model it builds."""

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autocomp
from autocomp.graph import ModelGraph
from search_spaces import (
    FILL_TARGET,
    Axis,
    BitWidth,
    Budget,
    Constraint,
    LowRank,
    PruneRatio,
    Resolution,
    Space,
    WidthMultiplier,
    stages,
)

X = torch.zeros(1, 1, 16, 16)
MEASURED = ("macs", "flops", "params", "size_bytes", "bops")
"""Metrics re-measured on the built model here (latency has its own tests: timing is noisy)."""


@pytest.fixture(scope="module")
def resnet():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    graph = ModelGraph(copy.deepcopy(model), X)
    return model, graph, autocomp.measure(model, X)


def remeasured(model, policy):
    return autocomp.measure(autocomp.compress(model, policy, X), X)


# --- spaces -------------------------------------------------------------------------------------------


def test_groupings_give_one_decision_per_group_stage_or_model(resnet):
    _, graph, _ = resnet
    unfrozen = Space.from_graph(graph, (Axis(PruneRatio(), "group"),), frozen=())
    assert len(unfrozen.decisions) == len(graph.groups)
    frozen = Space.from_graph(graph, (Axis(PruneRatio(), "group"),))
    stem = next(g for g in graph.groups if "conv1" in g.layers)  # the stem shares its channels with layer1's adds
    assert len(frozen.decisions) == len(graph.groups) - 1
    assert all(not set(d.layers) & set(stem.layers) for d in frozen.decisions)
    by_stage = Space.from_graph(graph, (Axis(PruneRatio(), "stage"),))
    assert by_stage.names == ["keep/stage0", "keep/stage1", "keep/stage2"]
    assert Space.from_graph(graph, (Axis(PruneRatio(), "global"),)).names == ["keep"]


def test_stages_follow_the_spatial_size(resnet):
    _, graph, _ = resnet
    stage_of = stages(graph)
    assert stage_of["conv1"] == stage_of["layer1.2.conv2"] == 0
    assert stage_of["layer2.0.conv1"] == stage_of["layer2.0.shortcut.0"] == 1
    assert stage_of["layer3.2.conv2"] == 2 and stage_of["fc"] == 3


def test_bit_axes_decide_per_layer_and_frozen_layers_keep_their_bits(resnet):
    _, graph, _ = resnet
    space = Space.from_graph(
        graph, (Axis(BitWidth(2, 8), "layer"), Axis(BitWidth(4, 8, "activations", frozen=8), "global"))
    )
    assert len(space.of_kind("weight_bits")) == len(graph.layers) - 2
    assert space.of_kind("act_bits")[0].name == "act_bits"
    policy = space.to_policy({d.name: d.dim.low for d in space.decisions})
    assert policy.decision("conv1").weight_bits == 8 and policy.decision("fc").act_bits == 8
    assert policy.decision("layer2.0.conv1").weight_bits == 2 and policy.decision("layer2.0.conv1").act_bits == 4
    grouped = Space.from_graph(graph, (Axis(BitWidth(), "group"),))
    residual = next(d for d in grouped.decisions if "layer1.0.conv2" in d.layers)
    assert {"layer1.1.conv2", "layer1.2.conv2"} <= set(residual.layers)  # they write the same channels


def test_params_round_trip_through_a_policy(resnet):
    _, graph, _ = resnet
    space = Space.from_graph(
        graph,
        (
            Axis(PruneRatio(0.3), "group"),
            Axis(BitWidth(3, 8)),
            Axis(LowRank(0.5), "stage"),
            Axis(WidthMultiplier((0.5, 1.0)), "global"),
            Axis(Resolution((0.75, 1.0)), "global"),
        ),
    )
    for seed in range(5):
        policy = space.sample(np.random.default_rng(seed))
        params = space.to_params(policy)
        assert space.to_policy(params) == policy
        for name, distribution in space.distributions().items():
            distribution._contains(distribution.to_internal_repr(params[name]))


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda g: Space.from_graph(g, frozen=("conv9",)),
            "frozen layer 'conv9' is not a conv/linear layer of this model",
        ),
        (lambda g: Space.from_graph(g, (Axis(WidthMultiplier(), "stage"),)), "width is one value for the whole model"),
        (
            lambda g: Space.from_graph(g, (Axis(BitWidth(target="activations")),)),
            "activation bits need a weight bit-width",
        ),
        (lambda g: Space.from_graph(g, (Axis(PruneRatio()), Axis(PruneRatio(0.5)))), "keep is given twice"),
        (lambda g: Axis(PruneRatio(), "block"), "grouping 'block' is not known; allowed: layer, group, stage, global."),
        (
            lambda g: Space.from_graph(g, (Axis(BitWidth(frozen=None)), Axis(BitWidth(target="activations")))),
            "frozen layers cannot keep 8-bit inputs with floating-point weights",
        ),
        (lambda g: BitWidth(1, 8), "bit-width 1 is not allowed"),
        (lambda g: WidthMultiplier((0.5, 1.5)), "width choices [0.5, 1.5] are not allowed"),
    ],
)
def test_a_bad_space_is_refused_in_one_sentence(resnet, build, message):
    _, graph, _ = resnet
    with pytest.raises(autocomp.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(graph)


# --- projection: every constraint holds on the built model -------------------------------------------

SPACES = {
    "keep": lambda: (Axis(PruneRatio(0.2), "group"),),
    "keep+bits": lambda: (Axis(PruneRatio(0.2), "group"), Axis(BitWidth(2, 8)), Axis(BitWidth(4, 8, "activations"))),
    "bits by stage": lambda: (Axis(BitWidth(2, 8), "stage"),),
    "keep+rank": lambda: (Axis(PruneRatio(0.3), "stage"), Axis(LowRank(0.25), "layer")),
    "multipliers": lambda: (
        Axis(PruneRatio(0.4), "global"),
        Axis(WidthMultiplier((0.5, 0.75, 1.0)), "global"),  # in order
        Axis(Resolution((0.75, 1.0)), "global"),
    ),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    space_name=st.sampled_from(sorted(SPACES)),
    seed=st.integers(0, 10_000),
    metrics=st.lists(st.sampled_from(MEASURED), min_size=1, max_size=3, unique=True),
    fractions=st.lists(st.floats(0.15, 0.9), min_size=3, max_size=3),
    method=st.sampled_from(["auto", "scale", "wall", "bits"]),
    frozen=st.sampled_from([(), ("first", "last")]),
)
def test_any_projected_policy_meets_every_constraint_when_remeasured(
    resnet, space_name, seed, metrics, fractions, method, frozen
):
    model, graph, base = resnet
    space = Space.from_graph(graph, SPACES[space_name](), frozen=frozen)
    budget = Budget(graph, [Constraint.create(m, f, True, base) for m, f in zip(metrics, fractions)])
    smallest = budget.values(space.smallest())
    if any(smallest[c.metric] > c.limit for c in budget.constraints):
        with pytest.raises(autocomp.InfeasibleError):
            budget.check_reachable(space)
        return
    budget.check_reachable(space)
    projected = budget.project(space, space.sample(np.random.default_rng(seed)), method)
    cost = remeasured(model, projected)
    for constraint in budget.constraints:
        assert constraint.value_of(cost) <= constraint.limit, constraint.describe(constraint.value_of(cost))
        assert constraint.value_of(cost) == budget.value(constraint.metric, projected)  # the prediction is exact


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    space_name=st.sampled_from(["keep", "keep+bits", "bits by stage"]),
    seed=st.integers(0, 10_000),
    metrics=st.lists(st.sampled_from(MEASURED), min_size=1, max_size=2, unique=True),
    fractions=st.lists(st.floats(0.3, 0.9), min_size=2, max_size=2),
    method=st.sampled_from(["auto", "scale", "wall"]),
)
def test_projection_uses_at_least_97_percent_of_a_budget_the_space_can_fill(
    resnet, space_name, seed, metrics, fractions, method
):
    """Fine-grained spaces (one channel or one bit per step) on a budget between the smallest and the largest model."""
    _, graph, base = resnet
    space = Space.from_graph(graph, SPACES[space_name](), frozen=())
    budget = Budget(graph, [Constraint.create(m, f, True, base) for m, f in zip(metrics, fractions)])
    if budget.usage(space.smallest()) > 1 or budget.usage(space.largest()) <= 1:
        return  # out of reach, or the whole space fits: nothing to fill
    projected = budget.project(space, space.sample(np.random.default_rng(seed)), method)
    assert FILL_TARGET <= budget.usage(projected) <= 1


def test_scaling_keeps_the_proposal_direction(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph, frozen=())
    budget = Budget(graph, [Constraint.create("macs", 0.5, True, base)])
    proposal = space.to_policy({name: 0.3 + 0.02 * i for i, name in enumerate(space.names)})
    projected = space.to_params(budget.project(space, proposal, "scale"))
    ratios = [projected[name] / value for name, value in space.to_params(proposal).items()]
    assert max(ratios) == pytest.approx(min(ratios), rel=0.05)  # one factor for all, then a few fill steps
    assert min(ratios) > 1  # this proposal was under budget and grew


def test_a_budget_above_the_largest_model_gives_the_largest_model(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph)
    budget = Budget(graph, [Constraint.create("macs", 1.0, True, base)])
    assert budget.project(space, space.fill(0.4)) == space.largest()


def test_bit_lowering_starts_with_the_most_bits(resnet):
    _, graph, _base = resnet
    space = Space.from_graph(graph, (Axis(BitWidth(2, 8)),), frozen=())
    proposal = space.to_policy({name: 8 if i == 5 else 4 for i, name in enumerate(space.names)})
    budget = Budget(graph, [Constraint("bops", 0.995 * graph.predict_bops(proposal))])
    projected = space.to_params(budget.project(space, proposal, "bits"))
    lowered = [name for name, value in projected.items() if value < space.to_params(proposal)[name]]
    assert lowered == [space.names[5]]  # the 8-bit layer gave the bits; the 4-bit layers kept theirs
    assert budget.feasible(space.to_policy(projected))


def test_a_macs_limit_never_costs_bits(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph, (Axis(PruneRatio(0.2), "group"), Axis(BitWidth(2, 8))), frozen=())
    proposal = space.to_policy({d.name: 1.0 if d.kind == "keep" else 6 for d in space.decisions})
    budget = Budget(graph, [Constraint.create("macs", 0.5, True, base), Constraint.create("bops", 0.9, True, base)])
    for method in ("auto", "bits", "scale", "wall"):
        projected = space.to_params(budget.project(space, proposal, method))
        assert all(projected[d.name] == 6 for d in space.of_kind("weight_bits")), method  # only the MACs were over
        assert budget.usage(space.to_policy(projected)) >= FILL_TARGET


def test_a_smaller_width_proposal_is_raised_to_a_choice_that_fills_the_budget(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph, SPACES["multipliers"](), frozen=())
    budget = Budget(graph, [Constraint.create("macs", 0.5, True, base)])
    proposal = space.to_policy({"keep": 1.0, "width": 0.5, "resolution": 1.0})  # 25% of the MACs: half the budget
    projected = budget.project(space, proposal)
    assert FILL_TARGET <= budget.usage(projected) <= 1 and projected.width > 0.5


def test_ranks_past_the_break_even_leave_a_layer_whole_so_the_smallest_model_is_the_brute_force_minimum():
    model, x = tiny_net(), torch.zeros(1, 1, 6, 6)
    graph = ModelGraph(copy.deepcopy(model), x)
    space = Space.from_graph(graph, (Axis(LowRank(0.25, 1.0), "layer"),), frozen=())
    grid = [0.25, 0.5, 0.75, 0.9, 1.0]
    costs = [
        autocomp.measure(autocomp.compress(model, space.to_policy(dict(zip(space.names, combo))), x), x)
        for combo in itertools.product(grid, repeat=len(space.names))
    ]
    for metric in ("macs", "params"):
        minimum = min(getattr(cost, metric) for cost in costs)
        assert Budget(graph, [Constraint(metric, 1e9)]).value(metric, space.smallest()) == minimum
    assert autocomp.measure(autocomp.compress(model, space.largest(), x), x).macs == max(cost.macs for cost in costs)
    whole = autocomp.measure(model, x)
    assert all(cost.macs <= whole.macs for cost in costs)  # no factorization costs more than the layer it replaces


def test_a_latency_correction_that_leaves_no_feasible_policy_is_refused(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph)
    clock = MacsClock(graph)
    budget = Budget(graph, [Constraint("latency_ms", 1.5 * clock.predict_ms(space.smallest()))], latency=clock)
    budget.check_reachable(space)
    budget.observe(space.smallest(), dataclasses.replace(base, latency_ms=2 * clock.predict_ms(space.smallest())))
    with pytest.raises(autocomp.InfeasibleError, match=r"^no policy of this space meets the budget any more.*x2\.000"):
        budget.project(space, space.largest())


def test_the_wall_clips_each_decision_to_what_the_later_ones_leave(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph, frozen=())
    budget = Budget(graph, [Constraint.create("macs", 0.3, True, base)])
    proposal = space.fill(1.0)
    projected = space.to_params(budget.project(space, proposal, "wall"))
    values = list(projected.values())
    assert budget.feasible(space.to_policy(projected))
    assert values[0] > values[-1]  # the first decisions took what they asked for; later ones hit the wall
    assert values[-1] == pytest.approx(0.2, abs=0.1)


# --- budgets and their refusals -----------------------------------------------------------------------


def tiny_net():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )


def test_an_infeasible_budget_names_the_brute_force_minimum_of_every_metric():
    model, x = tiny_net(), torch.zeros(1, 1, 6, 6)
    graph = ModelGraph(copy.deepcopy(model), x)
    space = Space.from_graph(graph, (Axis(PruneRatio(0.5), "group"), Axis(BitWidth(7, 8), "layer")), frozen=())
    grid = {d.name: ([0.5, 0.75, 1.0] if d.kind == "keep" else [7, 8]) for d in space.decisions}
    costs = [
        autocomp.measure(autocomp.compress(model, space.to_policy(dict(zip(grid, combo))), x), x)
        for combo in itertools.product(*grid.values())
    ]
    minimum = {metric: min(getattr(cost, metric) for cost in costs) for metric in MEASURED}
    for metric in MEASURED:
        Budget(graph, [Constraint(metric, minimum[metric])]).check_reachable(space)
        with pytest.raises(autocomp.InfeasibleError, match=f"{metric} {minimum[metric]:,} "):
            Budget(graph, [Constraint(metric, minimum[metric] - 1)]).check_reachable(space)
    both = Budget(graph, [Constraint("macs", minimum["macs"] - 1), Constraint("params", minimum["params"])])
    with pytest.raises(autocomp.InfeasibleError) as refused:
        both.check_reachable(space)
    assert f"macs {minimum['macs']:,} (limit {minimum['macs'] - 1:,})" in str(refused.value)
    assert f"params {minimum['params']:,} (limit {minimum['params']:,})" in str(refused.value)


def test_relative_limits_scale_the_baseline(resnet):
    _, _, base = resnet
    assert Constraint.create("flops", 0.5, True, base).limit == 2 * Constraint.create("macs", 0.5, True, base).limit
    assert Constraint.create("size_bytes", 0.25, True, base).limit == 0.25 * base.size_bytes
    assert Constraint.create("params", 1000, False, base).limit == 1000


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda g, b: Constraint.create("joules", 0.5, True, b),
            r"^constraint metric 'joules' is not known; allowed: macs, flops, params, size_bytes, bops, latency_ms\.$",
        ),
        (lambda g, b: Constraint("macs", -1), r"^macs limit -1 is not allowed; need a positive, finite number\.$"),
        (lambda g, b: Constraint("macs", math.inf), r"^macs limit inf is not allowed"),
        (
            lambda g, b: Constraint.create("latency_ms", 0.5, True, b),
            r"needs the baseline's latency_ms, which was not measured",
        ),
        (lambda g, b: Budget(g, []), r"^a budget needs at least one constraint"),
        (lambda g, b: Budget(g, [Constraint("macs", 5), Constraint("macs", 6)]), r"^metric macs is constrained twice"),
        (lambda g, b: Budget(g, [Constraint("latency_ms", 5)]), r"^a latency_ms constraint needs a latency target"),
    ],
)
def test_a_bad_budget_is_refused_in_one_sentence(resnet, build, message):
    _, graph, base = resnet
    with pytest.raises(autocomp.ConfigError, match=message):
        build(graph, base)


def test_an_unknown_projection_is_refused(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph)
    with pytest.raises(
        autocomp.ConfigError, match=r"^projection 'nearest' is not known; allowed: auto, scale, bits, wall\.$"
    ):
        Budget(graph, [Constraint.create("macs", 0.5, True, base)]).project(space, space.largest(), "nearest")


class MacsClock:
    """A stand-in latency table: one millisecond per million MACs."""

    def __init__(self, graph):
        self.graph = graph

    def predict_ms(self, policy):
        return self.graph.predict_macs(policy) / 1e6


def test_measured_latencies_correct_later_latency_predictions(resnet):
    _, graph, base = resnet
    space = Space.from_graph(graph)
    budget = Budget(graph, [Constraint("latency_ms", 0.5 * base.macs / 1e6)], latency=MacsClock(graph))
    before = budget.project(space, space.largest())
    assert budget.usage(before) == pytest.approx(1.0, abs=0.03)
    measured = dataclasses.replace(
        base, latency_ms=2 * MacsClock(graph).predict_ms(before)
    )  # twice as slow as predicted
    budget.observe(before, measured)
    assert budget.latency_correction == pytest.approx(2.0)
    after = budget.project(space, space.largest())
    assert (
        0.97 * 0.25 * base.macs <= graph.predict_macs(after) <= 0.25 * base.macs
    )  # twice the time per MAC: half the MACs
    for ratio in (1.0, 1.5, 3.0):
        budget.observe(before, dataclasses.replace(base, latency_ms=ratio * MacsClock(graph).predict_ms(before)))
    assert budget.latency_correction == pytest.approx(2.25)  # the upper quartile of 1, 1.5, 2, 3
    with pytest.raises(autocomp.ConfigError, match="cannot be combined with a bit-width axis"):
        budget.check_reachable(Space.from_graph(graph, (Axis(PruneRatio()), Axis(BitWidth()))))
