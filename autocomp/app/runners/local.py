"""The local runner: one process asks, evaluates and tells, one candidate after another."""

from __future__ import annotations

import optuna

from autocomp.app.config import RunConfig
from autocomp.app.runners.context import Setup, evaluate, learn, replay
from autocomp.app.runners.study import finished_trials, make_pruner, progress_note
from autocomp.evaluate import Evaluator
from autocomp.logs import logger
from autocomp.progress import advance_trials, progress_bar

log = logger(__name__)


def run_local(config: RunConfig, setup: Setup, evaluator: Evaluator, study: optuna.Study) -> None:
    """Evaluate candidates until the study holds ``search.trials`` finished trials (a resumed run replays them first).

    A trial is written only once it is finished, so a run killed in the middle of a candidate
    loses that candidate and nothing else.
    """
    pruner = make_pruner(config.evaluator)
    done = finished_trials(study)
    replay(setup, evaluator, done)
    if done:
        log.info(f"search: resuming with {len(done)} finished trials from the study")
    remaining = config.search.trials - len(done)
    with progress_bar() as bar:
        task = bar.add_task(
            f"search ({config.search.agent}, {setup.runtime.device})",
            total=config.search.trials,
            completed=len(done),
            info="",
        )
        while remaining > 0:
            proposal = setup.agent.ask()
            if proposal is None:
                break
            trial, policy, result = evaluate(setup, evaluator, proposal, study, pruner)
            study.add_trial(trial)
            learn(setup, proposal, policy, result)
            remaining -= 1
            advance_trials(bar, task, config.search.trials - remaining, progress_note(study, evaluator))
