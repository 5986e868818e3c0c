"""One suite every agent passes, with a cheap analytic evaluator instead of a network."""

import copy
import itertools
import math

import optuna
import pytest
import torch

import agents
import autocomp
from autocomp.cost import Cost
from autocomp.evaluate import EvalResult
from autocomp.graph import ModelGraph
from search_spaces import Budget, Constraint, PruneRatio, Space

X = torch.zeros(1, 1, 16, 16)


@pytest.fixture(scope="module")
def setting():
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    graph = ModelGraph(copy.deepcopy(model), X)
    space = Space.from_graph(graph, PruneRatio(0.2))
    budget = Budget(graph, [Constraint.create("macs", 0.5, relative=True, baseline=autocomp.measure(model, X))])
    return graph, space, budget


def analytic_score(graph, space, policy) -> EvalResult:
    """Accuracy proxy: later layers matter more; smooth, so learning agents can climb it."""
    params = space.to_params(policy)
    weights = torch.linspace(1.0, 2.0, len(params))
    score = float(sum(w * v for w, v in zip(weights, params.values())) / weights.sum())
    return EvalResult(score, Cost(graph.predict_macs(policy), 0, 0, 0), 0.0)


def drive(agent, graph, space, budget, n):
    proposals = []
    for _ in range(n):
        proposal = agent.ask()
        if proposal is None:
            break
        projected = agent.project(proposal)
        agent.tell(proposal, analytic_score(graph, space, projected))
        proposals.append((proposal, projected))
    return proposals


@pytest.mark.parametrize("name", agents.agent_names())
def test_every_proposal_is_in_the_space_and_projects_into_the_budget(setting, name):
    graph, space, budget = setting
    agent = agents.create_agent(name, space, budget, seed=3)
    proposals = drive(agent, graph, space, budget, 12)
    assert proposals
    for proposal, projected in proposals:
        assert space.to_policy(space.to_params(proposal)) == proposal  # a policy of the space, as the study records it
        assert agent.is_probe(proposal) or graph.predict_macs(projected) <= budget.constraints[0].limit


@pytest.mark.parametrize("name", agents.agent_names())
def test_a_replayed_agent_proposes_what_the_uninterrupted_one_would(setting, name):
    graph, space, budget = setting
    first = agents.create_agent(name, space, budget, seed=5)
    history = drive(first, graph, space, budget, 11)
    expected_next = first.ask()

    resumed = agents.create_agent(name, space, budget, seed=5)
    for proposal, projected in history:  # as the run replays its study: the recorded params, replay, then tell
        recorded = space.to_policy(space.to_params(proposal))
        resumed.replay(recorded)
        resumed.tell(recorded, analytic_score(graph, space, projected))
    assert resumed.ask() == expected_next


PARALLEL_AGENTS = [name for name in agents.agent_names() if agents.agent_class(name).parallel]


@pytest.mark.parametrize("asked_after", [0, 12])
@pytest.mark.parametrize("name", PARALLEL_AGENTS)
def test_proposals_asked_together_differ_and_are_told_in_any_order(setting, name, asked_after):
    graph, space, budget = setting
    agent = agents.create_agent(name, space, budget, seed=2)
    drive(agent, graph, space, budget, asked_after)
    together = [agent.ask() for _ in range(4)]
    assert len({proposal.key() for proposal in together}) == 4, "a parallel runner would evaluate one candidate twice"
    assert agent.in_flight == 4
    agent.discard(together.pop(1))
    for proposal in reversed(together):
        agent.tell(proposal, analytic_score(graph, space, agent.project(proposal)))
    assert (agent.told, agent.in_flight) == (asked_after + 3, 0)
    assert len(drive(agent, graph, space, budget, 2)) == 2


@pytest.mark.parametrize("name", ["tpe", "nsga2", "nas"])
def test_a_discarded_repeat_leaves_the_first_proposal_pending(setting, name):
    graph, space, budget = setting
    agent = agents.create_agent(name, space, budget, seed=1)
    drive(agent, graph, space, budget, 3)
    first = agent.ask()
    pending = agent._pending.take(first.key())
    agent._pending.add(first.key(), pending)
    agent._pending.add(first.key(), agent._study.ask())  # the same proposal drawn again while the first is in flight
    agent.discard(first)  # the runner drops the repeat ...
    assert first.key() in agent._pending  # ... and the first one's trial still waits for its result
    agent.tell(first, analytic_score(graph, space, agent.project(first)))
    own = agent._study.get_trials(deepcopy=False)
    assert [t.number for t in own if t.state == optuna.trial.TrialState.RUNNING] == []
    assert pending.number in [t.number for t in own if t.state == optuna.trial.TrialState.COMPLETE]


def test_nsga2_pairs_each_front_point_with_its_own_trial_when_told_out_of_order(setting):
    graph, space, budget = setting
    agent = agents.create_agent("nsga2", space, budget, seed=0)
    asked = [agent.ask() for _ in range(6)]
    scores = {p.key(): analytic_score(graph, space, agent.project(p)) for p in asked}
    for proposal in reversed(asked):
        agent.tell(proposal, scores[proposal.key()])
    front = agent.pareto_front()
    assert front
    for point in front:
        assert point.accuracy == scores[point.proposal.key()].accuracy


