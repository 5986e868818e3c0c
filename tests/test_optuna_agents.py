"""The Optuna agents' own behaviour: NSGA-II's Pareto front and down-only projection, CMA-ES's boundary handling."""

import itertools
import math

import pytest

import agents
import autocomp
from autocomp.cost import Cost
from autocomp.evaluate import EvalResult
from search_spaces import (
    Axis,
    BitWidth,
    Budget,
    Constraint,
    PruneRatio,
    Space,
    WidthMultiplier,
)
from tests.test_agents import WEIGHTS, brute_force_optimum, tiny_setting


@pytest.fixture(scope="module")
def tiny():
    return tiny_setting()


@pytest.fixture(scope="module")
def feasible_policies(tiny):
    """Every combination of kept channel counts the tiny space allows within its budget (as in `brute_force_optimum`)."""
    graph, space, budget = tiny
    counts = [range(max(1, round(0.25 * group.channels)), group.channels + 1) for group in graph.groups]
    policies = (
        space.to_policy({d.name: c / g.channels for d, c, g in zip(space.decisions, combo, graph.groups)})
        for combo in itertools.product(*counts)
    )
    return [policy for policy in policies if budget.feasible(policy)]


def score(graph, policy, weights=WEIGHTS) -> float:
    """`kept_fraction_score` with other importances of the channel groups."""
    return math.prod(
        (kept / group.channels) ** w for kept, group, w in zip(graph.kept_channels(policy), graph.groups, weights)
    )


def drive(agent, graph, n, weights=WEIGHTS):
    """``n`` proposals, each evaluated at its projection: (proposal, projected, result) in order."""
    history = []
    for _ in range(n):
        proposal = agent.ask()
        projected = agent.project(proposal)
        result = EvalResult(score(graph, projected, weights), Cost(graph.predict_macs(projected), 0, 0, 0), 0.0)
        agent.tell(proposal, result)
        history.append((proposal, projected, result))
    return history


def best_fraction(agent, tiny, feasible_policies, n, weights=WEIGHTS) -> float:
    """The best feasible score within ``n`` evaluations, as a fraction of the brute-force optimum."""
    graph, _, budget = tiny
    best = max(
        result.accuracy for _, projected, result in drive(agent, graph, n, weights) if budget.feasible(projected)
    )
    return best / max(score(graph, policy, weights) for policy in feasible_policies)


def test_the_brute_force_optimum_is_the_shared_suites(tiny, feasible_policies):
    graph, space, budget = tiny
    assert max(score(graph, policy) for policy in feasible_policies) == brute_force_optimum(graph, space, budget)


def dominated(point, others) -> bool:
    accuracy, usage = point
    return any(a >= accuracy and u <= usage and (a > accuracy or u < usage) for a, u in others)


def test_nsga2_pareto_front_is_every_non_dominated_result(tiny):
    graph, space, budget = tiny
    agent = agents.create_agent("nsga2", space, budget, seed=1)
    history = drive(agent, graph, 24)
    told = [
        (result.accuracy, graph.predict_macs(projected) / budget.constraints[0].limit)
        for _, projected, result in history
    ]
    expected = sorted(point for point in told if not dominated(point, told))

    front = agent.pareto_front()
    assert sorted((p.accuracy, p.usage) for p in front) == expected
    assert [p.usage for p in front] == sorted(p.usage for p in front)
    assert all(p.policy == agent.project(p.proposal) for p in front)
    assert len(front) >= 3 and front[0].usage < 0.8  # a trade-off, not one point at the limit


def test_nsga2_evaluates_a_proposal_within_the_budget_as_it_is(tiny):
    _graph, space, budget = tiny
    agent = agents.create_agent("nsga2", space, budget)
    within = space.fill(0.3)
    assert budget.feasible(within) and budget.usage(within) < 0.9
    assert agent.project(within) == within
    over = space.largest()
    assert agent.project(over) == budget.project(space, over) != over


def test_nsga2_reaches_95_percent_of_the_brute_force_optimum_within_150_evaluations(tiny, feasible_policies):
    _, space, budget = tiny
    for seed in range(3):
        fraction = best_fraction(agents.create_agent("nsga2", space, budget, seed=seed), tiny, feasible_policies, 150)
        assert fraction >= 0.95, f"seed {seed}: {fraction:.1%} of the optimum"


@pytest.mark.parametrize("weights", [(1.0, 0.3, 0.6, 0.5), (0.3, 0.3, 1.0, 1.0)])
def test_cmaes_reaches_95_percent_for_other_layer_importances(tiny, feasible_policies, weights):
    _, space, budget = tiny

    def fractions(name):
        return [
            best_fraction(agents.create_agent(name, space, budget, seed=seed), tiny, feasible_policies, 30, weights)
            for seed in range(5)
        ]

    assert min(fractions("cmaes")) >= 0.95
    randoms = fractions("random")
    assert min(randoms) < 0.95  # the setting has teeth: 30 random proposals do not always get there


