"""How well do the evaluator's cheap scores rank candidates? One model at one MACs budget (default ResNet-20 at 50%).

20 random feasible policies (random keep ratios per channel group, projected onto the MACs
budget as every search does). The reference for each: the compressed model fine-tuned for
one epoch with distillation from the baseline (the run's final fine-tune at 1 epoch), then
its test accuracy, averaged over ``--reference-seeds`` fine-tune seeds (their spread is
reported: the tau of one seed's references against another's is the ceiling any score can
reach). Each evaluator fidelity scores the same policies on the held-out split of the
training set, by accuracy and by -loss; the table gives its seconds per candidate and
Kendall's tau between its scores and the reference. Successive halving (the default
fidelity) scores each policy once at every rung, giving the tau of each rung, and then
replays the search: the policies in order, `HalvingPruner` stopping them, ranked as the
search sees them (every complete candidate above every stopped one, then by the score at
the furthest rung), with the share of fine-tune steps that costs.
A last phase runs 200 evaluations of distinct policies and reports the memory growth.

References are cached on disk (they take ~2 min each); the timed reference of the table is
re-measured in the same run as the fidelities, so the cost ratio compares like with like.

    python benchmarks/fidelity.py                   # ~2 h on 2 cores the first time, ~45 min after
    python benchmarks/fidelity.py --config configs/fmnist_mobilenet_v2.yaml --macs 0.3   # candidates differ more
    python benchmarks/fidelity.py --policies 6 --memory-evals 20 --no-record
    python benchmarks/fidelity.py --policies 3 --memory-evals 0 --reference-steps 5 --val-examples 500 --no-record
    python benchmarks/fidelity.py --speed 6 --device cuda --precision bf16   # resnet56 proxy candidates per second

The fourth is a smoke test only: ``--reference-steps`` cuts the references' fine-tune short (cached apart, never
recorded). ``--channel-multiple 1`` rounds kept channels as the mobilenet_v2 search-quality table did.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from results import append_section, markdown_table, print_table, trained_baseline

import agents
from autocomp import zoo
from autocomp.app.baseline import baseline_key
from autocomp.app.runners.halving import HalvingPruner
from autocomp.cache import cache_root
from autocomp.cost import measure
from autocomp.data import DataBundle, load_dataset
from autocomp.evaluate import (
    EvalResult,
    Evaluator,
    EvaluatorSettings,
    Fidelity,
    ProxyTraining,
    Reporter,
    accuracy,
    kendall_tau,
)
from autocomp.evaluate.timing import Stopwatch
from autocomp.graph import ModelGraph
from autocomp.policy import Policy
from autocomp.runtime import Runtime
from autocomp.train import Distillation, TrainSettings, train
from search_spaces import Axis, Budget, Constraint, PruneRatio, Space

FIDELITIES = {  # label: evaluator fidelity and proxy training
    "BN recalibration": (Fidelity("bn"), ProxyTraining()),
    "proxy 25 steps": (Fidelity("proxy", steps=25), ProxyTraining()),
    "proxy 50 steps": (Fidelity("proxy", steps=50), ProxyTraining()),
    "proxy 50 steps + AT": (Fidelity("proxy", steps=50), ProxyTraining(attention=1000.0)),
}


@dataclass(frozen=True)
class Reference:
    """A policy's test accuracy after the reference fine-tune, and that fine-tune's seconds."""

    test_accuracy: float
    seconds: float


@dataclass(frozen=True)
class HeldOut:
    """One held-out score of a candidate and the seconds since its evaluation began."""

    accuracy: float
    loss: float
    seconds: float


class RungRecorder(Evaluator):
    """An evaluator that keeps every held-out score of the candidate it scored last: at fidelity halving, the accuracy
    and the loss at each rung (`EvalResult.curve` has the accuracies only)."""

    held_out: list[HeldOut]
    _began: float

    def score(self, policy: Policy, report: Reporter | None = None) -> EvalResult:
        self.held_out, self._began = [], time.perf_counter()
        return super().score(policy, report)

    def _held_out(self, small: torch.nn.Module, watch: Stopwatch) -> tuple[float, float]:
        acc, loss = super()._held_out(small, watch)
        self.held_out.append(HeldOut(acc, loss, time.perf_counter() - self._began))
        return acc, loss


def random_policies(space: Space, budget: Budget, count: int, seed: int) -> list[Policy]:
    """``count`` distinct random policies, each projected onto the budget's edge."""
    agent = agents.create_agent("random", space, budget, seed=seed)
    policies: dict[str, Policy] = {}
    while len(policies) < count:
        proposal = agent.ask()
        policy = agent.project(proposal)
        agent.tell(proposal, None)
        policies.setdefault(policy.key(), policy)
    return list(policies.values())


