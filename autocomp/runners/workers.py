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
worker's trial stays RUNNING there.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import agents
from autocomp.config import RunConfig
from autocomp.errors import ConfigError
from autocomp.evaluate import Evaluator
from autocomp.policy import Policy
from autocomp.progress import console, progress_bar
from autocomp.run_folder import config_identity, first_difference
from autocomp.runners.context import Setup, evaluate, learn, replay
from autocomp.runners.study import STUDY_NAME, best_so_far, fail_stale_trials, finished_trials, make_pruner
from search_spaces import Space

PLAN_WAIT_SECONDS = 120.0


def plan(study: optuna.Study, config: RunConfig) -> None:
    """Make the study hold ``search.trials`` trials, enqueueing the missing ones as WAITING; refuse a study of
    another config."""
    _check_config(study, config)
    wanted = config.search.trials
    if study.user_attrs.get("planned", 0) >= wanted:
        return
    marker = f"{STUDY_NAME}.plan.{wanted}"
    try:
        optuna.create_study(storage=study._storage, study_name=marker)
    except optuna.exceptions.DuplicatedStudyError:  # another process plans: wait for it
        _wait_for_plan(study, wanted)
        return
    try:
        if study.user_attrs.get("planned", 0) < wanted:  # checked again now that this process holds the marker
            _check_config(study, config)
            for _ in range(wanted - study.user_attrs.get("planned", 0)):
                study.enqueue_trial({}, skip_if_exists=False)
            study.set_user_attr("planned", wanted)
    finally:
        optuna.delete_study(storage=study._storage, study_name=marker)


def _check_config(study: optuna.Study, config: RunConfig) -> None:
    mine = config_identity(config.to_dict())
    recorded = study.user_attrs.get("config")
    if recorded is None:
        study.set_user_attr("config", mine)
    elif recorded != mine:
        raise ConfigError(f"the shared study holds a search of another config (first difference: "
                          f"{first_difference(recorded, mine)}); give every worker the same config, or use another storage.")


def _wait_for_plan(study: optuna.Study, wanted: int) -> None:
    deadline = time.monotonic() + PLAN_WAIT_SECONDS
    while study.user_attrs.get("planned", 0) < wanted:
        if time.monotonic() > deadline:
            raise ConfigError(f"the shared study's plan of {wanted} trials was begun by another process that has not "
                              f"finished it in {PLAN_WAIT_SECONDS:.0f} s; if that process died, delete the study "
                              f"'{STUDY_NAME}.plan.{wanted}' from the storage and start again.")
        time.sleep(0.5)


def _take_waiting(study: optuna.Study) -> FrozenTrial | None:
    """A WAITING trial moved to RUNNING for this worker alone (None when none is left)."""
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
            return storage.get_trial(trial._trial_id)
    return None


