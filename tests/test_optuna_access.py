"""The Optuna internals of autocomp.app.runners.optuna_access, checked on real studies (SQLite and in memory): when a
new Optuna changes one of them, this fails before a shared search or tuning does."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from autocomp.app.runners.optuna_access import running_trial, storage_of, suggest, trial_id


@pytest.fixture(params=["sqlite", "memory"])
def study(request, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}" if request.param == "sqlite" else None
    return optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))


def test_the_storage_and_trial_ids_are_the_ones_the_storage_answers_with(study):
    asked = study.ask()
    study.tell(asked, 1.0)
    storage = storage_of(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    (frozen,) = study.trials
    assert trial_id(asked) == trial_id(frozen) == storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    assert storage.get_trial(trial_id(frozen)).state == TrialState.COMPLETE


def test_a_trial_taken_from_the_queue_keeps_its_given_value_and_draws_the_others(study):
    study.enqueue_trial({"x": 0.25})
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert storage_of(study).set_trial_state_values(trial_id(waiting), TrialState.RUNNING)
    trial = running_trial(study, waiting)
    x, y = suggest(trial, "x", FloatDistribution(0, 1)), suggest(trial, "y", FloatDistribution(2, 3))
    assert x == 0.25 and 2 <= y <= 3
    assert suggest(trial, "y", FloatDistribution(2, 3)) == y  # asked again: the value it has
    study.tell(trial, x + y)
    (done,) = study.trials
    assert done.params == {"x": 0.25, "y": y} and done.value == pytest.approx(0.25 + y)