def reference(
    evaluator: Evaluator, data, policy: Policy, settings: TrainSettings, temperature: float, alpha: float
) -> Reference:
    """Compress, recalibrate BN, fine-tune one epoch with distillation, then score on the test set."""
    start = time.perf_counter()
    small = evaluator.build(policy)
    train(
        small,
        data.train,
        settings,
        distill=Distillation(evaluator.teacher, temperature, alpha),
        label="reference",
        runtime=evaluator.runtime,
    )
    seconds = time.perf_counter() - start
    return Reference(accuracy(small, data.test, runtime=evaluator.runtime), seconds)


def candidate_speed(runtime: Runtime, count: int, steps: int = 50, batch_size: int = 128) -> list[object]:
    """Proxy candidates per second of resnet56 on 32x32 RGB images (the speed goal's measure): ``count`` random
    policies at 50% of the MACs, each BN-recalibrated, fine-tuned ``steps`` distilled steps and scored on 1000
    held-out images; the first candidate (warm-up) is not timed. Untrained weights and synthetic images: the
    speed, not the accuracy, is measured."""
    data = load_dataset("synthetic", val_size=1000, n_train=10_000, n_test=100, in_channels=3, image_size=32)
    model = zoo.create("resnet56", num_classes=10, in_channels=3)
    example = data.example_input()
    graph = ModelGraph(model, example)
    space = Space.from_graph(graph, (Axis(PruneRatio(low=0.2), "group"),), 1, frozen=())
    budget = Budget(graph, [Constraint.create("macs", 0.5, True, measure(model, example))])
    policies = random_policies(space, budget, count + 1, seed=0)
    settings = EvaluatorSettings(
        fidelity=Fidelity("proxy", steps=steps),
        proxy=ProxyTraining(batch_size=batch_size),
        bn_batches=10,
        val_examples=1000,
    )
    evaluator = Evaluator(model, example, data.train, data.val, settings, runtime)
    evaluator.score(policies[0])
    runtime.synchronize()
    start = time.perf_counter()
    results = [evaluator.score(policy) for policy in policies[1:]]
    seconds = (time.perf_counter() - start) / count
    failed = [r.error for r in results if r.failed]
    if failed:
        raise RuntimeError(f"{len(failed)} candidates failed, first: {failed[0]}")
    return [runtime.describe(), count, steps, batch_size, f"{seconds:.2f}", f"{1 / seconds:.2f}"]


def reference_path(folder: Path, policy: Policy, seed: int, max_steps: int | None) -> Path:
    """Where a reference is cached: ``<policy key>.json`` for seed 0 (as before seeds), a suffix for another seed and
    for a fine-tune cut short."""
    suffix = (f"-seed{seed}" if seed else "") + (f"-steps{max_steps}" if max_steps else "")
    return folder / f"{policy.key()}{suffix}.json"


def cached_reference(path: Path, compute: Callable[[], Reference]) -> Reference:
    """The reference cached at ``path``, else ``compute()``'s, cached there."""
    if path.exists():
        return Reference(**json.loads(path.read_text()))
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result)))
    return result


def references(
    policies: list[Policy],
    seed: int,
    folder: Path,
    max_steps: int | None,
    compute: Callable[[Policy, int], Reference],
) -> list[float]:
    """Each policy's reference test accuracy at fine-tune ``seed``: ``compute(policy, seed)``, cached in ``folder``."""
    accuracies = []
    for index, policy in enumerate(policies):
        path = reference_path(folder, policy, seed, max_steps)
        result = cached_reference(path, lambda policy=policy: compute(policy, seed))
        accuracies.append(result.test_accuracy)
        print(f"reference {index + 1}/{len(policies)}, seed {seed}: {result.test_accuracy:.2%}", flush=True)
    return accuracies


