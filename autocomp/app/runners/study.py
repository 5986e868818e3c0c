"""The run's Optuna study: where it lives, and how a candidate becomes a trial and a trial a result again."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocomp.app.config import RunConfig
from autocomp.app.config.training import EvaluatorConfig
from autocomp.app.runners.halving import HalvingPruner
from autocomp.app.runners.storage import shared_storage
from autocomp.cost import Cost
from autocomp.evaluate import EvalResult, Evaluator, Reporter
from autocomp.evaluate.timing import Timing
from autocomp.policy import Policy
from search_spaces import Budget, Space

STUDY_NAME = "autocomp"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
REFERENCE = "reference"
"""The user attribute marking the reference candidate's trial (uniform pruning to the budget)."""


def default_storage(run_dir: Path) -> str:
    """The embedded default: a SQLite file in the run folder."""
    return f"sqlite:///{run_dir / 'study.db'}"


def study_storage(config: RunConfig, run_dir: Path) -> str | optuna.storages.BaseStorage:
    """Where ``config``'s study lives: ``runner.storage`` when given, else the run folder's SQLite file."""
    runner = config.runner
    if runner.storage is None:
        return default_storage(run_dir)
    return shared_storage(runner.storage, runner.heartbeat, runner.max_failures)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's running trials whose worker stopped beating (and enqueue their retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def open_study(storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """The run's study in ``storage`` (an Optuna storage URL or object), created when it does not exist yet."""
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True)


def result_of(trial: FrozenTrial) -> EvalResult:
    """The evaluation a finished trial records (for the agent and the evaluator's cache on resume)."""
    attrs = trial.user_attrs
    cost = Cost.from_dict(attrs) if "macs" in attrs else None
    error = attrs.get("error")
    if trial.state == TrialState.FAIL and error is None:
        error = "its worker stopped before it finished"
    return EvalResult(
        attrs.get("accuracy", trial.value if trial.value is not None else math.nan),
        cost,
        attrs.get("seconds", 0.0),
        loss=attrs.get("loss", math.nan),
        error=error,
        retry=attrs.get("retry", False),
        curve=tuple(sorted(trial.intermediate_values.items())),
        stopped_at=attrs.get("stopped_at"),
        timing=Timing(**attrs["timing"]) if "timing" in attrs else Timing(attrs.get("seconds", 0.0), 0.0),
    )


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's finished trials (complete, failed, pruned) of the agent's candidates, in trial order (not the
    reference: `reference_trial`)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return sorted((t for t in trials if not t.user_attrs.get(REFERENCE)), key=lambda t: t.number)


def reference_trial(study: optuna.Study) -> FrozenTrial | None:
    """The finished trial of the reference candidate (uniform pruning to the budget), None when there is none."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return next((t for t in trials if t.user_attrs.get(REFERENCE)), None)


def complete_value(trial: FrozenTrial) -> float:
    """The value of a complete trial (the others have none)."""
    if trial.value is None:
        raise ValueError(f"trial {trial.number} has no value: it is {trial.state.name}, not complete.")
    return trial.value


def top_trials(study: optuna.Study, count: int) -> list[FrozenTrial]:
    """The ``count`` best measured-feasible complete trials of distinct policies, best first (ties: the fewer MACs, then
    the earlier trial); a policy scored twice (a cache hit) counts once."""
    feasible = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("feasible")
    ]
    ranked = sorted(feasible, key=lambda t: (-complete_value(t), t.user_attrs["macs"], t.number))
    distinct: dict[str, FrozenTrial] = {}
    for trial in ranked:
        distinct.setdefault(Policy.from_dict(trial.user_attrs["policy"]).key(), trial)
    return list(distinct.values())[:count]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best measured-feasible complete trial (ties: the fewer MACs), None when there is none."""
    top = top_trials(study, 1)
    return top[0] if top else None


def best_so_far(study: optuna.Study) -> str:
    """The progress bar's note on the best feasible trial so far ("" before there is one)."""
    best = best_trial(study)
    if best is None:
        return ""
    usage = best.user_attrs.get("usage")
    return f"best {100 * complete_value(best):.2f}% at {best.user_attrs['macs']:,} MACs" + (
        "" if usage is None else f" ({usage:.0%} of the budget)"
    )


def progress_note(study: optuna.Study, evaluator: Evaluator) -> str:
    """The progress line's note of a process that evaluates: `best_so_far` and the evaluator's images per second."""
    return "; ".join(filter(None, (best_so_far(study), evaluator.speed())))


def finished_trial(
    space: Space, proposal: Policy, policy: Policy, budget: Budget, score_key: str, result: EvalResult, probe: bool
) -> FrozenTrial:
    """The trial that records ``result``: params = ``proposal``'s decisions, value = accuracy, user attrs = the evaluated
    ``policy``, its cost and how it was scored; FAIL for a failed evaluation, PRUNED for one stopped early."""
    attrs: dict[str, Any] = {
        "policy": policy.to_dict(),
        "score_key": score_key,
        "seconds": result.seconds,
        "timing": dataclasses.asdict(result.timing),
        "cached": result.cached,
        "probe": probe,
    }
    value = None
    if result.failed:
        attrs.update(error=result.error, retry=result.retry)
        state = TrialState.FAIL
    else:
        attrs.update(
            result.measured_cost.to_dict(),
            accuracy=result.accuracy,
            loss=result.loss,
            feasible=not probe and budget.feasible_cost(result.measured_cost),
            usage=budget.measured_usage(result.measured_cost),
        )
        if result.stopped_at is None:
            state, value = TrialState.COMPLETE, result.accuracy
        else:
            state = TrialState.PRUNED
            attrs["stopped_at"] = result.stopped_at
    return optuna.trial.create_trial(
        params=space.to_params(proposal),
        distributions=space.distributions(),
        value=value,
        state=state,
        user_attrs=attrs,
        intermediate_values={} if result.cached else dict(result.curve),
    )


def pruning_reporter(
    study: optuna.Study, pruner: optuna.pruners.BasePruner | None, space: Space, proposal: Policy
) -> Reporter | None:
    """Feeds a candidate's intermediate scores to an Optuna pruner, which compares them with the study's trials."""
    if pruner is None:
        return None
    values: dict[int, float] = {}

    def report(step: int, score: float) -> bool:
        values[step] = score
        running = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params=space.to_params(proposal),
            distributions=space.distributions(),
            intermediate_values=values,
        )
        return not pruner.prune(study, running)

    return report


def make_pruner(evaluator: EvaluatorConfig) -> optuna.pruners.BasePruner | None:
    """The Optuna pruner of a config's ``evaluator`` section: successive halving's at fidelity halving, else the one
    ``pruner`` names (``none``: None)."""
    if evaluator.fidelity == "halving":
        return HalvingPruner(evaluator.rungs, evaluator.reduction, evaluator.brackets)
    return {"none": None, "median": optuna.pruners.MedianPruner(n_startup_trials=5)}[evaluator.pruner]