def test_cmaes_draws_bounds_often_with_a_margin_and_never_without(tiny):
    graph, space, budget = tiny

    def share_on_bounds(margin):
        agent = agents.create_agent("cmaes", space, budget, options={"margin": margin})
        values = [
            (d, value)
            for proposal, _, _ in drive(agent, graph, 10)
            for d, value in zip(space.decisions, space.to_params(proposal).values())
        ]
        return sum(value in (d.dim.low, d.dim.high) for d, value in values) / len(values)

    assert share_on_bounds(0.0) == 0.0
    assert (
        0.4 <= share_on_bounds(1.0) <= 0.9
    )  # a uniform draw from three ranges lands outside the middle one 2/3 of the time


@pytest.mark.parametrize("name", ["cmaes", "nsga2"])
def test_a_replay_with_a_foreign_trial_past_a_generation_proposes_what_the_uninterrupted_run_would(tiny, name):
    """25 trials span CMA-ES's first generation (10 random, then 8) and NSGA-II's third; trial 12 is a proposal the agent
    did not make (another worker's, a user's): both runs are told it, the resumed one without any ask before."""
    graph, space, budget = tiny
    first = agents.create_agent(name, space, budget, seed=4)
    history = []
    for n in range(25):
        proposal = first.ask() if n != 12 else space.fill(0.5)
        projected = first.project(proposal)
        result = EvalResult(score(graph, projected), Cost(graph.predict_macs(projected), 0, 0, 0), 0.0)
        first.tell(proposal, result)
        history.append((proposal, result))
    expected_next = first.ask()

    resumed = agents.create_agent(name, space, budget, seed=4)
    for proposal, result in history:
        resumed.tell(proposal, result)
    assert resumed.ask() == expected_next


@pytest.mark.parametrize("name", ["cmaes", "nsga2"])
def test_bits_and_width_choices_are_drawn_as_numbers_and_replayed(tiny, name):
    """Every decision is a number to these samplers: bits and choices round to allowed values, and a replay still matches."""
    graph = tiny[0]
    space = Space.from_graph(
        graph,
        [Axis(PruneRatio(0.25), "group"), Axis(BitWidth(), "layer"), Axis(WidthMultiplier(), "global")],
        frozen=(),
    )
    budget = Budget(graph, [Constraint("bops", 0.3 * graph.predict_bops(space.largest()))])
    budget.check_reachable(space)
    first = agents.create_agent(name, space, budget, seed=2)
    history = drive(first, graph, 20)
    for proposal, projected, _ in history:
        params = space.to_params(proposal)
        assert all(params[d.name] in range(2, 9) for d in space.of_kind("weight_bits"))
        assert params["width"] in (0.5, 0.75, 1.0)
        assert budget.feasible(projected)
    assert len({space.to_params(p)["width"] for p, _, _ in history}) > 1
    resumed = agents.create_agent(name, space, budget, seed=2)
    for proposal, _, result in history:
        resumed.tell(space.to_policy(space.to_params(proposal)), result)  # as the search loop replays: from the params
    assert resumed.ask() == first.ask()


def test_budget_measured_usage_is_the_binding_constraints_share_of_a_built_model(tiny):
    graph, space, budget = tiny
    example = graph.example_inputs
    policy = space.to_policy(dict(zip(space.names, (0.5, 1.0, 0.25, 0.75))))
    two = Budget(graph, [Constraint("macs", budget.constraints[0].limit), Constraint("params", 600)])
    cost = autocomp.measure(autocomp.compress(graph.model, policy, example), example)
    assert two.measured_usage(cost) == pytest.approx(two.usage(policy))
    assert two.measured_usage(cost) == pytest.approx(max(cost.macs / two.constraints[0].limit, cost.params / 600))


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("cmaes", {"startup": 5}, "startup 5 is not allowed; need a whole number >= 10"),
        ("cmaes", {"margin": -0.5}, "margin -0.5 is not allowed; need a finite number >= 0"),
        ("cmaes", {"population": 1}, "population 1 is not allowed; need None or a whole number >= 2"),
        ("nsga2", {"population": True}, "population True is not allowed; need a whole number >= 2"),
    ],
)
def test_bad_options_are_refused_with_what_is_allowed(tiny, name, options, message):
    _, space, budget = tiny
    with pytest.raises(autocomp.ConfigError, match=f"agent '{name}': {message}"):
        agents.create_agent(name, space, budget, options=options)
