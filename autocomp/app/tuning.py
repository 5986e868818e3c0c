"""Hyperparameter studies over the search itself (`autocomp tune`).

A tune file names a run config, the keys to tune and their ranges. Each trial of the tune study
runs that config with the trial's values: a whole small search (``target: search``, e.g. proxy
steps, the proxy's learning rate, the distillation temperature, DDPG's learning rate) or the
final fine-tune of one policy (``target: finetune``). A trial is scored by its fine-tuned model's
accuracy on the held-out split of the training set; the test set decides nothing here (each
search's report still holds its test accuracy, to be read once the tuning is over).

The tune study lives in ``OUT/tune.db``, or in a shared storage (``--storage``) where several
`autocomp tune` processes share its trials as `autocomp worker` processes share a search:
``trials`` WAITING trials are planned once, each taken by one process, its values drawn by the
sampler when it is taken. A trial's folder is named by the config it runs, so a trial retried
after a crash resumes its search where it stopped, and a repeated draw reads the finished one
back. Each search runs on the runner its config names (local or Ray).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from autocomp.app.config import RunConfig, load_config
from autocomp.app.config.tune import TuneConfig
from autocomp.app.run_folder import check_creatable, first_difference
from autocomp.app.runners.context import check_names
from autocomp.app.runners.optuna_access import running_trial, storage_of, suggest, trial_id
from autocomp.app.runners.shared import drain, heartbeat, plan_trials, retry_running
from autocomp.app.runners.storage import check_storage, shared_storage
from autocomp.app.runners.study import complete_value
from autocomp.errors import AutocompError, ConfigError
from autocomp.locking import file_lock
from autocomp.logs import logger
from autocomp.policy import Policy

log = logger(__name__)

TUNE_STUDY = "autocomp-tune"
TUNE_FILE = "tune.yaml"
"""The tune config a tune folder belongs to (written when the folder is claimed)."""
SUMMARY_FILE = "tune.json"
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class TuneResult:
    out: Path
    summary: dict[str, Any]


def tune(tune_config: TuneConfig, out: str | Path, storage: str | None = None) -> TuneResult:
    """Run (or resume, or join through a shared ``storage``) the tune study of ``tune_config`` in the folder ``out``."""
    out = Path(out)
    base = check_tune_config(tune_config)
    policy = _policy(tune_config)
    identity = _identity(tune_config, base, policy)
    _check_folder(out)
    check_storage(storage)
    out.mkdir(parents=True, exist_ok=True)
    with _only_process(out, shared=storage is not None):
        url = storage if storage is not None else f"sqlite:///{out / 'tune.db'}"
        study = optuna.create_study(
            storage=shared_storage(url, tune_config.heartbeat, tune_config.max_failures),
            study_name=TUNE_STUDY,
            direction="maximize",
            load_if_exists=True,
        )
        recorded = study.user_attrs.get("config")
        if storage is None and recorded not in (None, identity):
            raise ConfigError(
                f"tune folder {out} holds a tuning of another tune config (first difference: "
                f"{first_difference(recorded, identity)}); choose another --out."
            )
        plan_trials(study, tune_config.trials, identity)
        (out / TUNE_FILE).write_text(yaml.safe_dump(tune_config.model_dump(mode="json"), sort_keys=False))
        if storage is None:
            abandoned = retry_running(study)
            if abandoned:
                log.info(f"tune: {abandoned} trial(s) left running by an interrupted run are tried again")
        drain(study, lambda taken: _run_trial(study, taken, tune_config, policy, out), POLL_SECONDS)
    summary = summarize(study, tune_config)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return TuneResult(out, summary)


def check_tune_config(tune_config: TuneConfig) -> RunConfig:
    """The run config with the shared overrides; `ConfigError` naming the first tuned value it does not accept."""
    base = load_config(tune_config.config, tune_config.set)
    if base.runner.storage is not None:
        raise ConfigError(
            f"the tuned run config names runner.storage {base.runner.storage!r}, which every trial's search "
            "would share; leave it out (each trial's search keeps its study in its own folder)."
        )
    check_names(base)
    for key, param in tune_config.params.items():
        for value in param.extremes():
            try:
                check_names(load_config(tune_config.config, [*tune_config.set, _override(key, value)]))
            except ConfigError as error:
                raise ConfigError(f"tuned key {key!r} at {value!r}: {error}") from None
    return base


def _policy(tune_config: TuneConfig) -> Policy | None:
    if tune_config.policy is None:
        return None
    path = Path(tune_config.policy)
    return Policy.load(path / "policy.json" if path.is_dir() else path)


def _identity(tune_config: TuneConfig, base: RunConfig, policy: Policy | None) -> dict[str, Any]:
    """What a tuning is, whatever paths its files lie at: the tune settings a resumed tuning may not change, the run
    config's contents and the policy's."""
    return {
        **tune_config.model_dump(mode="json", exclude={"trials", "config", "policy"}),
        "run_config": _what(base),
        "policy": None if policy is None else policy.key(),
    }


def _check_folder(out: Path) -> None:
    """Refuse a folder that cannot be created, or holds something other than a tuning (nothing is written)."""
    check_creatable(out, "tune folder")
    if not out.exists():
        return
    if not (out / TUNE_FILE).exists() and any(out.iterdir()):
        raise ConfigError(f"tune folder {out} is not empty and holds no tuning; choose another --out.")


@contextmanager
def _only_process(out: Path, shared: bool) -> Iterator[None]:
    """Hold ``out``'s lock (a local tuning's running trials are then known to be left by a dead process)."""
    if shared:  # processes sharing a storage may share the folder too; stale trials are found by heartbeat
        yield
        return
    with file_lock(
        out / ".lock",
        busy=f"another autocomp tune is running in {out}; wait for it, or share a study "
        "between processes with --storage URL.",
    ):
        yield


def _run_trial(
    study: optuna.Study, taken: FrozenTrial, tune_config: TuneConfig, policy: Policy | None, out: Path
) -> None:
    """Draw the taken trial's values, run its search (or fine-tune) with a heartbeat, and tell the study."""
    with heartbeat(study, trial_id(taken), tune_config.heartbeat):
        study.sampler = _sampler(tune_config, taken.number)
        trial = running_trial(study, taken)
        params = {key: suggest(trial, key, param.distribution()) for key, param in tune_config.params.items()}
        log.info(
            f"tune: trial {taken.number} of {tune_config.trials}: "
            + ", ".join(
                f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items()
            )
        )
        started = time.perf_counter()
        try:
            config = load_config(tune_config.config, [*tune_config.set, *(_override(k, v) for k, v in params.items())])
            folder = out / "trials" / f"{tune_config.target}-{_digest(config, policy)}"
            trial.set_user_attr("folder", str(folder.relative_to(out)))
            with file_lock(out / ".locks" / folder.name):  # a repeated draw waits, then reads the result back
                # a policy is given exactly for target finetune (`TuneConfig`'s validation)
                value, attrs = _search(config, folder) if policy is None else _finetune(config, policy, folder)
        except AutocompError as error:  # a value the run refuses, or a search without a result: this trial failed
            trial.set_user_attr("error", str(error))
            log.warning(f"[yellow]tune: trial {taken.number} failed:[/] {error}")
            _tell(study, trial, None)
            return
        except KeyboardInterrupt:  # not the trial's fault: it waits, with its values, for the next run (or process)
            storage_of(study).set_trial_state_values(trial_id(taken), TrialState.WAITING)
            raise
        except Exception as error:  # a bug, not a setting: the trial is failed and the tuning stops
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            _tell(study, trial, None)
            raise
        for key, attr in {**attrs, "seconds": time.perf_counter() - started}.items():
            trial.set_user_attr(key, attr)
        _tell(study, trial, value)
    log.info(f"tune: trial {taken.number} scored {100 * value:.2f}% on held-out data")


