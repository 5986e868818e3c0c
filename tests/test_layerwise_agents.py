"""AMC and HAQ: the layer-by-layer environment, its states and actions, the wall, rewards, replay and resume."""

import itertools
import math

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_checker import check_env

import agents
import autocomp
from agents.gym_env import CompressionEnv
from agents.layer_env import (
    KINDS,
    Episode,
    reward_of,
    static_features,
    to_action,
    to_value,
)
from autocomp.cost import Cost
from autocomp.evaluate import EvalResult
from search_spaces import Axis, BitWidth, Budget, Constraint, PruneRatio, Space
from tests.test_agents import kept_fraction_score, tiny_setting

SMALL = {"hidden": (16, 16), "warmup": 2, "gradient_steps": 5, "batch_size": 8}


def score(graph, policy):
    return EvalResult(kept_fraction_score(graph, policy), Cost(graph.predict_macs(policy), 0, 0, 0), 0.0)


def bits_setting(with_keep: bool):
    """The tiny model with 2-8 weight bits per layer (and keep per group), under a size limit of 35% of float."""
    graph, _, _ = tiny_setting()
    axes = [Axis(PruneRatio(0.25), "group")] * with_keep + [Axis(BitWidth(2, 8), "layer")]
    space = Space.from_graph(graph, axes, frozen=())
    full = graph.predict_size_bits(autocomp.Policy())
    return graph, space, Budget(graph, [Constraint("size_bytes", 0.35 * full / 8)])


def test_the_environment_passes_stable_baselines3_check_env():
    graph, space, budget = tiny_setting()
    env = CompressionEnv(space, budget, score=lambda policy: score(graph, policy))
    check_env(env, warn=True, skip_render_check=True)


def test_an_episode_ends_with_the_projected_policy_scored_and_rewarded():
    graph, space, budget = tiny_setting()
    env = CompressionEnv(space, budget, score=lambda policy: score(graph, policy), reward="accuracy")
    env.reset(seed=0)
    steps = 0
    while True:
        observation, reward, terminated, _truncated, info = env.step(np.array([1.0], dtype=np.float32))
        steps += 1
        assert env.observation_space.contains(observation)
        if terminated:
            break
        assert reward == 0.0
    assert steps == len(space.decisions)
    assert budget.feasible(info["policy"]) and budget.usage(info["policy"]) >= 0.97
    assert reward == pytest.approx(kept_fraction_score(graph, info["policy"]))


def test_behind_the_wall_every_prefix_leaves_the_later_decisions_room():
    _graph, space, budget = tiny_setting()
    episode = Episode(space, budget, static_features(space, budget), wall=True)
    while not episode.done:
        episode.act(1.0)  # always ask for everything: the wall must say no in time
        rest_lowest = {d.name: d.dim.low for d in space.decisions if d.name not in episode.decided}
        assert budget.feasible(space.to_policy({**rest_lowest, **episode.decided}))
    assert budget.feasible(episode.policy())
    first = space.decisions[0]
    assert episode.decided[first.name] == first.dim.high  # nothing forces the first decision down on its own
    assert budget.usage(episode.policy()) > 0.99  # and the last ones take exactly what is left


def test_without_the_wall_actions_are_taken_as_they_are():
    _graph, space, budget = tiny_setting()
    episode = Episode(space, budget, static_features(space, budget), wall=False)
    while not episode.done:
        episode.act(1.0)
    assert episode.policy() == space.largest()


def test_states_embed_the_decision_and_the_budget_spent_so_far():
    _graph, space, budget = tiny_setting()
    features = static_features(space, budget)
    assert features.shape == (len(space.decisions), 1 + len(KINDS) + 8)
    assert features.min() >= 0 and features.max() <= 1
    assert features[:, 0].tolist() == pytest.approx(np.linspace(0, 1, len(space.decisions)).tolist())
    episode = Episode(space, budget, features, wall=True)
    saved, rest = [], []
    while not episode.done:
        observation = episode.observation()
        assert observation[: features.shape[1]].tolist() == pytest.approx(features[episode.step].tolist())
        saved.append(observation[-4])
        rest.append(observation[-3])
        episode.act(-1.0)  # every decision at its lowest
    assert saved[0] == 0 and all(b > a for a, b in itertools.pairwise(saved))  # budget use saved grows
    assert all(b < a for a, b in itertools.pairwise(rest))  # what the later decisions can add shrinks


@pytest.mark.parametrize("dim", [PruneRatio(0.25), BitWidth(2, 8)])
def test_actions_map_onto_the_range_and_back(dim):
    graph, _, _ = tiny_setting()
    space = Space.from_graph(graph, [Axis(dim, "group")], frozen=())
    decision = space.decisions[0]
    assert to_value(decision, -1.0) == decision.dim.low and to_value(decision, 1.0) == decision.dim.high
    values = [to_value(decision, a) for a in np.linspace(-1, 1, 200)]
    assert values == sorted(values)
    for value in set(values):
        assert to_value(decision, to_action(decision, value)) == pytest.approx(value)
    if isinstance(dim, BitWidth):  # equal bins: each whole bit stands for the same share of the actions
        counts = np.unique(values, return_counts=True)[1]
        assert counts.max() - counts.min() <= 1


def test_rewards_are_amcs_and_a_failure_is_the_worst():
    result = EvalResult(0.9, Cost(1000, 0, 0, 0), 0.0)
    assert reward_of(result, "accuracy", 5000) == pytest.approx(0.9)
    assert reward_of(result, "error", 5000) == pytest.approx(-0.1)
    assert reward_of(result, "error_log_macs", 5000) == pytest.approx(-0.1 * math.log(1000))
    worst = EvalResult(0.0, Cost(5000, 0, 0, 0), 0.0)  # nothing right at the largest model's MACs
    for name in ("accuracy", "error", "error_log_macs"):
        assert reward_of(None, name, 5000) == pytest.approx(reward_of(worst, name, 5000))
        assert reward_of(None, name, 5000) < reward_of(result, name, 5000)