def test_asking_together_leaves_the_sequential_draws_as_they_were(setting):
    graph, space, budget = setting
    alone, together = (agents.create_agent("random", space, budget, seed=4) for _ in range(2))
    first = alone.ask()
    assert together.ask() == first
    second = together.ask()
    assert second != first  # drawn while the first is in flight
    together.discard(second)
    for agent in (alone, together):
        agent.tell(first, analytic_score(graph, space, agent.project(first)))
    assert together.in_flight == 0 and together.draw_key == (1,)
    assert together.ask() == alone.ask()  # nothing in flight: the draw a sequential run makes


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_seeds_change_the_proposals(setting, name):
    _, space, budget = setting
    a = agents.create_agent(name, space, budget, seed=0).ask()
    b = agents.create_agent(name, space, budget, seed=1).ask()
    assert a != b


def test_uniform_proposes_one_policy_that_projects_to_a_uniform_ratio(setting):
    graph, space, budget = setting
    agent = agents.create_agent("uniform", space, budget)
    proposals = drive(agent, graph, space, budget, 5)
    assert len(proposals) == 1
    keeps = set(space.to_params(proposals[0][1]).values())
    assert len(keeps) == 1
    assert graph.predict_macs(proposals[0][1]) >= 0.9 * budget.constraints[0].limit


def test_tpe_beats_random_search_on_the_analytic_objective(setting):
    graph, space, budget = setting

    def best(name, seed):
        agent = agents.create_agent(name, space, budget, seed=seed)
        return max(analytic_score(graph, space, p).accuracy for _, p in drive(agent, graph, space, budget, 30))

    tpe = sum(best("tpe", s) for s in range(3))
    rnd = sum(best("random", s) for s in range(3))
    assert tpe > rnd


def test_unknown_agent_names_the_allowed_ones(setting):
    _, space, budget = setting
    with pytest.raises(autocomp.ConfigError, match=r"unknown agent 'amc-not-yet'; allowed: .*tpe, uniform"):
        agents.create_agent("amc-not-yet", space, budget)


def test_unknown_agent_options_are_refused_with_the_allowed_ones(setting):
    _, space, budget = setting
    with pytest.raises(autocomp.ConfigError, match="agent 'random' has no option 'warmup'; allowed: none"):
        agents.create_agent("random", space, budget, options={"warmup": 3})


def tiny_setting():
    """Four channel groups (8, 8, 16, 16 channels) at two spatial sizes, 40% of the MACs."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 4),
    )
    graph = ModelGraph(model, torch.zeros(1, 1, 8, 8))
    space = Space.from_graph(graph, PruneRatio(0.25), frozen=())
    return graph, space, Budget(graph, [Constraint("macs", 0.4 * graph.predict_macs(autocomp.Policy()))])


WEIGHTS = (0.2, 1.0, 0.4, 0.8)
"""How much each group's channels matter to the analytic accuracy: the optimum is far from uniform."""


def kept_fraction_score(graph, policy) -> float:
    """prod_g (kept_g / channels_g) ^ w_g: concave in the log, with an optimum a search must find."""
    return math.prod(
        (kept / group.channels) ** w for kept, group, w in zip(graph.kept_channels(policy), graph.groups, WEIGHTS)
    )


def brute_force_optimum(graph, space, budget) -> float:
    """The best score over every combination of kept channel counts the space allows within the budget."""
    counts = [range(max(1, round(0.25 * group.channels)), group.channels + 1) for group in graph.groups]
    best = 0.0
    for combo in itertools.product(*counts):
        policy = space.to_policy({d.name: c / g.channels for d, c, g in zip(space.decisions, combo, graph.groups)})
        if budget.feasible(policy):
            best = max(best, kept_fraction_score(graph, policy))
    return best


LEARNING_AGENTS = [
    "amc",
    "cmaes",
    "gp",
    "tpe",
]  # nsga2 spreads along the cost axis: 150 evaluations, tests/test_optuna_agents.py
EVALUATIONS = 40


@pytest.mark.parametrize("name", LEARNING_AGENTS)
def test_learning_agents_reach_95_percent_of_the_brute_force_optimum(name):
    graph, space, budget = tiny_setting()
    optimum = brute_force_optimum(graph, space, budget)
    for seed in range(3):
        agent, best = agents.create_agent(name, space, budget, seed=seed), 0.0
        for _ in range(EVALUATIONS):
            proposal = agent.ask()
            projected = agent.project(proposal)
            score = kept_fraction_score(graph, projected)
            agent.tell(proposal, EvalResult(score, Cost(graph.predict_macs(projected), 0, 0, 0), 0.0))
            best = max(best, score)
        assert best >= 0.95 * optimum, f"{name}, seed {seed}: {best / optimum:.1%} of the optimum"
    uniform = kept_fraction_score(graph, budget.project(space, space.largest()))
    assert uniform < 0.95 * optimum  # the test has teeth: one ratio for all does not get there