@contextmanager
def _heartbeat(study: optuna.Study, trial_id: int, seconds: float) -> Iterator[None]:
    """Beat for ``trial_id`` every ``seconds`` while the block runs (storages without heartbeats: nothing)."""
    storage = study._storage
    if not (hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval()):  # journal files: no beats
        yield
        return
    storage.record_heartbeat(trial_id)  # at once: a trial that never beat is never found stale
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(seconds):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name=f"autocomp-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Worker:
    """Takes the shared study's WAITING trials one at a time until none is waiting or running."""

    def __init__(self, config: RunConfig, setup: Setup, evaluator: Evaluator, study: optuna.Study) -> None:
        self.config, self.setup, self.evaluator, self.study = config, setup, evaluator, study
        self.seeded = False
        """Whether the agent has been seeded from this worker's first trial."""
        self.pruner = make_pruner(config.evaluator.pruner)
        self.told: set[int] = set()
        self.evaluated = 0

    def run(self) -> int:
        """Evaluate trials until the study's plan is done; the number this worker evaluated."""
        with progress_bar() as bar:
            task = bar.add_task(f"worker ({self.config.search.agent})", total=self.config.search.trials,
                                completed=len(finished_trials(self.study)), info="")
            while True:
                fail_stale_trials(self.study)
                trial = _take_waiting(self.study)
                if trial is not None:
                    self._evaluate(trial)
                elif not self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    break
                else:  # others are still evaluating: one of them may die and its trial come back
                    time.sleep(min(1.0, self.config.runner.heartbeat))
                bar.update(task, completed=len(finished_trials(self.study)), info=best_so_far(self.study))
        console.log(f"worker: the study's {self.config.search.trials} trials are done, {self.evaluated} of them here")
        return self.evaluated

    def _catch_up(self) -> None:
        """Tell the agent every trial finished since it last looked, in trial order."""
        new = [t for t in finished_trials(self.study) if t.number not in self.told]
        replay(self.setup, self.evaluator, new)
        self.told.update(t.number for t in new)

    def _evaluate(self, taken: FrozenTrial) -> None:
        storage, trial_id = self.study._storage, taken._trial_id
        with _heartbeat(self.study, trial_id, self.config.runner.heartbeat):
            storage.set_trial_user_attr(trial_id, "worker", f"{socket.gethostname()}:{os.getpid()}")
            if not self.seeded:  # workers start alike; the first trial each takes is its own
                self._seed_agent(taken.number)
            self._catch_up()
            if taken.params:  # a retry of a trial whose worker died: the same candidate again
                proposal = self.setup.space.to_policy(taken.params)
            else:
                proposal = self.setup.agent.ask()
                if proposal is None:
                    storage.set_trial_user_attr(trial_id, "error", f"agent {self.config.search.agent} had nothing "
                                                                   "left to propose")
                    storage.set_trial_state_values(trial_id, TrialState.FAIL)
                    self.told.add(taken.number)
                    return
                _set_params(storage, trial_id, self.setup.space, proposal)
            record, policy, result = evaluate(self.setup, self.evaluator, proposal, self.study, self.pruner)
            _finish(storage, trial_id, record)
        self.told.add(taken.number)
        self.evaluated += 1
        learn(self.setup, proposal, policy, result)

    def _seed_agent(self, number: int) -> None:
        search = self.config.search
        agent = agents.create_agent(search.agent, self.setup.space, self.setup.budget,
                                    seed=search.seed * 1_000_003 + number, projection=self.config.space.projection,
                                    options=search.options)
        self.setup, self.seeded = dataclasses.replace(self.setup, agent=agent), True


def _set_params(storage: optuna.storages.BaseStorage, trial_id: int, space: Space, proposal: Policy) -> None:
    """Record ``proposal``'s decisions as the running trial's params (a retry evaluates them again)."""
    distributions = space.distributions()
    for name, value in space.to_params(proposal).items():
        storage.set_trial_param(trial_id, name, distributions[name].to_internal_repr(value), distributions[name])


def work(config: RunConfig) -> int:
    """`autocomp worker`: join the shared study at ``runner.storage`` and evaluate its trials until none is left; the
    number this worker evaluated."""
    from autocomp.baseline import prepare_baseline
    from autocomp.runners.context import build_evaluator, prepare
    from autocomp.runners.study import open_study, shared_storage

    if config.runner.storage is None:
        raise ConfigError("a worker needs the shared study's storage: give --storage URL (or runner.storage).")
    if config.threads:
        torch.set_num_threads(config.threads)
    setup = prepare(config)
    if not setup.agent.parallel:
        raise ConfigError(f"agent {config.search.agent!r} needs each result before its next proposal, so it cannot share "
                          "a study with other workers; run it with `autocomp search` alone.")
    runner = config.runner
    study = open_study(shared_storage(runner.storage, runner.heartbeat, runner.max_failures))
    plan(study, config)
    baseline = prepare_baseline(config, setup.data)
    return Worker(config, setup, build_evaluator(config, setup, baseline.model), study).run()


def _finish(storage: optuna.storages.BaseStorage, trial_id: int, record: FrozenTrial) -> None:
    """Write ``record`` (a finished trial made by `finished_trial`) onto the running trial ``trial_id``."""
    for key, value in record.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for step, value in record.intermediate_values.items():
        storage.set_trial_intermediate_value(trial_id, step, value)
    storage.set_trial_state_values(trial_id, record.state,
                                   None if record.state != TrialState.COMPLETE else [record.value])
