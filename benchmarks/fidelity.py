"""How well do the evaluator's cheap scores rank candidates? ResNet-20 / Fashion-MNIST at 50% MACs.

20 random feasible policies (random keep ratios per channel group, projected onto the MACs
budget as every search does). The reference for each: the compressed model fine-tuned for
one epoch with distillation from the baseline (the run's final fine-tune at 1 epoch), then
its test accuracy. Each evaluator fidelity scores the same policies on the held-out split
of the training set; the table gives its seconds per candidate, its share of time outside
forward/backward passes, and Kendall's tau between its scores and the reference.
A last phase runs 200 evaluations of distinct policies and reports the memory growth.

References are cached on disk (they take ~3 min each); the timed reference of the table is
re-measured in the same run as the fidelities, so the cost ratio compares like with like.

    python benchmarks/fidelity.py                   # ~1 h on 2 cores the first time, ~25 min after
    python benchmarks/fidelity.py --policies 6 --memory-evals 20 --no-record
    python benchmarks/fidelity.py --speed 6 --device cuda --precision bf16   # resnet56 proxy candidates per second
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import time
from dataclasses import dataclass, replace

import torch
from results import append_section, markdown_table, print_table, trained_baseline

import agents
from autocomp import zoo
from autocomp.app.baseline import baseline_key
from autocomp.cache import cache_root
from autocomp.cost import measure
from autocomp.data import load_dataset
from autocomp.evaluate import (
    Evaluator,
    EvaluatorSettings,
    Fidelity,
    ProxyTraining,
    accuracy,
    kendall_tau,
)
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
    test_accuracy: float
    seconds: float


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


def cached_reference(folder, policy: Policy, compute) -> Reference:
    path = folder / f"{policy.key()}.json"
    if path.exists():
        return Reference(**json.loads(path.read_text()))
    result = compute()
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.__dict__))
    return result


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fmnist_resnet20.yaml", help="whose baseline and search space")
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--macs", type=float, default=0.5, help="MACs budget, fraction of the baseline")
    parser.add_argument("--memory-evals", type=int, default=200, help="evaluations in the memory-growth phase")
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
    args = parser.parse_args()
    torch.set_num_threads(2)
    runtime = Runtime.create(args.device, args.precision)
    if args.speed:
        header = ["device", "candidates", "proxy steps", "batch", "s / candidate", "candidates / s"]
        rows = [candidate_speed(runtime, args.speed)]
        print_table(header, rows)
        if not args.no_record:
            append_section(
                "Proxy candidates per second: resnet56 at 32x32",
                "python " + shlex.join(sys.argv),
                markdown_table(header, rows),
            )
        return

    config, data, baseline = trained_baseline(args.config)
    example = data.example_input()
    graph = ModelGraph(baseline, example)
    # as recorded: every channel group searched (no frozen layers)
    space = Space.from_graph(
        graph, (Axis(PruneRatio(low=config.space.keep.low), "group"),), config.space.channel_multiple, frozen=()
    )
    budget = Budget(graph, [Constraint.create("macs", args.macs, True, measure(baseline, example))])
    policies = random_policies(space, budget, args.policies, seed=0)

    base = EvaluatorSettings(
        bn_batches=config.evaluator.bn_batches, val_examples=None, criterion=config.search.criterion
    )
    bn_only = Evaluator(baseline, example, data.train, data.val, replace(base, fidelity=Fidelity("bn")), runtime)
    finetune = TrainSettings(
        epochs=1,
        batch_size=config.finetune.batch_size,
        lr=config.finetune.lr,
        momentum=config.finetune.momentum,
        weight_decay=config.finetune.weight_decay,
    )
    folder = cache_root() / "fidelity" / f"{baseline_key(config)}-macs{args.macs}"

    def reference_of(policy: Policy) -> Reference:
        return reference(bn_only, data, policy, finetune, config.finetune.temperature, config.finetune.alpha)

    references = []
    for index, policy in enumerate(policies):
        references.append(cached_reference(folder, policy, lambda policy=policy: reference_of(policy)))
        print(f"reference {index + 1}/{len(policies)}: {references[-1].test_accuracy:.2%}", flush=True)
    if args.reference_only:
        return
    if args.memory_only:
        memory = memory_growth(baseline, example, data, base, random_policies(space, budget, args.memory_evals, seed=1))
        print(memory)
        if not args.no_record:
            append_section("Evaluator memory: resnet20 on fashion_mnist", "python " + shlex.join(sys.argv), [memory])
        return
    timed_reference = reference_of(policies[0]).seconds  # measured beside the fidelities below
    truth = [r.test_accuracy for r in references]

    rows = []
    for label, (fidelity, proxy) in FIDELITIES.items():
        evaluator = Evaluator(
            baseline, example, data.train, data.val, replace(base, fidelity=fidelity, proxy=proxy), runtime
        )
        results = [evaluator.score(policy) for policy in policies]
        failed = [r for r in results if r.failed]
        if failed:
            raise RuntimeError(f"{label}: {len(failed)} candidates failed, first: {failed[0].error}")
        seconds = sum(r.seconds for r in results) / len(results)
        overhead = sum(r.timing.overhead for r in results) / sum(r.seconds for r in results)
        tau = kendall_tau([r.accuracy for r in results], truth)
        tau_loss = kendall_tau([-r.loss for r in results], truth)
        rows.append(
            [
                label,
                f"{seconds:.2f}",
                f"{timed_reference / seconds:.0f}x",
                f"{overhead:.1%}",
                f"{tau:.3f}",
                f"{tau_loss:.3f}",
            ]
        )
        print_table(
            ["fidelity", "s/candidate", "cheaper than reference", "overhead", "tau (accuracy)", "tau (-loss)"], rows
        )
    header = [
        "fidelity",
        "s / candidate",
        "cheaper than reference",
        "overhead",
        "Kendall tau (val accuracy)",
        "Kendall tau (-val loss)",
    ]
    rows.append(["reference: 1-epoch KD fine-tune, test accuracy", f"{timed_reference:.1f}", "1x", "", "1", "1"])

    print_table(header, rows)
    memory = memory_growth(baseline, example, data, base, random_policies(space, budget, args.memory_evals, seed=1))
    print(memory)

    mean = sum(truth) / len(truth)
    spread_std = (sum((t - mean) ** 2 for t in truth) / (len(truth) - 1)) ** 0.5
    sampling_std = (mean * (1 - mean) / len(data.test)) ** 0.5
    noise = (
        f"Reference spread: standard deviation {spread_std:.2%} across the policies, beside a binomial "
        f"standard error of {sampling_std:.2%} for one test accuracy on {len(data.test)} images: the candidates "
        "differ by about as much as one measurement's noise, which caps the attainable tau."
    )
    print(noise)

    if not args.no_record:
        spread = f"{min(truth):.2%} to {max(truth):.2%}"
        body = [
            f"ResNet-20, {config.data.name}, {len(policies)} random policies projected to {args.macs:.0%} of the "
            f"baseline MACs (channel multiple {config.space.channel_multiple}, keep >= {config.space.keep.low}). "
            f"Reference: 1-epoch fine-tune with distillation (batch {finetune.batch_size}, lr {finetune.lr}), test "
            f"accuracy {spread}. Scores on all {len(data.val)} held-out training examples; overhead = share of "
            "a candidate's time outside forward/backward passes.",
            "",
            *markdown_table(header, rows),
            "",
            noise,
            "",
            memory,
        ]
        append_section("Evaluator fidelity: resnet20 on fashion_mnist", "python " + shlex.join(sys.argv), body)


if __name__ == "__main__":
    main()
