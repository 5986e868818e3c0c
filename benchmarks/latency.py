"""Latency lookup table: predicted against measured latency of random pruning policies, and a latency-constrained search.

For each model the per-layer table is built for the target (device, threads, batch size), then
random policies (each channel group keeps a seeded uniform random fraction of its channels in
[0.3, 1.0], channel multiple 1) are predicted by the table and measured on the compressed
model with `measure_latency_ms`: the models take turns for a few rounds and each keeps its
least loaded round (the table keeps the least loaded of its timings too: load on a shared
machine only ever slows). The error is (predicted - measured) / measured.

The search part runs `autocomp search` on a config (ResNet-20 on Fashion-MNIST by default, its
baseline cached) under one constraint, ``latency_ms <= fraction x the baseline's``, measured on
the config's latency target, and checks that the final model's measured latency is within the
limit and uses at least 90% of it.

    python benchmarks/latency.py                      # resnet56 and mobilenet_v2, 3x32x32, cpu, 2 threads, batch 1
    python benchmarks/latency.py --fresh --record     # build the tables from nothing; append to RESULTS.md
    python benchmarks/latency.py --search-only --record  # the latency-constrained search only
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from results import append_section, markdown_table, print_table

import autocomp
from autocomp.compress import Compressor
from autocomp.cost import LatencyTarget, measure_latency_ms
from autocomp.graph import ModelGraph
from autocomp.latency_table import LatencyTable
from autocomp.policy import LayerDecision, Policy

SETTINGS = {  # CIFAR-style inputs
    "resnet56": {"num_classes": 10, "in_channels": 3},
    "mobilenet_v2": {"num_classes": 10, "in_channels": 3},
}
INPUT = (3, 32, 32)


@dataclass(frozen=True)
class Comparison:
    """Predicted and measured milliseconds of the same policies on one model, and what the table cost."""

    model: str
    build_seconds: float
    build_measurements: int
    predict_seconds: float
    predicted: list[float]
    measured: list[float]

    @property
    def errors(self) -> list[float]:
        return [(p - m) / m for p, m in zip(self.predicted, self.measured)]

    def summary(self) -> list[str]:
        errors = [abs(e) for e in self.errors]
        return [
            self.model,
            f"{self.build_seconds:.1f}",
            self.build_measurements,
            f"{1000 * self.predict_seconds:.2f}",
            f"{min(self.measured):.2f} to {max(self.measured):.2f}",
            f"{statistics.median(errors):.1%}",
            f"{max(errors):.1%}",
            f"{statistics.mean(self.errors):+.1%}",
        ]


SUMMARY_HEADER = [
    "model",
    "build s",
    "timings in the build",
    "ms / prediction",
    "measured ms",
    "median abs. error",
    "max abs. error",
    "mean error",
]


def random_policies(graph: ModelGraph, count: int, seed: int, low: float = 0.3) -> list[Policy]:
    """``count`` policies whose channel groups each keep a uniform random fraction in [low, 1] of their channels."""
    rng = random.Random(seed)
    policies = []
    for _ in range(count):
        keeps = [rng.uniform(low, 1.0) for _ in graph.groups]
        policies.append(
            Policy(
                {name: LayerDecision(keep=keep) for group, keep in zip(graph.groups, keeps) for name in group.layers},
                channel_multiple=1,
            )
        )
    return policies


def measured_ms(
    models: list[torch.nn.Module], example: torch.Tensor, target: LatencyTarget, rounds: int
) -> list[float]:
    """`measure_latency_ms` of each model, the models taking turns for ``rounds`` rounds; each model's fastest round."""
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model, model_times in zip(models, times):
            model_times.append(measure_latency_ms(model, example, target))
    return [min(model_times) for model_times in times]


def compare_predictions(
    name: str, target: LatencyTarget, cache_dir: Path | None, count: int, seed: int, rounds: int
) -> Comparison:
    """Build ``name``'s table for ``target``, then predict and measure ``count`` random policies."""
    torch.manual_seed(seed)
    model = autocomp.models.create(name, **SETTINGS[name]).eval()
    example = torch.randn(1, *INPUT)
    graph = ModelGraph(model, example)
    table = LatencyTable(graph, target, cache_dir)
    start = time.perf_counter()
    table.build()
    build_seconds, build_measurements = time.perf_counter() - start, table.measurements
    policies = random_policies(graph, count, seed)
    start = time.perf_counter()
    predicted = [table.predict_ms(policy) for policy in policies]
    predict_seconds = (time.perf_counter() - start) / count
    compressor = Compressor(model, example)
    measured = measured_ms([compressor(policy) for policy in policies], example, target, rounds)
    return Comparison(name, build_seconds, build_measurements, predict_seconds, predicted, measured)


@dataclass(frozen=True)
class ConstrainedSearch:
    """A latency-constrained search's limit and its final model's measured latency."""

    limit_ms: float
    baseline_ms: float
    final_ms: float
    trials: int
    feasible_trials: int
    wall_seconds: float
    test_accuracy: float
    baseline_accuracy: float

    @property
    def use(self) -> float:
        return self.final_ms / self.limit_ms

    def row(self) -> list[str]:
        verdict = "yes" if 0.9 <= self.use <= 1.0 else "no"
        return [
            f"{self.baseline_ms:.3f}",
            f"{self.limit_ms:.3f}",
            f"{self.final_ms:.3f}",
            f"{self.use:.1%}",
            verdict,
            f"{self.feasible_trials} / {self.trials}",
            f"{100 * self.baseline_accuracy:.2f}% -> {100 * self.test_accuracy:.2f}%",
            f"{self.wall_seconds:.0f}",
        ]


