"""The greedy baselines (sensitivity, autoslim) on the tiny four-group model with the analytic kept-fraction score."""

import pytest
from test_agents import WEIGHTS, kept_fraction_score, tiny_setting

import agents
import autocomp
from autocomp.cost import Cost
from autocomp.evaluate import EvalResult
from search_spaces import Budget, Constraint

GREEDY = ["sensitivity", "autoslim"]


@pytest.fixture(scope="module")
def setting():
    return tiny_setting()


def run(agent, graph, fails=(), iterations=None):
    """Asks until the agent is done (or has done ``iterations``), telling the analytic score of what it evaluates;
    None for the proposals numbered in ``fails``."""
    proposals, results = [], []
    agent.probe_flags = []  # is_probe as the loop asks it, right after ask
    while agent.iteration != iterations and (proposal := agent.ask()) is not None:
        agent.probe_flags.append(agent.is_probe(proposal))
        policy = agent.project(proposal)
        result = (
            None
            if len(proposals) in fails
            else EvalResult(kept_fraction_score(graph, policy), Cost(graph.predict_macs(policy), 0, 0, 0), 0.0)
        )
        agent.tell(proposal, result)
        proposals.append(proposal)
        results.append(result)
    return proposals, results


@pytest.mark.parametrize("name", GREEDY)
def test_the_final_candidate_meets_the_budget_beats_uniform_and_prunes_the_low_weight_groups_more(setting, name):
    graph, space, budget = setting
    agent = agents.create_agent(name, space, budget)
    proposals, _ = run(agent, graph)
    final = proposals[-1]
    assert not agent.probe_flags[-1] and budget.feasible(final) and budget.usage(final) >= 0.9
    uniform = kept_fraction_score(graph, budget.project(space, space.largest()))
    assert kept_fraction_score(graph, final) >= 1.5 * uniform
    kept = [k / g.channels for k, g in zip(graph.kept_channels(final), graph.groups)]
    low, high = [g for g, w in enumerate(WEIGHTS) if w < 0.5], [g for g, w in enumerate(WEIGHTS) if w > 0.5]
    assert max(kept[g] for g in low) < min(kept[g] for g in high), kept


@pytest.mark.parametrize("name", GREEDY)
def test_over_budget_proposals_are_probes_measured_as_they_are_and_the_first_result_is_uniforms(setting, name):
    graph, space, budget = setting
    agent = agents.create_agent(name, space, budget)
    proposals, _ = run(agent, graph)
    over = [graph.predict_macs(p) > budget.constraints[0].limit for p in proposals]
    assert any(over) and all(probe for probe, o in zip(agent.probe_flags, over) if o)  # over budget: a probe
    candidates = [p for p, probe in zip(proposals, agent.probe_flags) if not probe]
    assert all(budget.feasible(p) and budget.usage(p) >= 0.9 for p in candidates)
    assert len(candidates) == agent.iteration + 1  # one projection of each path point, the last within the budget
    assert all(agent.project(p) is p for p in proposals)
    assert proposals[0] == budget.project(space, space.largest())  # the first result is uniform's
    assert proposals[1] == space.largest()  # then the reference: the unpruned model


def iteration_starts(name, iterations, decisions):
    """Where each iteration's candidate is: then come the path point (sensitivity; autoslim only at first) and one
    probe per decision; after the last iteration, the final candidate."""
    if name == "sensitivity":
        return [k * (decisions + 2) for k in range(iterations + 1)]
    return [0] + [1 + k * (decisions + 1) for k in range(1, iterations + 1)]


@pytest.mark.parametrize("name", GREEDY)
@pytest.mark.parametrize("iterations", [2, 4])
def test_the_number_of_evaluations_has_a_closed_form(setting, name, iterations):
    graph, space, _ = setting
    budget = Budget(graph, [Constraint("macs", 0.6 * graph.predict_macs(autocomp.Policy()))])  # no group at its lowest
    agent = agents.create_agent(name, space, budget, options={"iterations": iterations})
    wanted = agent.evaluations_wanted()  # known before the first ask: what the search warns about
    at = []
    while (proposal := agent.ask()) is not None:
        at.append(agent.iteration)
        agent.tell(proposal, EvalResult(kept_fraction_score(graph, proposal), Cost(0, 0, 0, 0), 0.0))
    starts = iteration_starts(name, iterations, len(space.decisions))
    assert [i for i in range(len(at)) if i == 0 or at[i] != at[i - 1]] == starts
    expected = {
        "sensitivity": iterations * (len(space.decisions) + 2) + 1,
        "autoslim": iterations * (len(space.decisions) + 1) + 2,
    }
    assert len(at) == expected[name] == wanted


