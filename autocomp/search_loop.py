"""The search loop: space + agent + evaluator + Optuna study under a budget, then the finish."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

import agents
from autocomp import io, models
from autocomp.baseline import Baseline, prepare_baseline
from autocomp.compress import get_criterion
from autocomp.config import RunConfig
from autocomp.cost import Cost, compare_latency_ms, measure
from autocomp.data import DataBundle
from autocomp.errors import InfeasibleError
from autocomp.evaluate import EvalResult, Evaluator, EvaluatorSettings, Fidelity, ProxyTraining, Reporter, accuracy
from autocomp.graph import ModelGraph
from autocomp.policy import Policy
from autocomp.progress import console, progress_bar
from autocomp.report import REPORT_VERSION, write_report
from autocomp.run_folder import check_run_folder, claim_run_folder
from autocomp.train import Distillation, TrainSettings, train
from search_spaces import Budget, Space
from search_spaces.from_config import budget_from_config, latency_target, space_from_config

STUDY_NAME = "autocomp"
LATENCY_BATCH = 64


@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class _Setup:
    data: DataBundle
    example: torch.Tensor
    graph: ModelGraph
    space: Space
    budget: Budget
    baseline_cost: Cost
    agent: agents.Agent


def _validate(config: RunConfig) -> _Setup:
    """Every check a user's config can fail, before anything is written or trained."""
    agents.agent_options(config.search.agent, config.search.options)  # before the data: a typo fails fast
    get_criterion(config.search.criterion)
    data = config.data.load()
    model = models.create(config.model.name, num_classes=data.num_classes, in_channels=data.in_channels,
                          **config.model.kwargs)
    example = data.example_input()
    graph = ModelGraph(model, example)
    space = space_from_config(graph, config.space)
    baseline_cost = measure(model, example, latency_target(config))
    budget = budget_from_config(config, graph, space, baseline_cost)
    agent = agents.create_agent(config.search.agent, space, budget, seed=config.search.seed,
                                projection=config.space.projection, options=config.search.options)
    return _Setup(data, example, graph, space, budget, baseline_cost, agent)


def evaluator_settings(config: RunConfig) -> EvaluatorSettings:
    """The evaluator settings a run config asks for."""
    ev = config.evaluator
    return EvaluatorSettings(
        fidelity=Fidelity(ev.fidelity, steps=ev.steps, epochs=ev.epochs), proxy=ProxyTraining(**ev.proxy.model_dump()),
        bn_batches=ev.bn_batches, batch_size=ev.batch_size, val_examples=ev.val_examples, report_every=ev.report_every,
        report_examples=ev.report_examples, criterion=config.search.criterion, reconstruct=config.search.reconstruct,
        seed=config.search.seed, latency=latency_target(config))


def _open_study(run_dir: Path) -> optuna.Study:
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{run_dir / 'study.db'}", study_name=STUDY_NAME,
                               direction="maximize", load_if_exists=True)


def _result_of(trial: optuna.trial.FrozenTrial) -> EvalResult:
    """The evaluation a finished trial records (for the agent and the evaluator's cache on resume)."""
    attrs = trial.user_attrs
    cost = Cost.from_dict(attrs) if "macs" in attrs else None
    return EvalResult(attrs.get("accuracy", trial.value if trial.value is not None else math.nan), cost,
                      attrs["seconds"], loss=attrs.get("loss", math.nan), error=attrs.get("error"),
                      retry=attrs.get("retry", False), curve=tuple(sorted(trial.intermediate_values.items())),
                      stopped_at=attrs.get("stopped_at"))


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)


def _record(study: optuna.Study, space: Space, proposal: Policy, policy: Policy, budget: Budget,
            score_key: str, result: EvalResult, probe: bool) -> None:
    attrs: dict[str, Any] = {"policy": policy.to_dict(), "score_key": score_key, "seconds": result.seconds,
                             "cached": result.cached, "probe": probe}
    value = None
    if result.failed:
        attrs.update(error=result.error, retry=result.retry)
        state = optuna.trial.TrialState.FAIL
    else:
        attrs.update(result.cost.to_dict(), accuracy=result.accuracy, loss=result.loss,
                     feasible=not probe and budget.feasible_cost(result.cost))
        if result.stopped_at is None:
            state, value = optuna.trial.TrialState.COMPLETE, result.accuracy
        else:
            state = optuna.trial.TrialState.PRUNED
            attrs["stopped_at"] = result.stopped_at
    study.add_trial(optuna.trial.create_trial(params=space.to_params(proposal), distributions=space.distributions(),
                                              value=value, state=state, user_attrs=attrs,
                                              intermediate_values={} if result.cached else dict(result.curve)))


