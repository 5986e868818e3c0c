"""Workers sharing one Optuna study (PostgreSQL, any SQLAlchemy URL, or a journal file).

The trial budget is planned once: ``search.trials`` WAITING trials are enqueued, and a worker
takes one by moving it to RUNNING, which the storage grants to one worker only (Optuna's own
mechanism for enqueued trials). So however many workers run, the study ends with exactly the
budgeted trials, none twice. Planning itself is guarded by a short-lived marker study whose
creation only one process wins.

A worker's agent learns every trial any worker finished (in trial order, before each ask), and
is seeded from the first trial it takes, so workers propose different candidates. A running
trial beats a heartbeat; one silent for the grace period (its worker was killed) is failed by
whichever worker notices, and a copy of it is enqueued again (Optuna's `RetryFailedTrialCallback`,
up to ``runner.max_failures`` times). Journal files have no heartbeat in Optuna: a killed
worker's trial stays RUNNING there. A database outage (a restarting server) is waited out, up to a
minute (`PatientRDBStorage`); a trial failed meanwhile by another worker, because the outage outlasted
the grace period, hands its result to its retry if that still waits, so no candidate finishes twice.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import cast

import optuna
from optuna.trial import FrozenTrial, TrialState

import agents
from autocomp.app.config import RunConfig
from autocomp.app.run_folder import config_identity
from autocomp.app.runners.context import Setup, evaluate, learn, replay
from autocomp.app.runners.optuna_access import storage_of, trial_id
from autocomp.app.runners.shared import drain, heartbeat, plan_trials
from autocomp.app.runners.study import finished_trials, make_pruner, progress_note
from autocomp.errors import ConfigError
from autocomp.evaluate import Evaluator
from autocomp.logs import logger
from autocomp.policy import Policy
from autocomp.progress import advance_trials, progress_bar
from autocomp.runtime import torch_threads
from search_spaces import Space

log = logger(__name__)


def plan(study: optuna.Study, config: RunConfig) -> None:
    """Make the study hold ``search.trials`` trials, enqueueing the missing ones as WAITING; refuse a study of
    another config."""
    plan_trials(study, config.search.trials, config_identity(config.to_dict()))


class Worker:
    """Takes the shared study's WAITING trials one at a time until none is waiting or running."""

    def __init__(self, config: RunConfig, setup: Setup, evaluator: Evaluator, study: optuna.Study) -> None:
        self.config, self.setup, self.evaluator, self.study = config, setup, evaluator, study
        self.seeded = False
        """Whether the agent has been seeded from this worker's first trial."""
        self.pruner = make_pruner(config.evaluator)
        self.told: set[int] = set()
        self.evaluated = 0

    def run(self) -> int:
        """Evaluate trials until the study's plan is done; the number this worker evaluated."""
        with progress_bar() as bar:
            task = bar.add_task(
                f"worker ({self.config.search.agent}, {self.setup.runtime.device})",
                total=self.config.search.trials,
                completed=len(finished_trials(self.study)),
                info="",
            )
            drain(
                self.study,
                self._evaluate,
                min(1.0, self.config.runner.heartbeat),
                lambda: advance_trials(
                    bar, task, len(finished_trials(self.study)), progress_note(self.study, self.evaluator)
                ),
            )
        log.info(f"worker: the study's {self.config.search.trials} trials are done, {self.evaluated} of them here")
        return self.evaluated

    def _catch_up(self) -> None:
        """Tell the agent every trial finished since it last looked, in trial order."""
        new = [t for t in finished_trials(self.study) if t.number not in self.told]
        replay(self.setup, self.evaluator, new)
        self.told.update(t.number for t in new)

    def _evaluate(self, taken: FrozenTrial) -> None:
        storage, taken_id = storage_of(self.study), trial_id(taken)
        with heartbeat(self.study, taken_id, self.config.runner.heartbeat):
            storage.set_trial_user_attr(taken_id, "worker", f"{socket.gethostname()}:{os.getpid()}")
            if not self.seeded:  # workers start alike; the first trial each takes is its own
                self._seed_agent(taken.number)
            self._catch_up()
            proposal: Policy | None
            if set(taken.params) == set(self.setup.space.distributions()):  # a retry: the same candidate again
                proposal = self.setup.space.to_policy(taken.params)
            else:  # a new trial, or one whose worker died while writing its candidate (never evaluated): ask
                proposal = self.setup.agent.ask()
                if proposal is None:
                    storage.set_trial_user_attr(
                        taken_id, "error", f"agent {self.config.search.agent} had nothing left to propose"
                    )
                    storage.set_trial_state_values(taken_id, TrialState.FAIL)
                    self.told.add(taken.number)
                    return
                _set_params(storage, taken_id, self.setup.space, proposal)
            record, policy, result = evaluate(self.setup, self.evaluator, proposal, self.study, self.pruner)
            written = _record(self.study, taken, record)
        if written is None:
            log.warning(
                f"[yellow]worker:[/] trial {taken.number} was failed meanwhile (no heartbeat reached the "
                "storage in time) and its retry is another worker's, or none is left: this result is dropped"
            )
            self.setup.agent.discard(proposal)
            return
        self.told.add(written.number)
        self.evaluated += 1
        learn(self.setup, proposal, policy, result)

    def _seed_agent(self, number: int) -> None:
        search = self.config.search
        agent = agents.create_agent(
            search.agent,
            self.setup.space,
            self.setup.budget,
            seed=search.seed * 1_000_003 + number,
            projection=self.config.space.projection,
            options=search.options,
        )
        self.setup, self.seeded = dataclasses.replace(self.setup, agent=agent), True