def _tell(study: optuna.Study, trial: optuna.trial.Trial, value: float | None) -> None:
    """Finish ``trial`` (FAIL when ``value`` is None), unless another process already failed it as stale (its retry
    then finds the finished search in its folder)."""
    try:
        study.tell(trial, value, state=TrialState.FAIL if value is None else TrialState.COMPLETE)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning(
            f"[yellow]tune: trial {trial.number} was failed by another process meanwhile (no heartbeat "
            "reached it in time); its retry reads this result back"
        )


def _search(config: RunConfig, folder: Path) -> tuple[float, dict[str, Any]]:
    """A whole search (resumed when its folder holds part of it); its fine-tuned model's held-out accuracy."""
    from autocomp.app.search_loop import search

    best = search(config, folder).report.best
    return best.finetuned_val_accuracy, {"macs": best.macs, "search_val_accuracy": best.val_accuracy}


def _finetune(config: RunConfig, policy: Policy, folder: Path) -> tuple[float, dict[str, Any]]:
    """``policy``'s model fine-tuned with ``config.finetune``; its held-out accuracy (read back when done before)."""
    from autocomp.app.baseline import prepare_baseline
    from autocomp.app.runners.context import build_evaluator, prepare
    from autocomp.app.search_loop import fine_tune
    from autocomp.evaluate import accuracy

    done = folder / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        return result["val_accuracy"], {"macs": result["macs"]}
    setup = prepare(config)
    baseline = prepare_baseline(config, setup.data, setup.runtime)
    evaluator = build_evaluator(config, setup, baseline.model)
    folder.mkdir(parents=True, exist_ok=True)
    small = fine_tune(config, setup, evaluator, policy, folder)
    result = {
        "val_accuracy": accuracy(small, setup.data.val, config.evaluator.batch_size, setup.runtime),
        "macs": setup.graph.predict_macs(policy),
    }
    done.write_text(json.dumps(result) + "\n")
    return result["val_accuracy"], {"macs": result["macs"]}


def _sampler(tune_config: TuneConfig, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that draws trial ``number``'s values, seeded from (seed, number) so a resumed tuning draws the same."""
    seed = tune_config.seed * 1_000_003 + number
    if tune_config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune_config.startup, constant_liar=True)


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def _what(config: RunConfig) -> dict[str, Any]:
    """What a run computes: its config without where and on how many threads it runs."""
    return {key: value for key, value in config.to_dict().items() if key not in ("runner", "threads")}


def _digest(config: RunConfig, policy: Policy | None) -> str:
    """A short name of what a trial computes (its run config, and the policy it fine-tunes)."""
    what = {"run": _what(config), "policy": None if policy is None else policy.key()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def summarize(study: optuna.Study, tune_config: TuneConfig) -> dict[str, Any]:
    """What tune.json records: every trial's values, state and folder, and the best one."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    rows = [
        {
            "trial": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "folder": t.user_attrs.get("folder"),
            "error": t.user_attrs.get("error"),
        }
        for t in trials
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=complete_value, default=None)
    return {
        "target": tune_config.target,
        "objective": "fine-tuned model's accuracy on the held-out split of the training set",
        "trials": len(trials),
        "complete": len(complete),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "best": None
        if best is None
        else {
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "folder": best.user_attrs.get("folder"),
            "set": [_override(k, v) for k, v in best.params.items()],
        },
        "all": rows,
    }