def seed_spread(by_seed: list[list[float]]) -> tuple[float, float]:
    """The first two seeds' references: mean |difference| and Kendall's tau between them (the ceiling of any tau)."""
    first, second = by_seed[0], by_seed[1]
    difference = sum(abs(a - b) for a, b in zip(first, second)) / len(first)
    return difference, kendall_tau(first, second)


def mean_over_seeds(by_seed: list[list[float]]) -> list[float]:
    """Each policy's reference averaged over the seeds."""
    return [sum(values) / len(values) for values in zip(*by_seed)]


def score_all(evaluator: Evaluator, policies: list[Policy], label: str) -> list[EvalResult]:
    """Every policy's result; RuntimeError when one fails."""
    results = [evaluator.score(policy) for policy in policies]
    failed = [r for r in results if r.failed]
    if failed:
        raise RuntimeError(f"{label}: {len(failed)} candidates failed, first: {failed[0].error}")
    return results


def taus(accuracies: Sequence[float], losses: Sequence[float], truth: Sequence[float]) -> list[str]:
    """Kendall's tau against ``truth`` of the accuracies and of the negated losses, for a table row."""
    return [f"{kendall_tau(accuracies, truth):.3f}", f"{kendall_tau([-loss for loss in losses], truth):.3f}"]


def halving_reach(
    curves: list[list[float]],
    params: list[dict[str, float]],
    distributions: dict[str, optuna.distributions.BaseDistribution],
    pruner: HalvingPruner,
) -> list[int]:
    """How many rungs each candidate climbs when scored in order, as in a search: at each rung but the last ``pruner``
    may stop it (PRUNED, with its scores so far), else it is COMPLETE; each joins the study the next ones are compared
    with. ``curves``: each candidate's score at every rung; ``params``: its decisions (they pick its bracket)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    reached = []
    for curve, decisions in zip(curves, params):
        values: dict[int, float] = {}
        state = TrialState.COMPLETE
        for rung, score in zip(pruner.rungs, curve):
            values[rung] = score
            running = optuna.trial.create_trial(
                state=TrialState.RUNNING, params=decisions, distributions=distributions, intermediate_values=values
            )
            if pruner.prune(study, running):
                state = TrialState.PRUNED
                break
        last = values[pruner.rungs[-1]] if state == TrialState.COMPLETE else None
        study.add_trial(
            optuna.trial.create_trial(
                state=state, value=last, params=decisions, distributions=distributions, intermediate_values=values
            )
        )
        reached.append(len(values))
    return reached


def search_ranking(curves: list[list[float]], reached: list[int]) -> list[float]:
    """Each candidate's rank as a search sees it: by the furthest rung reached, then by the score there."""
    keys = [(count, curve[count - 1]) for curve, count in zip(curves, reached)]
    order = sorted(set(keys))
    return [float(order.index(key)) for key in keys]


def rung_scores(evaluator: RungRecorder, policies: list[Policy]) -> list[list[HeldOut]]:
    """Each policy's held-out scores at every rung of ``evaluator``'s halving fidelity (no reporter: all climb)."""
    scores = []
    for policy in policies:
        score_all(evaluator, [policy], "halving")
        scores.append(evaluator.held_out)
    return scores


