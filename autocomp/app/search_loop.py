"""The search loop: space + agent + evaluator + Optuna study under a budget, then the finish."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import optuna
import torch

from autocomp import io
from autocomp.app.baseline import Baseline, prepare_baseline
from autocomp.app.config import RunConfig
from autocomp.app.report import Finalist, Report, load_report, write_report
from autocomp.app.report.record import (
    BestRecord,
    ConstraintRecord,
    EvaluatorRecord,
    FrontPoint,
    HistoryPoint,
    LatencySettings,
    ModelRecord,
    ReferenceRecord,
    RuntimeRecord,
    SensitivityProfile,
    SpaceRecord,
)
from autocomp.app.run_folder import check_run_folder, claim_run_folder
from autocomp.app.runners.context import Setup, build_evaluator, prepare
from autocomp.app.runners.local import run_local
from autocomp.app.runners.reference import score_reference
from autocomp.app.runners.storage import safe_url
from autocomp.app.runners.study import (
    complete_value,
    finished_trials,
    open_study,
    reference_trial,
    study_storage,
    top_trials,
)
from autocomp.app.runners.workers import Worker, plan
from autocomp.app.sensitivity import add_warm_start, load_or_measure, load_profile
from autocomp.compress import InputResize
from autocomp.compress.lowrank import LowRank
from autocomp.cost import Cost, compare_latency_ms, measure
from autocomp.errors import ConfigError, InfeasibleError, SearchError, disk_full
from autocomp.evaluate import Evaluator, accuracy
from autocomp.evaluate.memory import release_free_memory
from autocomp.files import save_state
from autocomp.graph import LayerInfo
from autocomp.logs import logger
from autocomp.policy import Policy
from autocomp.runtime import Runtime, Throughput, torch_threads
from autocomp.train import Distillation, train
from search_spaces import Budget
from search_spaces.pareto import pareto_front

log = logger(__name__)
FINAL_LATENCY_ROUNDS = 9
"""Rounds the final model's latency is measured in beside the baseline (a candidate's: `WHOLE_MODEL_ROUNDS`)."""

LATENCY_BATCH, LATENCY_PIXELS = 64, 64 * 28 * 28
"""The report times baseline and best on a batch of 64 images, or of fewer when they are larger than 28x28: about
this many pixels per channel (one image at 224x224, where a batch of 64 would hold gigabytes of activations and take
minutes to time)."""


def latency_batch(example: torch.Tensor) -> int:
    """The batch size the report times models at, for inputs shaped like ``example``."""
    return max(1, min(LATENCY_BATCH, LATENCY_PIXELS // (example.shape[-1] * example.shape[-2])))


@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    report: Report


def fine_tune(
    config: RunConfig,
    setup: Setup,
    evaluator: Evaluator,
    policy: Policy,
    folder: Path,
    throughput: Throughput | None = None,
) -> torch.nn.Module:
    """``policy``'s model fine-tuned as ``config.finetune`` says, distilled from the baseline, on the run's device
    (resumable: its checkpoint lives in ``folder`` until the fine-tune ends)."""
    small = evaluator.build(policy)
    finetune = config.finetune
    distill = Distillation(evaluator.teacher, temperature=finetune.temperature, alpha=finetune.alpha)
    checkpoint = folder / f"finetune-{policy.key()}.ckpt"  # a new best policy never resumes another's weights
    train(
        small,
        setup.data.train,
        finetune.training(),
        checkpoint=checkpoint,
        distill=distill,
        label="fine-tune",
        runtime=setup.runtime,
        throughput=throughput,
    )
    release_free_memory()  # the training's freed activations back to the system before the scoring passes
    checkpoint.unlink(missing_ok=True)
    return small


def fine_tune_finalists(
    config: RunConfig,
    setup: Setup,
    evaluator: Evaluator,
    finalists: list[optuna.trial.FrozenTrial],
    run_dir: Path,
    throughput: Throughput | None = None,
) -> tuple[optuna.trial.FrozenTrial, torch.nn.Module, list[Finalist]]:
    """Each of ``finalists`` fine-tuned (`fine_tune`) and scored on the held-out data; the most accurate wins (ties: the
    search's order). Each finished fine-tune is kept in ``run_dir/finalists/`` until the choice is made, so an
    interrupted finish resumes with the next finalist."""
    folder = run_dir / "finalists"
    folder.mkdir(exist_ok=True)
    scored: list[Finalist] = []
    policies = [Policy.from_dict(trial.user_attrs["policy"]) for trial in finalists]
    files = [folder / f"{policy.key()}.pt" for policy in policies]
    for trial, policy, saved in zip(finalists, policies, files):
        if saved.exists():  # fine-tuned before an interruption
            held_out = torch.load(saved, map_location="cpu", weights_only=True)["finetuned_val_accuracy"]
        else:
            small = fine_tune(config, setup, evaluator, policy, run_dir, throughput)
            held_out = accuracy(small, setup.data.val, config.evaluator.batch_size, setup.runtime)
            save_state({"model": small.state_dict(), "finetuned_val_accuracy": held_out}, saved)
        scored.append(Finalist(trial.number, complete_value(trial), held_out))
        if len(finalists) > 1:
            log.info(
                f"finalist: trial {trial.number} scored {100 * complete_value(trial):.2f}% in the search, "
                f"{100 * held_out:.2f}% held-out after the fine-tune"
            )
    winner = max(range(len(finalists)), key=lambda index: (scored[index].finetuned_val_accuracy, -index))
    small = evaluator.build(policies[winner])
    small.load_state_dict(torch.load(files[winner], map_location=setup.runtime.device, weights_only=True)["model"])
    return finalists[winner], small.eval(), scored


def _finished_report(run_dir: Path, finalists: list[optuna.trial.FrozenTrial], trials: int) -> Report | None:
    """The report of an earlier finish of the same trials with the same finalists, if there is one (a report this
    autocomp cannot read is finished again)."""
    if not (run_dir / "model.pt").exists():
        return None
    try:
        report = load_report(run_dir)
    except ConfigError:
        return None
    same = report.trials == trials and [f.trial for f in report.finalists] == [t.number for t in finalists]
    return report if same else None


def _report(
    config: RunConfig,
    setup: Setup,
    baseline: Baseline,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    small: torch.nn.Module,
    test_accuracy: float,
    finalists: list[Finalist],
    runtime: RuntimeRecord,
    wall_seconds: float,
    sensitivity: SensitivityProfile | None,
) -> Report:
    """Everything report.json records: baseline and best model (on the CPU), constraint, trials, the runtime and its
    images per second, wall time, config, the reference candidate and the sensitivity profile."""
    trials = finished_trials(study)
    meter = setup.latency_meter
    best_cost = measure(small, setup.example)
    if meter is None:  # the report's latency: eager on this CPU, the two models in turns
        batch = latency_batch(setup.example)
        latency = compare_latency_ms({"baseline": baseline.model, "best": small}, setup.example, batch)
        timed = LatencySettings(batch, torch.get_num_threads(), "cpu")
    else:  # the constrained latency, measured as the candidates were, in more rounds (more chances of unloaded ones)
        best_cost = dataclasses.replace(best_cost, latency_ms=meter.ms(small, rounds=FINAL_LATENCY_ROUNDS))
        latency = {"baseline": meter.reference_ms, "best": cast(float, best_cost.latency_ms)}
        target = meter.target
        where = "cpu (ONNX Runtime)" if target.runtime == "onnxruntime" else target.device
        timed = LatencySettings(target.batch_size, target.used_threads, where)
    for constraint in setup.budget.constraints:
        if constraint.value_of(best_cost) > constraint.limit:  # only a timing can move: the trial measured it within
            log.warning(
                f"[yellow]warning:[/] the final model measures {constraint.describe(constraint.value_of(best_cost))}"
                " on this run, over the limit its trial measured within: timing noise on this machine"
            )
    return Report(
        model=config.model.label,
        data=config.data.label,
        agent=config.search.agent,
        constraints=tuple(
            ConstraintRecord(
                c.metric, c.limit, given.max, given.relative, c.value_of(best_cost), c.value_of(setup.baseline_cost)
            )
            for c, given in zip(setup.budget.constraints, config.constraints)
        ),
        space=SpaceRecord(
            len(setup.space.decisions), config.space.projection, tuple(sorted({d.kind for d in setup.space.decisions}))
        ),
        trials=len(trials),
        probe_trials=sum(bool(t.user_attrs.get("probe")) for t in trials),
        pareto_front=report_front(trials, setup.budget),
        failed_trials=sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        pruned_trials=sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        cached_trials=sum(bool(t.user_attrs.get("cached")) for t in trials),
        evaluator=EvaluatorRecord(
            config.evaluator.fidelity,
            config.evaluator.level().describe(),
            _seconds_per_evaluation(trials),
            _rung_counts(config, trials),
        ),
        wall_seconds=wall_seconds,
        runtime=runtime,
        latency=timed,
        baseline=ModelRecord(
            baseline.val_accuracy, baseline.test_accuracy, **_costs(setup.baseline_cost), latency_ms=latency["baseline"]
        ),
        history=tuple(
            HistoryPoint(
                t.number,
                complete_value(t),
                bool(t.user_attrs.get("feasible")),
                setup.budget.measured_usage(Cost.from_dict(t.user_attrs)),
            )
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE
        ),
        best=BestRecord(
            complete_value(best),
            test_accuracy,
            **_costs(best_cost),
            latency_ms=latency["best"],
            trial=best.number,
            finetuned_val_accuracy=next(f.finetuned_val_accuracy for f in finalists if f.trial == best.number),
            channels=_measured_channels(small, setup.graph.prunable),
            bits=_bits(Policy.from_dict(best.user_attrs["policy"])),
        ),
        finalists=tuple(finalists),
        config=config.to_dict(),
        reference=_reference_record(study),
        sensitivity=sensitivity,
    )


def _rung_counts(config: RunConfig, trials: list[optuna.trial.FrozenTrial]) -> tuple[tuple[int, int], ...]:
    """At fidelity halving, each rung's steps and the candidates scored there (a cache hit is not scored again)."""
    if config.evaluator.fidelity != "halving":
        return ()
    return tuple((rung, sum(rung in t.intermediate_values for t in trials)) for rung in config.evaluator.rungs)


def _reference_record(study: optuna.Study) -> ReferenceRecord | None:
    """The reference candidate's score, when it was scored and did not fail."""
    trial = reference_trial(study)
    if trial is None or trial.state != optuna.trial.TrialState.COMPLETE:
        return None
    return ReferenceRecord(trial.number, complete_value(trial), trial.user_attrs["macs"])


def _costs(cost: Cost) -> dict[str, int]:
    """``cost``'s counts, as a `ModelRecord` takes them (its latency is the report's own timing)."""
    return {
        "macs": cost.macs,
        "params": cost.params,
        "size_bytes": cost.size_bytes,
        "size_bits": cost.size_bits,
        "bops": cost.bops,
    }


def _measured_channels(small: torch.nn.Module, layers: list[LayerInfo]) -> dict[str, tuple[int, int]]:
    """Each of ``layers``' [kept, original] output channels as the compressed model ``small`` has them (behind its input
    resize, if it has one; a factorized layer's are its second factor's)."""
    modules = dict((small.model if isinstance(small, InputResize) else small).named_modules())
    return {layer.name: (_out_channels(modules[layer.name]), layer.out_channels) for layer in layers}


def _out_channels(module: torch.nn.Module) -> int:
    return module.out_channels if isinstance(module, LowRank) else cast(torch.Tensor, module.weight).shape[0]


def _bits(policy: Policy) -> dict[str, tuple[int | None, int | None]]:
    """Each quantized layer's [weight bits, activation bits] (empty when nothing is quantized)."""
    return {name: (d.weight_bits, d.act_bits) for name, d in policy.layers.items() if d.weight_bits is not None}


def report_front(trials: list[optuna.trial.FrozenTrial], budget: Budget) -> tuple[FrontPoint, ...]:
    """The measured-feasible candidates no other beats on both held-out accuracy and measured budget use, cheapest first."""
    points = [
        (t.number, complete_value(t), budget.measured_usage(Cost.from_dict(t.user_attrs)))
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("feasible")
    ]
    first: dict[tuple[float, float], int] = {}  # a repeated candidate (a cache hit) is one point: its earliest trial
    for number, value, usage in points:
        first.setdefault((value, usage), number)
    front = pareto_front(first.items(), lambda point: point[0][0], lambda point: point[0][1])
    return tuple(FrontPoint(number, value, usage) for (value, usage), number in front)


def _runtime_report(runtime: Runtime, finetuning: Throughput, evaluator: Evaluator) -> RuntimeRecord:
    """Where the run computed and how fast: images per second of the final fine-tune, of the candidates' proxy
    fine-tunes and of their held-out scores in this process (None where none ran here)."""

    def rate(throughput: Throughput) -> float | None:
        return throughput.per_second if throughput.images else None

    return RuntimeRecord(
        str(runtime.device),
        runtime.describe(),
        runtime.precision,
        train_images_per_second=rate(finetuning),
        proxy_images_per_second=rate(evaluator.training),
        score_images_per_second=rate(evaluator.scoring),
    )


def _seconds_per_evaluation(trials: list[optuna.trial.FrozenTrial]) -> float:
    """Mean seconds of the trials that were evaluated (cache hits took none; a killed worker's trial has no time)."""
    evaluated = [
        t.user_attrs["seconds"] for t in trials if "seconds" in t.user_attrs and not t.user_attrs.get("cached")
    ]
    return sum(evaluated) / max(1, len(evaluated))


def _search_trials(
    config: RunConfig, setup: Setup, baseline: Baseline, evaluator: Evaluator, run_dir: Path
) -> optuna.Study:
    """The study of ``config``'s candidates, evaluated by its runner until the trial budget is spent; a full disk while
    the study is written (SQLite's error names no file) is a `DiskFullError` naming the study."""
    written = "the study's storage" if config.runner.storage else f"the study {run_dir / 'study.db'}"
    try:
        study = open_study(study_storage(config, run_dir))
        score_reference(config, setup, evaluator, study)
        if config.search.warm_start == "sensitivity":
            add_warm_start(config, setup, evaluator, study, load_or_measure(config, setup, baseline.model, run_dir))
        if config.runner.kind == "ray":
            from autocomp.app.runners.ray_runner import run_ray

            run_ray(config, setup, baseline, evaluator, study, run_dir)
        elif config.runner.storage is not None:  # a shared study: `autocomp worker` processes may join this one
            log.info(
                f"search: opened the shared study at {safe_url(config.runner.storage)}; more processes join it "
                "with `autocomp worker` and the same config and storage"
            )
            plan(study, config)
            Worker(config, setup, evaluator, study).run()
        else:
            run_local(config, setup, evaluator, study)
    except Exception as err:
        full = disk_full(err, written)
        if full is None:
            raise
        raise full from None
    return study


def search(config: RunConfig, out: str | Path) -> SearchResult:
    """Run (or resume) the constrained search of ``config`` in the run folder ``out`` (on ``config.threads`` torch
    threads; the process's count is restored afterwards)."""
    with torch_threads(config.threads):
        return _search(config, Path(out))


def _search(config: RunConfig, run_dir: Path) -> SearchResult:
    started = time.perf_counter()
    setup = prepare(config)
    check_run_folder(run_dir, config)
    claim_run_folder(run_dir, config)
    log.info(f"search: models train and are scored on {setup.runtime.describe()}")

    baseline = prepare_baseline(config, setup.data, setup.runtime)
    evaluator = build_evaluator(config, setup, baseline.model)
    study = _search_trials(config, setup, baseline, evaluator, run_dir)

    finalists = top_trials(study, config.finetune.finalists)
    if not finalists:
        evaluated = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if evaluated:
            raise InfeasibleError(
                f"none of the {len(evaluated)} evaluated candidates met the budget when measured; run "
                "more trials (later ones are projected with the measurements so far) or loosen the limit."
            )
        raise SearchError(
            f"no candidate of the {len(study.trials)} trials could be evaluated; see the errors in "
            f"{run_dir / 'study.db'}."
        )
    finished = _finished_report(run_dir, finalists, len(finished_trials(study)))
    if finished is not None:
        log.info(f"search: {run_dir} is already finished with trial {finished.best.trial} as the best")
        shutil.rmtree(run_dir / "finalists", ignore_errors=True)  # left by a finish stopped right after its report
        return SearchResult(run_dir, finished)
    evaluator.drop_kept_batches()
    finetuning = Throughput()
    best, small, scored = fine_tune_finalists(config, setup, evaluator, finalists, run_dir, finetuning)
    test_accuracy = accuracy(
        small, setup.data.test, config.evaluator.batch_size, setup.runtime
    )  # the test set's one use
    small.cpu()
    io.save(small, run_dir / "model.pt", setup.example)
    Policy.from_dict(best.user_attrs["policy"]).save(run_dir / "policy.json")

    runtime = _runtime_report(setup.runtime, finetuning, evaluator)
    report = _report(
        config,
        setup,
        baseline,
        study,
        best,
        small,
        test_accuracy,
        scored,
        runtime,
        time.perf_counter() - started,
        load_profile(run_dir),
    )
    write_report(run_dir, report)
    shutil.rmtree(run_dir / "finalists", ignore_errors=True)
    return SearchResult(run_dir, report)
