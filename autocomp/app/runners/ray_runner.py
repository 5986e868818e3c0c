"""The Ray Tune runner: the driver asks the agent and records every trial in the study, Ray workers evaluate.

Driver: `AgentSearcher`, a Tune searcher around the run's agent, hands Tune one candidate per
trial (the evaluated policy, as JSON) and, when Tune says the trial is over, records it in the
run's Optuna study exactly as the local runner would (one writer, so nothing twice) and tells
the agent. A policy found in the score cache (the study's earlier trials) is recorded as a
cached trial without Ray; a policy already in flight is not evaluated twice: the proposal is
discarded and the agent asked again (its draws are seeded apart while candidates are in
flight), and after `REPEATS_BEFORE_WAITING` repeats in a row the searcher waits for a result.
A trial that Tune gives up on after `runner.max_failures` retries is a FAIL trial (``retry``: it
may pass another time); one that ASHA stops is a PRUNED trial whose last intermediate score is
its result. A programming error (`PROGRAMMING_ERRORS`) is neither: the worker reports it rather
than raising it (Tune would retry it, then fail the trial), `StopOnBug` stops every trial, and
the driver raises it with the worker's traceback as its cause.

Workers: `evaluate_candidate` builds the evaluator once per process (the data set read on the
worker's node, the baseline's weights from the object store, never trained again), scores the
policy on the trial's CPUs and reports it. With ASHA it also reports every intermediate score
(``step``, ``score``: what ASHA compares; the local runner too scores them only for its pruner)
and measures the candidate's cost before its fine-tune, since a stopped trial never reaches the
end.

Resume: the study is the memory. A driver run again replays the study's trials into the agent
and starts a new Tune experiment (``ray/search-<n>`` in the run folder) for the trials still
missing; a driver killed mid-run loses its candidates in flight, like the local runner.
`Tuner.restore` is not used on purpose: the trials it would resume were asked from an agent that
no longer exists (the rebuilt one would propose them again), those it failed are in the study
already, and a finished experiment restored with a larger budget never asks again. Trials have
no checkpoints, so a restored trial would start from scratch anyway.

This module imports Ray at the top: only a run with ``runner.kind: ray`` imports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from autocomp.app.baseline import Baseline
from autocomp.app.config import RunConfig
from autocomp.app.runners.context import Setup, evaluator_settings, replay
from autocomp.app.runners.ray_searcher import (
    ASHA_REDUCTION,
    AgentSearcher,
    EarlyStopping,
    StopOnBug,
    encode_bug,
    encode_result,
)
from autocomp.app.runners.reachable import check_address
from autocomp.app.runners.study import best_so_far, finished_trials
from autocomp.app.spaces import latency_target
from autocomp.cost import measure
from autocomp.data import num_batches
from autocomp.errors import PROGRAMMING_ERRORS, ConfigError
from autocomp.evaluate import Evaluator
from autocomp.logs import logger
from autocomp.policy import Policy
from autocomp.progress import advance_trials, progress_bar

log = logger(__name__)

EXPERIMENTS = "ray"
"""The run folder's subfolder holding Tune's experiments."""
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0"}
"""No usage report; Tune's classic console output, which ``verbose=0`` silences (the new one prints regardless)."""


def training_steps(config: RunConfig, train_examples: torch.utils.data.Dataset) -> int:
    """Fine-tune steps of one candidate at the config's fidelity."""
    ev = config.evaluator
    return ev.level().training_steps(num_batches(train_examples, ev.proxy.batch_size, drop_last=True))


_WORKER_PARTS: dict[str, tuple[RunConfig, Evaluator, int]] = {}
"""A worker process's evaluator (with its config and training steps), kept for the next trial of the same run."""


