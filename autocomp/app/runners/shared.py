"""A study many processes share: its trials planned once, each taken by one process, a heartbeat while it runs.

Used by `autocomp worker` (trials are candidates of one search) and `autocomp tune` (trials are
whole searches). Planning enqueues the budget as WAITING trials, guarded by a short-lived marker
study whose creation only one process wins; taking a trial moves it WAITING -> RUNNING, which
the storage grants to one process only (Optuna's own mechanism for enqueued trials). So however
many processes share the study, it ends with exactly the planned trials, none twice.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocomp.app.run_folder import first_difference
from autocomp.app.runners.optuna_access import storage_of, trial_id
from autocomp.app.runners.study import fail_stale_trials
from autocomp.errors import AutocompError, ConfigError

PLAN_WAIT_SECONDS = 120.0


def plan_trials(study: optuna.Study, wanted: int, identity: dict[str, Any]) -> None:
    """Make ``study`` hold ``wanted`` trials, enqueueing the missing ones as WAITING; refuse a study planned for another
    config than ``identity``."""
    _check_identity(study, identity)
    if study.user_attrs.get("planned", 0) >= wanted:
        return
    marker = f"{study.study_name}.plan.{wanted}"
    try:
        optuna.create_study(storage=storage_of(study), study_name=marker)
    except optuna.exceptions.DuplicatedStudyError:  # another process plans: wait for it
        _wait_for_plan(study, wanted, marker)
        return
    try:
        if study.user_attrs.get("planned", 0) < wanted:  # checked again now that this process holds the marker
            _check_identity(study, identity)
            for _ in range(wanted - study.user_attrs.get("planned", 0)):
                study.enqueue_trial({}, skip_if_exists=False)
            study.set_user_attr("planned", wanted)
    finally:
        optuna.delete_study(storage=storage_of(study), study_name=marker)


def _check_identity(study: optuna.Study, identity: dict[str, Any]) -> None:
    recorded = study.user_attrs.get("config")
    if recorded is None:
        study.set_user_attr("config", identity)
    elif recorded != identity:
        raise ConfigError(
            f"the study {study.study_name!r} holds trials of another config (first difference: "
            f"{first_difference(recorded, identity)}); give every process the same config, or use "
            "another storage."
        )


def _wait_for_plan(study: optuna.Study, wanted: int, marker: str) -> None:
    deadline = time.monotonic() + PLAN_WAIT_SECONDS
    while study.user_attrs.get("planned", 0) < wanted:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the shared study's plan of {wanted} trials was begun by another process that has not "
                f"finished it in {PLAN_WAIT_SECONDS:.0f} s; if that process died, delete the study "
                f"{marker!r} from the storage and start again."
            )
        time.sleep(0.5)


def take_waiting(study: optuna.Study) -> FrozenTrial | None:
    """A WAITING trial moved to RUNNING for this process alone (None when none is left)."""
    storage = storage_of(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if storage.set_trial_state_values(trial_id(trial), TrialState.RUNNING):
            return storage.get_trial(trial_id(trial))
    return None


def drain(
    study: optuna.Study,
    handle: Callable[[FrozenTrial], None],
    poll_seconds: float,
    progress: Callable[[], None] = lambda: None,
) -> None:
    """Take the study's WAITING trials one at a time and ``handle`` each (it must finish the trial), until none is
    waiting or running; meanwhile a trial whose process stopped beating is failed and comes back as a retry."""
    while True:
        fail_stale_trials(study)
        taken = take_waiting(study)
        if taken is not None:
            handle(taken)
        elif not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        else:  # others are still running: one of them may die and its trial come back
            time.sleep(poll_seconds)
        progress()


def retry_running(study: optuna.Study) -> int:
    """Fail every RUNNING trial and enqueue its retry (the storage's retry callback decides how often): for a study
    only this process uses, whose running trials were left by a process that died. The number failed."""
    storage = storage_of(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    retry = (
        storage.get_heartbeat_stale_trial_callback() if hasattr(storage, "get_heartbeat_stale_trial_callback") else None
    )
    for trial in running:
        storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
        if retry is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry(study, storage.get_trial(trial_id(trial)))
    return len(running)


@contextmanager
def heartbeat(study: optuna.Study, storage_id: int, seconds: float) -> Iterator[None]:
    """Beat for ``storage_id`` every ``seconds`` while the block runs (storages without heartbeats: nothing)."""
    storage = storage_of(study)
    if not (
        hasattr(storage, "record_heartbeat")
        and hasattr(storage, "get_heartbeat_interval")
        and storage.get_heartbeat_interval()
    ):  # journal files: no beats
        yield
        return
    storage.record_heartbeat(storage_id)  # at once: a trial that never beat is never found stale
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(seconds):
            try:
                storage.record_heartbeat(storage_id)
            except AutocompError:  # the storage stayed away (`PatientRDBStorage`): the block's next call says so
                return

    thread = threading.Thread(target=beat, name=f"autocomp-heartbeat-{storage_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