def test_a_candidate_stopped_at_a_rung_is_rewarded_with_its_estimated_final_score():
    _, space, budget = tiny_setting()
    agent = agents.create_agent("amc", space, budget, seed=0, options={**SMALL, "reward": "accuracy"})
    cost = Cost(1000, 0, 0, 0)
    stopped_first = EvalResult(0.3, cost, 0.0, curve=((0, 0.3),), stopped_at=0)
    finished = [
        EvalResult(0.8, cost, 0.0, curve=((0, 0.5), (4, 0.7), (8, 0.8))),
        EvalResult(0.9, cost, 0.0, curve=((0, 0.4), (4, 0.8), (8, 0.9))),
    ]
    stopped = [
        EvalResult(0.2, cost, 0.0, curve=((0, 0.2),), stopped_at=0),
        EvalResult(0.6, cost, 0.0, curve=((0, 0.35), (4, 0.6)), stopped_at=4),
    ]
    for result in (stopped_first, *finished, *stopped):
        proposal = agent.ask()
        agent.tell(proposal, result)
    steps = len(space.decisions)
    rewards = agent.model.replay_buffer.rewards[: 5 * steps : steps, 0]
    # before any finished candidate: as scored; then + the mean gap of the finished ones (rung 0: 0.3 and 0.5;
    # rung 4: 0.1 and 0.1); a finished candidate: its own score
    assert rewards == pytest.approx([0.3, 0.8, 0.9, 0.2 + 0.4, 0.6 + 0.1])


@pytest.mark.parametrize("name", ["amc", "haq"])
def test_a_resumed_agent_rebuilds_the_replay_buffer_and_the_networks(name):
    graph, space, budget = tiny_setting()
    first = agents.create_agent(name, space, budget, seed=1, options=SMALL)
    history = []
    for _ in range(5):
        proposal = first.ask()
        result = score(graph, first.project(proposal))
        first.tell(proposal, result)
        history.append((proposal, result))
    resumed = agents.create_agent(name, space, budget, seed=1, options=SMALL)
    for proposal, result in history:
        resumed.tell(proposal, result)
    size = first.model.replay_buffer.size()
    assert size == 5 * len(space.decisions) == resumed.model.replay_buffer.size()
    for field in ("observations", "actions", "rewards", "next_observations", "dones"):
        assert np.array_equal(
            getattr(first.model.replay_buffer, field)[:size], getattr(resumed.model.replay_buffer, field)[:size]
        )
    for a, b in zip(first.model.policy.parameters(), resumed.model.policy.parameters()):
        assert torch.equal(a, b)


def test_the_warm_up_explores_then_the_actor_decides():
    graph, space, budget = tiny_setting()
    agent = agents.create_agent("amc", space, budget, seed=0, options={**SMALL, "noise": 1e-6})
    for _ in range(2):
        assert agent.exploring
        proposal = agent.ask()
        agent.tell(proposal, score(graph, agent.project(proposal)))
    assert not agent.exploring
    episode = Episode(space, budget, agent.env.features, wall=True)
    while not episode.done:  # with (almost) no noise the proposal is the actor's own, behind the wall
        episode.act(float(agent.model.predict(episode.observation(), deterministic=True)[0][0]))
    assert space.to_params(agent.ask()) == pytest.approx(space.to_params(episode.policy()), abs=1e-4)


@pytest.mark.parametrize("with_keep", [False, True])
def test_haq_decides_whole_bits_and_lowers_them_onto_a_size_limit(with_keep):
    graph, space, budget = bits_setting(with_keep)
    agent = agents.create_agent("haq", space, budget, seed=0, options=SMALL)
    for _ in range(4):
        proposal = agent.ask()
        policy = agent.project(proposal)
        bits = [v for d, v in space.to_params(policy).items() if d.startswith("weight_bits")]
        assert bits and all(float(b).is_integer() and 2 <= b <= 8 for b in bits)
        assert budget.feasible(policy)
        measured = autocomp.measure(
            autocomp.compress(graph.model, policy, torch.zeros(1, 1, 8, 8)), torch.zeros(1, 1, 8, 8)
        )
        assert measured.size_bytes <= budget.constraints[0].limit
        agent.tell(proposal, score(graph, policy))
    kinds = {d.kind for d in space.decisions}
    assert kinds == ({"keep", "weight_bits"} if with_keep else {"weight_bits"})


def test_amc_decides_behind_the_wall_only():
    _, space, budget = tiny_setting()
    with pytest.raises(autocomp.ConfigError, match="projection 'scale' is not allowed"):
        agents.create_agent("amc", space, budget, projection="scale")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"reward": "loss"}, "reward 'loss' is not known"),
        ({"algorithm": "sac"}, "algorithm 'sac' is not known"),
        ({"noise_decay": 1.5}, r"noise_decay must be a number in \(0, 1\], got 1.5"),
        ({"tau": "fast"}, "tau must be a number in"),
        ({"hidden": [64, 0]}, "hidden must be one or more layer sizes"),
        ({"warmup": -1}, "warmup must be a whole number"),
    ],
)
def test_bad_options_are_refused(options, message):
    _, space, budget = tiny_setting()
    with pytest.raises(autocomp.ConfigError, match=message):
        agents.create_agent("amc", space, budget, options=options)
