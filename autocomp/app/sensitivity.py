"""The sensitivity profile (as ModelOpt's FastNAS measures one): each decision's held-out score with only it lowered.

Every decision of the space is probed at a few points of its range (`POINTS`: 75%, 50% and 25% of the way from its
lowest to its highest value), all other decisions at their highest, each probe scored after BatchNorm recalibration;
its drop from the largest policy's score says how much that decision costs when lowered. The profile is written to
the run folder (``sensitivity.json``, whole or not at all, reused when the run resumes), drawn in the report, and gives
the search a warm start: the profile-guided policy (each decision at the lowest probed value whose drop is within one
tolerance, the smallest tolerance the budget allows, then projected onto the budget like any proposal) is evaluated
as the first candidate, which the agent is told as it is told any trial of its study.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import optuna
from torch import nn

from autocomp.app.config import RunConfig
from autocomp.app.report.record import SensitivityProfile
from autocomp.app.runners.context import Setup, evaluate, evaluator_settings
from autocomp.app.runners.study import finished_trials, make_pruner
from autocomp.evaluate import Evaluator, Fidelity
from autocomp.files import write_text
from autocomp.logs import logger
from autocomp.policy import Policy
from search_spaces import Budget, Space

log = logger(__name__)

POINTS = (0.75, 0.5, 0.25)
"""Where in each decision's range (0: its lowest value, 1: its highest) it is probed."""
PROFILE_FILE = "sensitivity.json"
WARM_START = "warm_start"
"""The user attribute marking the profile-guided candidate's trial."""


def measure_profile(space: Space, scorer: Evaluator) -> SensitivityProfile:
    """Score the largest policy and each decision at each of `POINTS` (others at their highest) with ``scorer`` (an
    evaluator at fidelity bn: BatchNorm recalibration alone)."""
    highest = space.to_params(space.largest())
    reference = _score(scorer, space, highest)
    probes = {}
    for number, decision in enumerate(space.decisions, 1):
        values = [decision.dim.low + point * (decision.dim.high - decision.dim.low) for point in POINTS]
        probes[decision.name] = tuple(
            (value, _score(scorer, space, {**highest, decision.name: value})) for value in values
        )
        log.info(f"sensitivity: {number}/{len(space.decisions)} {decision.name} probed")
    return SensitivityProfile(reference, probes)


def _score(scorer: Evaluator, space: Space, params: dict[str, float]) -> float:
    result = scorer.score(space.to_policy(params))
    return 0.0 if result.failed else result.accuracy


def load_profile(run_dir: Path) -> SensitivityProfile | None:
    """The profile in the run folder, None when it holds none."""
    path = run_dir / PROFILE_FILE
    return SensitivityProfile.from_dict(json.loads(path.read_text())) if path.exists() else None


def load_or_measure(config: RunConfig, setup: Setup, baseline: nn.Module, run_dir: Path) -> SensitivityProfile:
    """The run folder's profile if it holds one, else a new one of ``baseline`` (scored as ``config``'s candidates
    are, at fidelity bn), written there."""
    profile = load_profile(run_dir)
    if profile is not None:
        return profile
    space = setup.space
    log.info(f"sensitivity: probing {len(space.decisions)} decisions at {len(POINTS)} points each (BN recalibration)")
    settings = replace(evaluator_settings(config), fidelity=Fidelity("bn"))
    scorer = Evaluator(baseline, setup.example, setup.data.train, setup.data.val, settings, setup.runtime)
    profile = measure_profile(space, scorer)
    write_text(run_dir / PROFILE_FILE, json.dumps(profile.to_dict(), indent=1) + "\n")
    return profile


def threshold_policy(profile: SensitivityProfile, space: Space, tolerance: float) -> Policy:
    """Each decision at the lowest probed value whose drop is within ``tolerance``, else at its highest."""
    params = space.to_params(space.largest())
    for name, pairs in profile.probes.items():
        within = [value for value, score in pairs if profile.reference - score <= tolerance]
        if within:
            params[name] = min(within)
    return space.to_policy(params)


def guided_policy(profile: SensitivityProfile, space: Space, budget: Budget) -> Policy:
    """The threshold policy of the smallest tolerance the budget allows (every decision at its lowest probed value
    when none does): a proposal, which the agent's projection fills up to the budget."""
    tolerances = sorted({profile.reference - score for pairs in profile.probes.values() for _, score in pairs})
    allowed = next((t for t in tolerances if budget.feasible(threshold_policy(profile, space, t))), math.inf)
    return threshold_policy(profile, space, allowed)


def add_warm_start(
    config: RunConfig, setup: Setup, evaluator: Evaluator, study: optuna.Study, profile: SensitivityProfile
) -> None:
    """Evaluate the profile-guided policy as the study's first candidate (marked ``warm_start``) unless the study holds
    candidates already; the runner then tells it to the agent as it tells every finished trial it finds."""
    if finished_trials(study):
        return
    proposal = guided_policy(profile, setup.space, setup.budget)
    trial, _, result = evaluate(setup, evaluator, proposal, study, make_pruner(config.evaluator))
    trial.set_user_attr(WARM_START, True)
    study.add_trial(trial)
    outcome = result.error if result.failed else f"{100 * result.accuracy:.2f}% held-out"
    log.info(f"sensitivity: the profile-guided candidate scores {outcome}")