def _worker_parts(run: dict[str, Any], baseline: dict[str, torch.Tensor]) -> tuple[RunConfig, Evaluator, int]:
    """The run's config, evaluator and training steps in this worker process, built on its first trial."""
    key = json.dumps(run, sort_keys=True)
    if key not in _WORKER_PARTS:
        _WORKER_PARTS.clear()
        config = RunConfig.model_validate(run)
        runtime = config.runtime()  # the GPU share Ray assigned (CUDA_VISIBLE_DEVICES), or the CPU
        data = config.data.load()
        model = config.model.build(data.num_classes, data.in_channels)
        model.load_state_dict(baseline)
        evaluator = Evaluator(model, data.example_input(), data.train, data.val, evaluator_settings(config), runtime)
        _WORKER_PARTS[key] = config, evaluator, training_steps(config, data.train)
    return _WORKER_PARTS[key]


def evaluate_candidate(
    trial: dict[str, Any], run: dict[str, Any], baseline: dict[str, torch.Tensor], asha: bool
) -> None:
    """Worker side of a trial (`_evaluate_candidate`). A programming error is reported rather than raised, which Tune
    would retry: the driver stops the search and raises it."""
    try:
        _evaluate_candidate(trial, run, baseline, asha)
    except PROGRAMMING_ERRORS as err:  # a score too, which ASHA requires of every report
        tune.report({"score": math.nan, "bug": encode_bug(err, ray.get_runtime_context().get_node_id())})


def _evaluate_candidate(
    trial: dict[str, Any], run: dict[str, Any], baseline: dict[str, torch.Tensor], asha: bool
) -> None:
    """Score a trial's policy, reporting the intermediate scores and then the result to Tune."""
    torch.set_num_threads(max(1, int(run["runner"]["cpus_per_trial"])))
    config, evaluator, steps = _worker_parts(run, baseline)
    policy = Policy.from_dict(json.loads(trial["policy"]))
    where: dict[str, Any] = {
        "node": ray.get_runtime_context().get_node_id(),
        "device": str(evaluator.runtime.device),
        "gpus": json.dumps(ray.get_gpu_ids()),
    }
    if asha:  # a stopped trial never reaches the end, where the evaluator measures
        where["cost"] = json.dumps(
            measure(evaluator.build(policy).cpu(), evaluator.example_inputs, latency_target(config)).to_dict()
        )

    rungs = config.evaluator.rungs if config.evaluator.fidelity == "halving" else None

    def report(step: int, score: float) -> bool:
        if step < steps:  # the last step's score comes with the result: no scheduler may stop a finished trial
            rung = {} if rungs is None else {"rung": config.evaluator.reduction ** rungs.index(step)}
            tune.report({"score": score, "step": step, **rung, **where})
        return True

    result = evaluator.score(policy, report if asha else None)  # without a scheduler, no one reads them (as locally)
    tune.report({"score": result.accuracy, **where, "evaluation": encode_result(result)})


def _worker_config(config: RunConfig) -> dict[str, Any]:
    """The config as workers get it: a data folder made absolute (Tune runs trials in their own folders)."""
    run = config.to_dict()
    if run["data"]["dir"] is not None:
        run["data"]["dir"] = str(Path(run["data"]["dir"]).resolve())
    return run


@contextmanager
def _ray_cluster(address: str | None) -> Iterator[None]:
    """Ray as the run wants it: the one already initialised, the cluster at ``address``, else a local one (shut
    down afterwards, and only what was started here)."""
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(
            include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.ERROR
        )
    else:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(f"runner.address {address!r}: could not join that Ray cluster ({err}).") from None
    try:
        yield
    finally:
        ray.shutdown()