def _set_params(storage: optuna.storages.BaseStorage, trial_id: int, space: Space, proposal: Policy) -> None:
    """Record ``proposal``'s decisions as the running trial's params (a retry evaluates them again)."""
    distributions = space.distributions()
    for name, value in space.to_params(proposal).items():
        storage.set_trial_param(trial_id, name, distributions[name].to_internal_repr(value), distributions[name])


def work(config: RunConfig) -> int:
    """`autocomp worker`: join the shared study at ``runner.storage`` and evaluate its trials until none is left; the
    number this worker evaluated (on ``config.threads`` torch threads; the process's count is restored afterwards)."""
    runner = config.runner
    if runner.storage is None:
        raise ConfigError("a worker needs the shared study's storage: give --storage URL (or runner.storage).")
    with torch_threads(config.threads):
        return _work(config, runner.storage)


def _work(config: RunConfig, storage: str) -> int:
    from autocomp.app.baseline import prepare_baseline
    from autocomp.app.runners.context import build_evaluator, prepare
    from autocomp.app.runners.storage import safe_url, shared_storage
    from autocomp.app.runners.study import open_study

    runner = config.runner
    setup = prepare(config)
    if not setup.agent.parallel:
        raise ConfigError(
            f"agent {config.search.agent!r} needs each result before its next proposal, so it cannot share "
            "a study with other workers; run it with `autocomp search` alone."
        )
    study = open_study(shared_storage(storage, runner.heartbeat, runner.max_failures))
    log.info(f"worker: joined the shared study at {safe_url(storage)}")
    plan(study, config)
    baseline = prepare_baseline(config, setup.data, setup.runtime)
    return Worker(config, setup, build_evaluator(config, setup, baseline.model), study).run()


def _record(study: optuna.Study, taken: FrozenTrial, record: FrozenTrial) -> FrozenTrial | None:
    """Write ``record`` onto the trial this worker ``taken``, or, when another worker failed that trial meanwhile (a
    storage outage outlasted the grace period), onto its retry while that still waits, so the candidate is finished
    once and evaluated once; the trial written, None when the retry is already taken (or none was made)."""
    storage = storage_of(study)
    try:
        _finish(storage, trial_id(taken), record)
        return taken
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    retry = next(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if t.system_attrs.get("retry_history", [])[-1:] == [taken.number]
        ),
        None,
    )
    if retry is None or not storage.set_trial_state_values(trial_id(retry), TrialState.RUNNING):
        return None
    _finish(storage, trial_id(retry), record)
    return retry


def _finish(storage: optuna.storages.BaseStorage, trial_id: int, record: FrozenTrial) -> None:
    """Write ``record`` (a finished trial made by `finished_trial`) onto the running trial ``trial_id``."""
    for key, value in record.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for step, value in record.intermediate_values.items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    storage.set_trial_state_values(
        trial_id, record.state, None if record.state != TrialState.COMPLETE else [cast(float, record.value)]
    )