def test_autoslim_takes_the_single_group_cut_that_keeps_the_most_accuracy(setting):
    """Reference by enumeration: for each group, the most channels that reach the first target; the best score wins."""
    graph, space, budget = setting
    agent = agents.create_agent("autoslim", space, budget)
    target = agent.target()
    run(agent, graph, iterations=1)
    full = [g.channels for g in graph.groups]

    def cut(group, kept):
        return space.to_policy(
            {d.name: (kept if i == group else c) / c for i, (d, c) in enumerate(zip(space.decisions, full))}
        )

    best = max(
        ((g, max(k for k in range(1, full[g] + 1) if budget.usage(cut(g, k)) <= target)) for g in range(4)),
        key=lambda gk: kept_fraction_score(graph, cut(*gk)),
    )
    assert graph.kept_channels(space.to_policy(agent.point)) == graph.kept_channels(cut(*best))


def test_sensitivity_lowers_the_least_sensitive_half_to_the_first_target(setting):
    graph, space, budget = setting
    agent = agents.create_agent("sensitivity", space, budget)
    target = agent.target()
    run(agent, graph, iterations=1)
    point = space.to_policy(agent.point)
    assert target - 0.15 <= budget.usage(point) <= target  # a channel of group 0 is 0.135 of the budget use
    # per usage saved, a group costs accuracy in proportion to its weight: the two lowest weights go first
    changed = [g for g, (k, group) in enumerate(zip(graph.kept_channels(point), graph.groups)) if k < group.channels]
    assert changed == [0, 2]


@pytest.mark.parametrize("name", GREEDY)
def test_a_failed_probe_counts_as_accuracy_zero(setting, name):
    graph, space, budget = setting
    agent = agents.create_agent(name, space, budget)
    run(agent, graph, iterations=1)
    cheapest = graph.kept_channels(space.to_policy(agent.point))
    lowered = [g for g, (k, group) in enumerate(zip(cheapest, graph.groups)) if k < group.channels]

    failing = agents.create_agent(name, space, budget)
    run(failing, graph, fails={2 + lowered[0]}, iterations=1)  # candidate, P_0, then one probe per group in order
    kept = graph.kept_channels(space.to_policy(failing.point))
    assert kept[lowered[0]] == graph.groups[lowered[0]].channels and kept != cheapest


@pytest.mark.parametrize("name", GREEDY)
def test_a_resumed_agent_asks_what_the_uninterrupted_one_would_at_every_point(setting, name):
    graph, space, budget = setting
    fails = {3, 9, 14}
    proposals, results = run(agents.create_agent(name, space, budget), graph, fails)
    for cut in range(len(proposals)):
        resumed = agents.create_agent(name, space, budget)
        for proposal, result in zip(proposals[:cut], results[:cut]):
            resumed.tell(space.to_policy(space.to_params(proposal)), result)  # as the study gives them back
        assert resumed.ask() == proposals[cut], f"cut at {cut}"
        resumed.tell(proposals[cut], results[cut])
        assert run(resumed, graph, {f - cut - 1 for f in fails})[0] == proposals[cut + 1 :]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("sensitivity", {"iterations": 0}, "iterations 0 is not allowed; need a whole number >= 1"),
        ("autoslim", {"iterations": 2.5}, "iterations 2.5 is not allowed"),
        ("autoslim", {"iterations": True}, "iterations True is not allowed"),
        ("sensitivity", {"fraction": 0}, r"fraction 0 is not allowed; need a number in \(0, 1\]"),
        ("sensitivity", {"probe_step": 1.0}, r"probe_step 1.0 is not allowed; need a number in \(0, 1\)"),
        ("autoslim", {"fraction": 0.5}, "agent 'autoslim' has no option 'fraction'; allowed: iterations"),
    ],
)
def test_bad_options_are_refused_naming_the_value(setting, name, options, message):
    _, space, budget = setting
    with pytest.raises(autocomp.ConfigError, match=message):
        agents.create_agent(name, space, budget, options=options)