def _concurrency(config: RunConfig, parallel: bool) -> int:
    """Trials at once: 1 for an agent that must see each result first, else ``runner.concurrent``, else as many as
    the cluster's CPUs (and GPUs) hold now (at least one: an autoscaling cluster grows when a trial waits)."""
    runner = config.runner
    if not parallel:
        return 1
    if runner.concurrent is not None:
        return runner.concurrent
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 0) // runner.cpus_per_trial
    if runner.gpus_per_trial:
        slots = min(slots, resources.get("GPU", 0) // runner.gpus_per_trial)
    return max(1, int(slots))


def _scheduler(config: RunConfig, steps: int) -> EarlyStopping | None:
    """Successive halving over the evaluator's rungs at fidelity halving (Tune's ASHA, its milestones 1, reduction,
    reduction^2, ... at the rungs: what `HalvingPruner` does locally); else ASHA over the fine-tune steps when
    ``runner.scheduler`` asks for it (first rung at the first report)."""
    ev = config.evaluator
    if ev.fidelity == "halving":
        return EarlyStopping(
            time_attr="rung",
            metric="score",
            mode="max",
            max_t=ev.reduction ** (len(ev.rungs) - 1),
            grace_period=1,
            reduction_factor=ev.reduction,
            brackets=ev.brackets,
            stop_last_trials=False,
        )
    if config.runner.scheduler != "asha":
        return None
    return EarlyStopping(
        time_attr="step",
        metric="score",
        mode="max",
        max_t=max(1, steps),
        grace_period=max(1, min(config.evaluator.report_every, steps)),
        reduction_factor=ASHA_REDUCTION,
        stop_last_trials=False,
    )


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _experiment_name(run_dir: Path) -> str:
    """A new experiment per driver run: ``search-1``, ``search-2``, ..."""
    numbers = [
        int(path.name.removeprefix("search-"))
        for path in (run_dir / EXPERIMENTS).glob("search-*")
        if path.name.removeprefix("search-").isdigit()
    ]
    return f"search-{1 + max(numbers, default=0)}"


def _tuner(
    config: RunConfig,
    setup: Setup,
    baseline: Baseline,
    searcher: AgentSearcher,
    scheduler: EarlyStopping | None,
    stopper: StopOnBug,
    experiment: Path,
) -> tune.Tuner:
    """Tune's experiment: the worker function with its resources, the searcher, the scheduler, the stopper, retries,
    storage."""
    runner = config.runner
    trainable = tune.with_parameters(
        evaluate_candidate, run=_worker_config(config), baseline=baseline.model.state_dict(), asha=scheduler is not None
    )
    trainable = tune.with_resources(trainable, {"cpu": runner.cpus_per_trial, "gpu": runner.gpus_per_trial})
    limiter = ConcurrencyLimiter(searcher, max_concurrent=_concurrency(config, setup.agent.parallel))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=limiter,
            scheduler=scheduler,
            num_samples=-1,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.parent),
            failure_config=tune.FailureConfig(max_failures=runner.max_failures),
            stop=stopper,
            verbose=0,
        ),
    )


def run_ray(
    config: RunConfig, setup: Setup, baseline: Baseline, evaluator: Evaluator, study: optuna.Study, run_dir: Path
) -> None:
    """Evaluate candidates on Ray until the study holds ``search.trials`` finished trials (a resumed run replays them
    first); every trial is recorded in ``study`` by this process, as the local runner records it. A programming error
    on a worker stops the search and is raised here, caused by the worker's traceback."""
    done = finished_trials(study)
    if len(done) >= config.search.trials:
        return
    for name, value in QUIET.items():  # the user's own settings win
        os.environ.setdefault(name, value)
    with _ray_cluster(config.runner.address):
        replay(setup, evaluator, done)
        if done:
            log.info(f"search: resuming with {len(done)} finished trials from the study")
        experiment = (run_dir / EXPERIMENTS).resolve() / _experiment_name(run_dir)
        scheduler = _scheduler(config, training_steps(config, setup.data.train)) if setup.agent.stoppable else None
        with progress_bar() as bar:
            task = bar.add_task(
                f"search ({config.search.agent}, ray)", total=config.search.trials, completed=len(done), info=""
            )

            def advance() -> None:
                advance_trials(bar, task, len(finished_trials(study)), best_so_far(study))

            stopped = (lambda trial_id: trial_id in scheduler.stopped) if scheduler is not None else (lambda _: False)
            searcher = AgentSearcher(setup, evaluator, study, config.search.trials, experiment, stopped, advance)
            stopper = StopOnBug()
            _tuner(config, setup, baseline, searcher, scheduler, stopper, experiment).fit()
        if stopper.bug is not None:
            raise stopper.bug
    if not searcher.finished:
        raise KeyboardInterrupt("the Ray Tune run was interrupted before the study held every trial")