def _pruning_reporter(study: optuna.Study, pruner: optuna.pruners.BasePruner | None, space: Space,
                      proposal: Policy) -> Reporter | None:
    """Feeds a candidate's intermediate scores to an Optuna pruner, which compares them with the study's trials."""
    if pruner is None:
        return None
    values: dict[int, float] = {}

    def report(step: int, score: float) -> bool:
        values[step] = score
        running = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params=space.to_params(proposal),
                                            distributions=space.distributions(), intermediate_values=values)
        return not pruner.prune(study, running)

    return report


def _make_pruner(name: str) -> optuna.pruners.BasePruner | None:
    return {"none": None, "median": optuna.pruners.MedianPruner(n_startup_trials=5)}[name]


def _run_trials(config: RunConfig, setup: _Setup, evaluator: Evaluator, study: optuna.Study) -> None:
    agent = setup.agent
    pruner = _make_pruner(config.evaluator.pruner)
    done = _finished(study)
    for trial in done:  # resume: the agent relearns everything the study remembers, the cache every score
        result, proposal = _result_of(trial), setup.space.to_policy(trial.params)
        agent.replay(proposal)  # as in the live loop: ask, observe the measured cost, then tell
        if result.cost is not None and not trial.user_attrs.get("cached"):
            setup.budget.observe(Policy.from_dict(trial.user_attrs["policy"]), result.cost)
        agent.tell(proposal, None if result.failed else result)
        if "score_key" in trial.user_attrs:
            evaluator.remember(trial.user_attrs["score_key"], result)
    if done:
        console.log(f"search: resuming with {len(done)} finished trials from the study")
    remaining = config.search.trials - len(done)
    with progress_bar() as bar:
        task = bar.add_task(f"search ({config.search.agent})", total=config.search.trials, completed=len(done), info="")
        while remaining > 0:
            proposal = agent.ask()
            if proposal is None:
                break
            policy = agent.project(proposal)
            result = evaluator.score(policy, _pruning_reporter(study, pruner, setup.space, proposal))
            _record(study, setup.space, proposal, policy, setup.budget, evaluator.score_key(policy), result,
                    probe=agent.is_probe(proposal))
            if result.cost is not None and not result.cached:
                setup.budget.observe(policy, result.cost)
            agent.tell(proposal, None if result.failed else result)
            remaining -= 1
            best = _best_trial(study)
            info = "" if best is None else f"best {100 * best.value:.2f}% at {best.user_attrs['macs']:,} MACs"
            bar.update(task, advance=1, info=info)


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    feasible = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.user_attrs.get("feasible")]
    return max(feasible, key=lambda t: (t.value, -t.user_attrs["macs"]), default=None)


def _finish(config: RunConfig, setup: _Setup, evaluator: Evaluator, baseline: Baseline, policy: Policy,
            run_dir: Path) -> tuple[torch.nn.Module, float]:
    """Fine-tune the chosen policy's model with distillation, then measure test accuracy once."""
    small = evaluator.build(policy)
    finetune = config.finetune
    settings = TrainSettings(**finetune.model_dump(exclude={"temperature", "alpha"}))
    distill = Distillation(baseline.model, temperature=finetune.temperature, alpha=finetune.alpha)
    checkpoint = run_dir / f"finetune-{policy.key()}.ckpt"  # a new best policy never resumes another's weights
    train(small, setup.data.train, settings, checkpoint=checkpoint, distill=distill, label="fine-tune")
    checkpoint.unlink(missing_ok=True)
    return small, accuracy(small, setup.data.test)


def _finished_report(run_dir: Path, best: optuna.trial.FrozenTrial, trials: int) -> dict[str, Any] | None:
    """The report of an earlier finish of the same trials with the same best, if there is one."""
    path = run_dir / "report.json"
    if not (path.exists() and (run_dir / "model.pt").exists()):
        return None
    report = json.loads(path.read_text())
    same = (report.get("version") == REPORT_VERSION and report.get("trials") == trials
            and report.get("best", {}).get("trial") == best.number)
    return report if same else None


