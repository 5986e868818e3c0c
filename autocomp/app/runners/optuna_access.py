"""The Optuna internals autocomp relies on, all here (pyproject.toml bounds optuna below the next major version and
tests/test_optuna_access.py checks each one on a real study).

Optuna's public API runs trials inside ``study.optimize`` or hands them out through ``study.ask``. A shared study
hands out trials it planned itself (WAITING, taken by one process, failed and retried by another) and resumes a
tuning trial with the values it was given; both need the study's storage, each trial's storage id, and a value drawn
for a trial that the public ``ask`` did not create.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.trial.Trial) -> int:
    """The storage's id of ``trial`` (unique across studies, unlike its number)."""
    return trial._trial_id


def running_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.trial.Trial:
    """A live trial object for ``trial``, which this process took from the study itself (not through ``ask``)."""
    return optuna.trial.Trial(study, trial._trial_id)


def suggest(trial: optuna.trial.Trial, name: str, distribution: BaseDistribution) -> Any:
    """``name``'s value for ``trial`` drawn from ``distribution`` (or the value it already has, as ``suggest_*``)."""
    return trial._suggest(name, distribution)