def halving_replay(
    curves: list[list[float]],
    seconds: list[list[float]],
    truth: list[float],
    pruner: HalvingPruner,
    space: Space,
    policies: list[Policy],
) -> tuple[float, float, str]:
    """Successive halving over the policies in order, scored by ``curves`` (each one's score at every rung; ``seconds``:
    the time to reach each): Kendall's tau of the ranking the search sees, seconds per candidate, and what it spent."""
    rungs, count = pruner.rungs, len(curves)
    params = [space.to_params(policy) for policy in policies]
    reached = halving_reach(curves, params, space.distributions(), pruner)
    climbed = "/".join(str(sum(r > index for r in reached)) for index in range(len(rungs)))
    steps = sum(rungs[r - 1] for r in reached) / (count * rungs[-1])
    spent = sum(times[r - 1] for times, r in zip(seconds, reached))
    share = spent / sum(times[-1] for times in seconds)
    text = (
        f"{climbed} of the {count} candidates reach rungs {'/'.join(map(str, rungs))}: {steps:.0%} of the fine-tune "
        f"steps and {share:.0%} of the seconds of scoring every one at the last rung"
    )
    return kendall_tau(search_ranking(curves, reached), truth), spent / count, text


def halving_rows(
    scores: list[list[HeldOut]], truth: list[float], pruner: HalvingPruner, space: Space, policies: list[Policy]
) -> tuple[list[list[str]], str]:
    """Table rows of each rung and of the successive-halving ranking (by accuracy and by -loss), and a sentence on
    what the halving spent."""
    rows = []
    for index, rung in enumerate(pruner.rungs):
        at = [candidate[index] for candidate in scores]
        seconds = sum(h.seconds for h in at) / len(at)
        accuracies, losses = [h.accuracy for h in at], [h.loss for h in at]
        rows.append([f"halving, rung {rung} steps", f"{seconds:.2f}", *taus(accuracies, losses, truth)])
    times = [[h.seconds for h in candidate] for candidate in scores]
    by_accuracy = halving_replay([[h.accuracy for h in c] for c in scores], times, truth, pruner, space, policies)
    by_loss = halving_replay([[-h.loss for h in c] for c in scores], times, truth, pruner, space, policies)
    label = f"successive halving (reduction {pruner.reduction}), ranked as the search sees them"
    rows.append([label, f"{by_accuracy[1]:.2f}", f"{by_accuracy[0]:.3f}", f"{by_loss[0]:.3f}"])
    text = (
        f"Successive halving replayed on the policies in order (`HalvingPruner`, reduction {pruner.reduction}, "
        f"{pruner.brackets} bracket(s)): scored by accuracy, {by_accuracy[2]}; scored by -loss (at every rung), "
        f"{by_loss[2]}. A stopped candidate ranks below every complete one (by the furthest rung, then its score "
        "there), as TPE sees them."
    )
    return rows, text


