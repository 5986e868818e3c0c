"""What every runner works with: the checked config's space, budget and agent, and one candidate's evaluation."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import optuna
import torch
from torch import nn

import agents
from autocomp.app.config import RunConfig
from autocomp.app.runners.reachable import check_reachable
from autocomp.app.runners.study import finished_trial, pruning_reporter, result_of
from autocomp.app.spaces import budget_from_config, latency_target, space_from_config
from autocomp.compress import get_criterion
from autocomp.cost import Cost, LatencyMeter, measure
from autocomp.data import DataBundle
from autocomp.evaluate import (
    EvalResult,
    Evaluator,
    EvaluatorSettings,
)
from autocomp.graph import ModelGraph
from autocomp.logs import logger
from autocomp.models.user import load_checkpoint
from autocomp.policy import Policy
from autocomp.runtime import Runtime
from search_spaces import Budget, Space

log = logger(__name__)


@dataclass(frozen=True)
class Setup:
    """A checked config's working parts: data, the model's graph, the space, the budget and the agent."""

    data: DataBundle
    example: torch.Tensor
    graph: ModelGraph
    space: Space
    budget: Budget
    baseline_cost: Cost
    agent: agents.Agent
    runtime: Runtime
    """The device, precision and data workers every model of the run trains and is scored with."""
    latency_meter: LatencyMeter | None = None
    """Measures candidates' latency beside the baseline's (None: latency is not constrained)."""


def check_names(config: RunConfig) -> None:
    """The checks of ``config`` that need no data: its agent, the agent's options and the criterion exist."""
    agents.agent_options(config.search.agent, config.search.options)
    get_criterion(config.search.criterion)


def prepare(config: RunConfig, seed: int | None = None) -> Setup:
    """Every check a user's config can fail, before anything is written or trained (``seed``: the agent's, if not the
    config's)."""
    optuna.logging.set_verbosity(logging.WARNING)  # agents' own studies too
    check_names(config)
    runtime = config.runtime()  # an unavailable GPU is refused before the data is read
    check_reachable(config)
    data = config.data.load()
    model = config.model.build(data.num_classes, data.in_channels)
    if config.model.checkpoint is not None:  # refused now if it does not fit, not after the run folder is written
        load_checkpoint(model, config.model.checkpoint)
    example = data.example_input()
    graph = ModelGraph(model, example)
    for line in graph.whole_lines():
        log.info(line)
    space = space_from_config(graph, config.space)
    target = latency_target(config)
    meter = None if target is None else LatencyMeter(model, example, target)
    baseline_cost = measure(model, example)
    if meter is not None:
        baseline_cost = dataclasses.replace(baseline_cost, latency_ms=meter.reference_ms)
    budget = budget_from_config(config, graph, space, baseline_cost)
    agent = agents.create_agent(
        config.search.agent,
        space,
        budget,
        seed=config.search.seed if seed is None else seed,
        projection=config.space.projection,
        options=config.search.options,
    )
    wanted = agent.evaluations_wanted()
    if wanted is not None and config.search.trials < wanted:
        log.warning(
            f"[yellow]warning:[/] {config.search.agent} needs about {wanted} trials to reach its result here;"
            f" with search.trials={config.search.trials} it stops part-way, close to uniform's result"
        )
    return Setup(data, example, graph, space, budget, baseline_cost, agent, runtime, meter)


def evaluator_settings(config: RunConfig) -> EvaluatorSettings:
    """The evaluator settings a run config asks for."""
    ev = config.evaluator
    return EvaluatorSettings(
        fidelity=ev.level(),
        proxy=ev.proxy,
        bn_batches=ev.bn_batches,
        batch_size=ev.batch_size,
        val_examples=ev.val_examples,
        report_every=ev.report_every,
        report_examples=ev.report_examples,
        criterion=config.search.criterion,
        reconstruct=config.search.reconstruct,
        seed=config.search.seed,
        latency=latency_target(config),
        cache_mb=ev.cache_mb,
    )


def build_evaluator(config: RunConfig, setup: Setup, baseline: nn.Module) -> Evaluator:
    """The evaluator of ``config``'s candidates, pruning copies of ``baseline`` (the teacher of their fine-tunes)."""
    return Evaluator(
        baseline,
        setup.example,
        setup.data.train,
        setup.data.val,
        evaluator_settings(config),
        setup.runtime,
        setup.latency_meter,
    )


def replay(setup: Setup, evaluator: Evaluator, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Tell the agent finished trials in order, as the live loop did (ask, observe the measured cost, tell), and refill
    the evaluator's cache with their scores."""
    for trial in trials:
        result, proposal = result_of(trial), setup.space.to_policy(trial.params)
        setup.agent.replay(proposal)
        if result.cost is not None and not trial.user_attrs.get("cached"):
            setup.budget.observe(Policy.from_dict(trial.user_attrs["policy"]), result.cost)
        setup.agent.tell(proposal, None if result.failed else result)
        if "score_key" in trial.user_attrs:
            evaluator.remember(trial.user_attrs["score_key"], result)


def evaluate(
    setup: Setup,
    evaluator: Evaluator,
    proposal: Policy,
    study: optuna.Study | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.trial.FrozenTrial, Policy, EvalResult]:
    """Project and score ``proposal``: the finished trial that records it, the evaluated policy and its result.

    With a ``pruner``, the candidate's intermediate scores are compared with ``study``'s trials (unless the agent's
    candidates are not `stoppable`).
    """
    policy = setup.agent.project(proposal)
    reporter = None
    if study is not None and setup.agent.stoppable:
        reporter = pruning_reporter(study, pruner, setup.space, proposal)
    result = evaluator.score(policy, reporter)
    trial = finished_trial(
        setup.space,
        proposal,
        policy,
        setup.budget,
        evaluator.score_key(policy),
        result,
        probe=setup.agent.is_probe(proposal),
    )
    return trial, policy, result


def learn(setup: Setup, proposal: Policy, policy: Policy, result: EvalResult) -> None:
    """What a run learns from an evaluated candidate: the budget its measured cost, the agent its result."""
    if result.cost is not None and not result.cached:
        setup.budget.observe(policy, result.cost)
    setup.agent.tell(proposal, None if result.failed else result)