def _report(config: RunConfig, setup: _Setup, baseline: Baseline, study: optuna.Study, best: optuna.trial.FrozenTrial,
            small: torch.nn.Module, test_accuracy: float, wall_seconds: float) -> dict[str, Any]:
    """Everything report.json records: baseline and best model, constraint, trials, wall time, config."""
    modules = dict(small.named_modules())
    trials = _finished(study)
    latency = compare_latency_ms({"baseline": baseline.model, "best": small}, setup.example, LATENCY_BATCH)
    best_cost = measure(small, setup.example, latency_target(config))
    for constraint in setup.budget.constraints:
        if constraint.value_of(best_cost) > constraint.limit:  # only a timing can move: the trial measured it within
            console.log(f"[yellow]warning:[/] the final model measures {constraint.describe(constraint.value_of(best_cost))}"
                        " on this run, over the limit its trial measured within: timing noise on this machine")
    return {
        "version": REPORT_VERSION,
        "model": config.model.name,
        "data": config.data.name,
        "agent": config.search.agent,
        "constraints": [{"metric": c.metric, "limit": c.limit, "max": given.max, "relative": given.relative,
                         "best": best_cost.to_dict()[c.metric], "baseline": setup.baseline_cost.to_dict()[c.metric]}
                        for c, given in zip(setup.budget.constraints, config.constraints)],
        "space": {"decisions": len(setup.space.decisions), "projection": config.space.projection,
                  "axes": sorted({d.kind for d in setup.space.decisions})},
        "trials": len(trials),
        "probe_trials": sum(bool(t.user_attrs.get("probe")) for t in trials),
        "pareto_front": pareto_front(trials, setup.budget),
        "failed_trials": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "pruned_trials": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "cached_trials": sum(bool(t.user_attrs.get("cached")) for t in trials),
        "evaluator": {"fidelity": config.evaluator.fidelity, "describe": Fidelity(
            config.evaluator.fidelity, steps=config.evaluator.steps, epochs=config.evaluator.epochs).describe(),
            "seconds_per_evaluation": _seconds_per_evaluation(trials)},
        "wall_seconds": wall_seconds,
        "latency": {"batch_size": LATENCY_BATCH, "threads": torch.get_num_threads(), "device": "cpu"},
        "baseline": {"val_accuracy": baseline.val_accuracy, "test_accuracy": baseline.test_accuracy,
                     **setup.baseline_cost.to_dict(), "latency_ms": latency["baseline"]},
        "best": {"trial": best.number, "val_accuracy": best.value, "test_accuracy": test_accuracy,
                 **best_cost.to_dict(), "latency_ms": latency["best"],
                 "channels": {layer.name: [modules[layer.name].weight.shape[0], layer.out_channels]
                              for layer in setup.graph.prunable}},
        "config": config.to_dict(),
    }


def pareto_front(trials: list[optuna.trial.FrozenTrial], budget: Budget) -> list[dict[str, Any]]:
    """The measured-feasible candidates no other beats on both held-out accuracy and measured budget use, cheapest first."""
    points = [(t.number, t.value, budget.measured_usage(Cost.from_dict(t.user_attrs))) for t in trials
              if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("feasible")]
    first = {}  # a repeated candidate (a cache hit) is one point: its earliest trial
    for number, value, usage in points:
        first.setdefault((value, usage), number)
    front = [(number, value, usage) for (value, usage), number in first.items()
             if not any(v >= value and u <= usage and (v, u) != (value, usage) for v, u in first)]
    return [{"trial": number, "val_accuracy": value, "usage": usage} for number, value, usage in sorted(front, key=lambda p: p[2])]


def _seconds_per_evaluation(trials: list[optuna.trial.FrozenTrial]) -> float:
    """Mean seconds of the trials that were evaluated (cache hits took none)."""
    evaluated = [t.user_attrs["seconds"] for t in trials if not t.user_attrs.get("cached")]
    return sum(evaluated) / max(1, len(evaluated))


def search(config: RunConfig, out: str | Path) -> SearchResult:
    """Run (or resume) the constrained search of ``config`` in the run folder ``out``."""
    started = time.perf_counter()
    run_dir = Path(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    setup = _validate(config)
    check_run_folder(run_dir, config)
    claim_run_folder(run_dir, config)

    baseline = prepare_baseline(config, setup.data)
    evaluator = Evaluator(baseline.model, setup.example, setup.data.train, setup.data.val, evaluator_settings(config))
    study = _open_study(run_dir)
    _run_trials(config, setup, evaluator, study)

    best = _best_trial(study)
    if best is None:
        scored = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if scored:
            raise InfeasibleError(f"none of the {len(scored)} evaluated candidates met the budget when measured; run "
                                  "more trials (later ones are projected with the measurements so far) or loosen the limit.")
        raise RuntimeError(f"no candidate of the {len(study.trials)} trials could be evaluated; see the errors in {run_dir / 'study.db'}.")
    finished = _finished_report(run_dir, best, len(_finished(study)))
    if finished is not None:
        console.log(f"search: {run_dir} is already finished with trial {best.number} as the best")
        return SearchResult(run_dir, finished)
    policy = Policy.from_dict(best.user_attrs["policy"])
    small, test_accuracy = _finish(config, setup, evaluator, baseline, policy, run_dir)
    io.save(small, run_dir / "model.pt", setup.example)
    policy.save(run_dir / "policy.json")

    report = _report(config, setup, baseline, study, best, small, test_accuracy, time.perf_counter() - started)
    write_report(run_dir, report)
    return SearchResult(run_dir, report)