def resident_mb() -> float:
    """This process's resident memory in MB (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 2**20


def memory_growth(
    baseline: torch.nn.Module, example: torch.Tensor, data, base: EvaluatorSettings, policies: list[Policy]
) -> str:
    """Resident memory over evaluations of distinct policies (cheap fidelity: the evaluator's path, not its speed)."""
    fidelity = Fidelity("proxy", steps=5)
    settings = replace(base, fidelity=fidelity, bn_batches=2, val_examples=500)
    evaluator = Evaluator(baseline, example, data.train, data.val, settings)
    readings = []
    for index, policy in enumerate(policies):
        evaluator.score(policy)
        if index % 10 == 0 or index == len(policies) - 1:
            gc.collect()
            readings.append((index + 1, resident_mb()))
    after_warmup = next((mb for n, mb in readings if n > 20), readings[0][1])
    return (
        f"Memory over {len(policies)} evaluations of distinct policies ({fidelity.describe()}, "
        f"{settings.val_examples} held-out examples): resident {readings[0][1]:.0f} MB after the first, "
        f"{readings[-1][1]:.0f} MB after the last: growth {readings[-1][1] - readings[0][1]:+.1f} MB "
        f"({readings[-1][1] - after_warmup:+.1f} MB after evaluation 21); readings every 10: "
        + ", ".join(f"{mb:.0f}" for _, mb in readings)
        + " MB."
    )


def fidelity_rows(
    baseline: torch.nn.Module,
    example: torch.Tensor,
    data: DataBundle,
    base: EvaluatorSettings,
    runtime: Runtime,
    policies: list[Policy],
    truth: list[float],
    header: list[str],
) -> list[list[str]]:
    """A table row per fidelity of ``FIDELITIES``: its seconds per candidate and its taus (printed as they come)."""
    rows = []
    for label, (fidelity, proxy) in FIDELITIES.items():
        settings = replace(base, fidelity=fidelity, proxy=proxy)
        results = score_all(Evaluator(baseline, example, data.train, data.val, settings, runtime), policies, label)
        seconds = sum(r.seconds for r in results) / len(results)
        rows.append([label, f"{seconds:.2f}", *taus([r.accuracy for r in results], [r.loss for r in results], truth)])
        print_table(header, rows)
    return rows


def reference_rows(by_seed: list[list[float]], seconds: float) -> list[list[str]]:
    """The reference's row and, with two seeds or more, the row of seed 1 against seed 0 (the ceiling of tau)."""
    label = f"reference: 1-epoch KD fine-tune, test accuracy, mean of {len(by_seed)} seed(s)"
    rows = [[label, f"{seconds:.1f}", "1", "1"]]
    if len(by_seed) > 1:
        rows.append(["reference seed 1 against seed 0 (the ceiling)", "", f"{seed_spread(by_seed)[1]:.3f}", ""])
    return rows


def noise_text(by_seed: list[list[float]], test_size: int) -> str:
    """How far apart the references are, beside the noise of one test reading and between seeds."""
    truth = mean_over_seeds(by_seed)
    mean = sum(truth) / len(truth)
    spread_std = (sum((t - mean) ** 2 for t in truth) / (len(truth) - 1)) ** 0.5
    sampling_std = (mean * (1 - mean) / test_size) ** 0.5
    text = (
        f"Reference spread: standard deviation {spread_std:.2%} across the policies, beside a binomial "
        f"standard error of {sampling_std:.2%} for one test accuracy on {test_size} images."
    )
    if len(by_seed) > 1:
        difference, ceiling = seed_spread(by_seed)
        text += (
            f" Two fine-tune seeds of one policy differ by {difference:.2%} on average (mean |difference|) and rank "
            f"the policies with tau {ceiling:.3f} against each other: about the best a score can reach against one seed."
        )
    return text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fmnist_resnet20.yaml", help="whose baseline and search space")
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--macs", type=float, default=0.5, help="MACs budget, fraction of the baseline")
    parser.add_argument("--channel-multiple", type=int, help="kept channels rounded to this (default: the config's)")
    parser.add_argument("--reference-seeds", type=int, default=2, help="fine-tune seeds each reference averages")
    parser.add_argument(
        "--reference-steps",
        type=int,
        help="smoke tests only: cut each reference's fine-tune to N steps (never recorded)",
    )
    parser.add_argument("--val-examples", type=int, help="held-out examples per score (default: all)")
    parser.add_argument(
        "--memory-evals", type=int, default=200, help="evaluations in the memory-growth phase (0: none)"
    )
    parser.add_argument("--reference-only", action="store_true", help="compute (and cache) the references only")
    parser.add_argument("--memory-only", action="store_true", help="run (and record) the memory-growth phase only")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument(
        "--speed",
        type=int,
        default=0,
        metavar="N",
        help="only time N resnet56 proxy candidates at 32x32 (candidates per second)",
    )
    return parser.parse_args()


def record(title: str, body: list[str], args: argparse.Namespace) -> None:
    """Append ``body`` under ``title`` to RESULTS.md with this command, unless ``--no-record`` or a smoke test's
    ``--reference-steps``."""
    if not args.no_record and args.reference_steps is None:
        append_section(title, "python " + shlex.join(sys.argv), body)


def speed_only(runtime: Runtime, args: argparse.Namespace) -> None:
    """The ``--speed`` mode: resnet56 proxy candidates per second."""
    header = ["device", "candidates", "proxy steps", "batch", "s / candidate", "candidates / s"]
    rows = [candidate_speed(runtime, args.speed)]
    print_table(header, rows)
    record("Proxy candidates per second: resnet56 at 32x32", markdown_table(header, rows), args)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runtime = Runtime.create(args.device, args.precision)
    if args.speed:
        speed_only(runtime, args)
        return

    config, data, baseline = trained_baseline(args.config)
    title = f"{config.model.name} on {config.data.name} at {args.macs:.0%} of the MACs"
    example = data.example_input()
    graph = ModelGraph(baseline, example)
    multiple = args.channel_multiple or config.space.channel_multiple
    # as recorded: every channel group searched (no frozen layers)
    space = Space.from_graph(graph, (Axis(PruneRatio(low=config.space.keep.low), "group"),), multiple, frozen=())
    budget = Budget(graph, [Constraint.create("macs", args.macs, True, measure(baseline, example))])
    policies = random_policies(space, budget, args.policies, seed=0)

    base = EvaluatorSettings(
        bn_batches=config.evaluator.bn_batches, val_examples=args.val_examples, criterion=config.search.criterion
    )
    bn_only = Evaluator(baseline, example, data.train, data.val, replace(base, fidelity=Fidelity("bn")), runtime)
    finetune = TrainSettings(
        epochs=1,
        batch_size=config.finetune.batch_size,
        lr=config.finetune.lr,
        momentum=config.finetune.momentum,
        weight_decay=config.finetune.weight_decay,
        max_steps=args.reference_steps,
    )
    suffix = "" if multiple == config.space.channel_multiple else f"-multiple{multiple}"
    folder = cache_root() / "fidelity" / f"{baseline_key(config)}-macs{args.macs}{suffix}"

    def reference_of(policy: Policy, seed: int = 0) -> Reference:
        settings = replace(finetune, seed=seed)
        return reference(bn_only, data, policy, settings, config.finetune.temperature, config.finetune.alpha)

    by_seed = [
        references(policies, seed, folder, args.reference_steps, reference_of) for seed in range(args.reference_seeds)
    ]
    if args.reference_only:
        return
    if args.memory_only:
        memory = memory_growth(baseline, example, data, base, random_policies(space, budget, args.memory_evals, seed=1))
        print(memory)
        record(f"Evaluator memory: {config.model.name} on {config.data.name}", [memory], args)
        return
    timed_reference = reference_of(policies[0]).seconds  # measured beside the fidelities below
    truth = mean_over_seeds(by_seed)

    header = ["fidelity / rung", "s / candidate", "Kendall tau (val accuracy)", "Kendall tau (-val loss)"]
    rows = fidelity_rows(baseline, example, data, base, runtime, policies, truth, header)
    halving_fidelity = Fidelity("halving", rungs=tuple(config.evaluator.rungs))  # the search's default schedule
    settings = replace(base, fidelity=halving_fidelity)
    recorder = RungRecorder(baseline, example, data.train, data.val, settings, runtime)
    pruner = HalvingPruner(halving_fidelity.rungs, config.evaluator.reduction, config.evaluator.brackets)
    halving, halving_text = halving_rows(rung_scores(recorder, policies), truth, pruner, space, policies)
    rows += halving
    seeds = args.reference_seeds
    rows += reference_rows(by_seed, timed_reference)
    print_table(header, rows)
    print(halving_text)

    memory = ""
    if args.memory_evals:
        memory = memory_growth(baseline, example, data, base, random_policies(space, budget, args.memory_evals, seed=1))
        print(memory)
    noise = noise_text(by_seed, len(data.test))
    print(noise)

    body = [
        f"{config.model.name}, {config.data.name}, {len(policies)} random policies projected to {args.macs:.0%} of "
        f"the baseline MACs (channel multiple {multiple}, keep >= {config.space.keep.low}). Reference: 1-epoch "
        f"fine-tune with distillation (batch {finetune.batch_size}, lr {finetune.lr}), test accuracy averaged "
        f"over {seeds} seed(s), {min(truth):.2%} to {max(truth):.2%}. Scores on "
        f"{args.val_examples or len(data.val)} held-out training examples; halving rows: one evaluation "
        f"at {halving_fidelity.describe()}, s = seconds to reach the rung.",
        "",
        *markdown_table(header, rows),
        "",
        halving_text,
        "",
        noise,
        *(["", memory] if memory else []),
    ]
    record(f"Evaluator fidelity: {title}", body, args)


if __name__ == "__main__":
    main()