SEARCH_HEADER = [
    "baseline ms",
    "limit ms",
    "final model ms (measured)",
    "limit used",
    "within limit and >= 90%",
    "measured-feasible trials",
    "test accuracy",
    "search s",
]


def constrained_search(
    config_path: str, fraction: float, trials: int, out: Path, overrides: Sequence[str] = ()
) -> ConstrainedSearch:
    """Search ``config_path``'s model under ``latency_ms <= fraction`` of its baseline (and ``overrides``, such as
    the latency target's); the report's measured figures."""
    from autocomp.app.config import load_config

    config = load_config(
        config_path,
        [
            f"constraints=[{{metric: latency_ms, max: {fraction}}}]",
            f"search.trials={trials}",
            "evaluator.fidelity=bn",
            "finetune.epochs=1",
            *overrides,
        ],
    )
    start = time.perf_counter()
    report = autocomp.search(config, out).report
    latency = next(c for c in report.constraints if c.metric == "latency_ms")
    study = optuna.load_study(study_name="autocomp", storage=f"sqlite:///{out / 'study.db'}")
    feasible = sum(bool(t.user_attrs.get("feasible")) for t in study.trials)
    return ConstrainedSearch(
        latency.limit,
        latency.baseline,
        latency.best,
        len(study.trials),
        feasible,
        time.perf_counter() - start,
        report.best.test_accuracy,
        report.baseline.test_accuracy,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns each policy's model is measured (the fastest counts)"
    )
    parser.add_argument("--fresh", action="store_true", help="build the tables in an empty folder (time a full build)")
    parser.add_argument("--record", action="store_true", help="append the results to RESULTS.md")
    parser.add_argument("--search-only", action="store_true", help="run the latency-constrained search only")
    parser.add_argument("--no-search", action="store_true", help="compare predictions only")
    parser.add_argument("--config", default="configs/fmnist_resnet20.yaml", help="the searched config")
    parser.add_argument("--fraction", type=float, default=0.8, help="latency limit, fraction of the baseline's")
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target = LatencyTarget(threads=args.threads, batch_size=args.batch_size)
    if not args.search_only:
        compare(args, target)
    if not args.no_search:
        search(args)


def search(args: argparse.Namespace) -> None:
    """The latency-constrained search, printed and (with --record) appended to RESULTS.md."""
    with tempfile.TemporaryDirectory() as folder:
        result = constrained_search(args.config, args.fraction, args.trials, Path(folder) / "run")
    print(f"\nlatency-constrained search: {args.config}, latency_ms <= {args.fraction} of the baseline")
    print_table(SEARCH_HEADER, [result.row()])
    if args.record:
        body = [
            f"`autocomp search --config {args.config}` with `constraints=[{{metric: latency_ms, max: {args.fraction}}}]`, "
            f"{args.trials} trials, BN-recalibration scores, 1-epoch fine-tune; latency target from the config "
            "(cpu, batch 1, torch's threads). The limit and the final model's latency are the report's, both measured "
            "(median of 20 passes after 5 warm-up passes); every trial was measured too, and only measured-feasible "
            "trials could be chosen.",
            "",
            *markdown_table(SEARCH_HEADER, [result.row()]),
        ]
        append_section(
            "Latency-constrained search", shlex.join(["python", "benchmarks/latency.py", *sys.argv[1:]]), body
        )


def compare(args: argparse.Namespace, target: LatencyTarget) -> None:
    """Table predictions against measurements on the zoo models, printed and (with --record) appended to RESULTS.md."""
    with tempfile.TemporaryDirectory() as fresh:
        cache_dir = Path(fresh) if args.fresh else None
        comparisons = [
            compare_predictions(name, target, cache_dir, args.policies, args.seed, args.rounds) for name in args.models
        ]
    for comparison in comparisons:
        print(f"\n{comparison.model}, {'x'.join(map(str, INPUT))}: predicted against measured ms")
        print_table(
            ["policy", "predicted", "measured", "error"],
            [
                [i, f"{p:.3f}", f"{m:.3f}", f"{e:+.1%}"]
                for i, (p, m, e) in enumerate(zip(comparison.predicted, comparison.measured, comparison.errors))
            ],
        )
    rows = [comparison.summary() for comparison in comparisons]
    print(f"\n{target.describe()}")
    print_table(SUMMARY_HEADER, rows)
    if args.record:
        body = [
            f"Target: {target.describe()}. Input {'x'.join(map(str, INPUT))}, {args.policies} random policies per "
            "model (each channel group keeps a uniform random fraction in [0.3, 1.0], channel multiple 1, seed "
            f"{args.seed}); measured = fastest of {args.rounds} interleaved `measure_latency_ms` runs of the "
            "compressed model; error = (predicted - measured) / measured. Build s: table build "
            f"({'from an empty cache' if args.fresh else 'from the existing cache'}).",
            "",
            *markdown_table(SUMMARY_HEADER, rows),
        ]
        append_section(
            "Latency lookup table: prediction against measurement",
            shlex.join(["python", "benchmarks/latency.py", *sys.argv[1:]]),
            body,
        )


if __name__ == "__main__":
    main()
