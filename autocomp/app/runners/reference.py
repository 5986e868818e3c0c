"""The reference candidate: uniform pruning to the same budget, scored as every candidate is, so a run shows what the
search bought over it."""

from __future__ import annotations

from typing import cast

import optuna

import agents
from autocomp.app.config import RunConfig
from autocomp.app.runners.context import Setup
from autocomp.app.runners.study import REFERENCE, finished_trial, reference_trial
from autocomp.evaluate import Evaluator
from autocomp.logs import logger
from autocomp.policy import Policy

log = logger(__name__)


def score_reference(config: RunConfig, setup: Setup, evaluator: Evaluator, study: optuna.Study) -> None:
    """Add the reference candidate's trial to ``study`` unless it holds one, the config turns it off or the agent is
    uniform (whose one candidate it is). It climbs every rung (nothing stops it) and is never told to the agent."""
    if not config.search.reference or config.search.agent == "uniform" or reference_trial(study) is not None:
        return
    # the uniform agent's default projection: one factor for all, whatever the run's projection
    uniform = agents.create_agent("uniform", setup.space, setup.budget)
    proposal = cast(Policy, uniform.ask())  # the uniform agent's one candidate: every decision at its largest
    policy = uniform.project(proposal)
    result = evaluator.score(policy)
    key = evaluator.score_key(policy)
    trial = finished_trial(setup.space, proposal, policy, setup.budget, key, result, probe=False)
    trial.set_user_attr(REFERENCE, True)
    study.add_trial(trial)
    if result.failed:
        log.warning(f"[yellow]warning:[/] the reference candidate (uniform pruning) failed: {result.error}")
        return
    setup.budget.observe(policy, result.measured_cost)
    log.info(
        f"search: uniform pruning to the budget (the reference) scores {100 * result.accuracy:.2f}% held-out "
        f"at {result.measured_cost.macs:,} MACs"
    )
