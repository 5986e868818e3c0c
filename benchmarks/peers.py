"""Peers side by side: Torch-Pruning's uniform and global L1 pruning against autocomp's uniform, default search and AMC.

From one cached baseline per model (the config's, or trained for ``--baseline-epochs``), at each MACs budget:

- ``tp_uniform``: Torch-Pruning's `MetaPruner` with L1 magnitude importance, the same ratio in every layer
  (``global_pruning=False``), the classifier left whole, no channel rounding (the budget filled as closely as its
  ratio allows); the ratio is the smallest that fits the budget (on the measured MACs): what a peer's short script does;
- ``tp_global``: the same with ``global_pruning=True`` (one L1 ranking over all layers);
- ``uniform``, ``search``, ``amc``: `autocomp.search` with the uniform agent, the config as it is (the default search)
  and AMC with the same number of candidates; with Torch-Pruning's freedom: channel counts unrounded
  (``space.channel_multiple=1``) and the first layer prunable (``space.frozen=[last]``).

Every model then gets the same fine-tune: the config's ``finetune`` (distilled from the baseline), seeded by the run's
seed, and the test set is read once per model. Wall time is the method's own (pruning or search, plus the fine-tune).
Searches live in ``--out`` and are resumed or read back when the script runs again; Torch-Pruning rows are kept in
``--out/tp.json``.

    python benchmarks/peers.py --models resnet20 --budgets 0.5 --seeds 0 1 2 --record
    python benchmarks/peers.py --models resnet56 mobilenet_v2 --budgets 0.3 0.2 --record
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch_pruning as tp
from results import append_section, markdown_table, print_table
from torch import nn

import autocomp
from autocomp.app.baseline import prepare_baseline
from autocomp.app.config import RunConfig, load_config
from autocomp.evaluate import accuracy
from autocomp.train import Distillation, train

CONFIGS = {
    "resnet20": ("configs/fmnist_resnet20.yaml", []),
    "resnet56": ("configs/fmnist_resnet20.yaml", ["model.name=resnet56"]),
    "mobilenet_v2": ("configs/fmnist_mobilenet_v2.yaml", []),
}
AS_TORCH_PRUNING = ["space.channel_multiple=1", "space.frozen=[last]"]
"""autocomp's rows get Torch-Pruning's freedom: any channel count (no ``round_to``; the budgets are MACs, not latency)
and every layer's outputs prunable but the classifier's."""
METHODS = ("tp_uniform", "tp_global", "uniform", "search", "amc")
BEFORE_HALVING = ["evaluator.fidelity=proxy", "evaluator.steps=50", "search.reference=false"]
"""``search_proxy``: the default search as it was before successive halving (every candidate 50 proxy steps), for
its wall time beside today's; not run unless asked for (``--methods ... search_proxy``)."""
PEERS = ("tp_uniform", "tp_global")


@dataclass(frozen=True)
class Row:
    """One method's model at one budget and seed."""

    model: str
    budget: float
    method: str
    seed: int
    test_accuracy: float
    baseline_accuracy: float
    macs_used: float
    """The model's MACs over the limit."""
    wall_seconds: float


def run_config(model: str, budget: float, seed: int, args: argparse.Namespace, *more: str) -> RunConfig:
    path, overrides = CONFIGS[model]
    epochs = [f"baseline.epochs={args.baseline_epochs}"] if args.baseline_epochs else []
    return load_config(
        path,
        [
            *overrides,
            *epochs,
            f"constraints=[{{metric: macs, max: {budget}}}]",
            f"search.seed={seed}",
            f"finetune.seed={seed}",
            *more,
        ],
    )


def tp_pruned(model: nn.Module, example: torch.Tensor, limit: float, global_pruning: bool) -> nn.Module:
    """``model`` pruned by Torch-Pruning's L1 `MetaPruner` at the smallest ratio whose measured MACs fit ``limit``:
    ratios rise in steps of 0.05 to the first that fits, then bisection between it and the step before (the MACs of
    a global ranking are not monotone in the ratio near its top)."""

    def pruned(ratio: float) -> nn.Module:
        small = copy.deepcopy(model)
        classifier = [m for m in small.modules() if isinstance(m, nn.Linear)][-1]
        tp.pruner.MetaPruner(
            small,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            ignored_layers=[classifier],
        ).step()
        return small

    def fits(ratio: float) -> bool:
        return autocomp.measure(pruned(ratio), example).macs <= limit

    high = next((step / 20 for step in range(1, 20) if fits(step / 20)), None)
    if high is None:
        raise ValueError(f"Torch-Pruning reaches no ratio under {limit:,.0f} MACs")
    low = high - 0.05
    for _ in range(8):
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return pruned(high)


def tp_row(model: str, budget: float, method: str, seed: int, args: argparse.Namespace) -> Row:
    """A Torch-Pruning model at ``budget`` after the config's fine-tune (distilled from the same baseline)."""
    config = run_config(model, budget, seed, args)
    data = config.data.load()
    runtime = config.runtime()
    baseline = prepare_baseline(config, data, runtime)
    teacher = baseline.model.eval()
    example = data.example_input()
    base_macs = autocomp.measure(teacher, example).macs
    started = time.perf_counter()
    small = tp_pruned(teacher, example, budget * base_macs, method == "tp_global")
    finetune = config.finetune
    train(
        small,
        data.train,
        finetune.training(),
        distill=Distillation(teacher, temperature=finetune.temperature, alpha=finetune.alpha),
        label=f"{method} fine-tune",
        runtime=runtime,
    )
    test = accuracy(small, data.test, config.evaluator.batch_size, runtime)
    macs = autocomp.measure(small.cpu(), example).macs
    return Row(
        model,
        budget,
        method,
        seed,
        test,
        baseline.test_accuracy,
        macs / (budget * base_macs),
        time.perf_counter() - started,
    )


def search_row(model: str, budget: float, method: str, seed: int, args: argparse.Namespace) -> Row:
    """An autocomp search at ``budget`` (its finish is the config's fine-tune), resumed or read back from its folder."""
    agent = {
        "uniform": ["search.agent=uniform", "search.trials=1"],
        "search": [],
        "search_proxy": BEFORE_HALVING,
        "amc": ["search.agent=amc"],
    }
    trials = [f"search.trials={args.trials}"] if args.trials and method != "uniform" else []
    config = run_config(model, budget, seed, args, *AS_TORCH_PRUNING, *agent[method], *trials)
    out = Path(args.out) / f"{model}-{round(100 * budget)}-{method}-s{seed}{tag(args)}"
    report = autocomp.search(config, out).report
    macs = next(c for c in report.constraints if c.metric == "macs")
    return Row(
        model,
        budget,
        method,
        seed,
        report.best.test_accuracy,
        report.baseline.test_accuracy,
        macs.used,
        report.wall_seconds,
    )


def tag(args: argparse.Namespace) -> str:
    return (f"-t{args.trials}" if args.trials else "") + (f"-b{args.baseline_epochs}" if args.baseline_epochs else "")


def rows_of(args: argparse.Namespace) -> list[Row]:
    """Every (model, budget, seed, method) row, Torch-Pruning's read back from ``--out/tp.json`` when computed before."""
    saved = Path(args.out) / f"tp{tag(args)}.json"
    known = {tuple(r[k] for k in ("model", "budget", "method", "seed")): Row(**r) for r in _read(saved)}
    rows = []
    for model in args.models:
        for budget in args.budgets:
            for seed in args.seeds:
                for method in args.methods:
                    if method in PEERS:
                        key = (model, budget, method, seed)
                        if key not in known:
                            known[key] = tp_row(model, budget, method, seed, args)
                            saved.parent.mkdir(parents=True, exist_ok=True)
                            saved.write_text(json.dumps([asdict(r) for r in known.values()], indent=1))
                        rows.append(known[key])
                    else:
                        rows.append(search_row(model, budget, method, seed, args))
    return rows


def _read(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


HEADER = [
    "model",
    "MACs budget",
    "method",
    "test accuracy % (mean ± sd)",
    "seeds",
    "vs better peer (pt)",
    "vs baseline (pt)",
    "MACs used",
    "wall s (mean)",
]


def table(rows: list[Row]) -> list[list[str]]:
    """One line per (model, budget, method): mean and spread over seeds, the gap to the better Torch-Pruning mean."""
    lines = []
    for model, budget in dict.fromkeys((r.model, r.budget) for r in rows):
        here = [r for r in rows if (r.model, r.budget) == (model, budget)]
        mean = {
            m: statistics.fmean(r.test_accuracy for r in here if r.method == m)
            for m in dict.fromkeys(r.method for r in here)
        }
        peer = max((mean[m] for m in PEERS if m in mean), default=None)
        for method, value in mean.items():
            mine = [r for r in here if r.method == method]
            spread = statistics.stdev(r.test_accuracy for r in mine) if len(mine) > 1 else 0.0
            lines.append(
                [
                    model,
                    f"{budget:.0%}",
                    method,
                    f"{100 * value:.2f} ± {100 * spread:.2f}",
                    str(len(mine)),
                    "" if peer is None or method in PEERS else f"{100 * (value - peer):+.2f}",
                    f"{100 * (value - statistics.fmean(r.baseline_accuracy for r in mine)):+.2f}",
                    f"{statistics.fmean(r.macs_used for r in mine):.1%}",
                    f"{statistics.fmean(r.wall_seconds for r in mine):.0f}",
                ]
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.3, 0.2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, "search_proxy"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=None, help="candidates of search and amc (default: the config's)")
    parser.add_argument("--baseline-epochs", type=int, default=None, help="a longer-trained baseline (cached apart)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/peers", help="run folders and Torch-Pruning rows, reused when run again")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = rows_of(args)
    lines = table(rows)
    print_table(HEADER, lines)
    if args.record:
        body = [
            "Each model: pruned from the same cached baseline, then the config's distilled fine-tune seeded by the run's "
            "seed; test accuracy read once. tp_*: Torch-Pruning "
            f"{tp.__version__} MetaPruner, L1 magnitude, classifier whole, ratio bisected to the MACs budget; search: "
            "the config's default search (successive halving, TPE, the uniform reference scored beside), channel counts "
            "unrounded and the first layer prunable, as in Torch-Pruning; amc: the same with "
            "the AMC agent. 'vs better peer' is the gap of the means to the better Torch-Pruning row. One test reading "
            "of a ~92% model on 10,000 images carries about ±0.27 pt of sampling error.",
            "",
            *markdown_table(HEADER, lines),
        ]
        append_section(
            "Peers: Torch-Pruning beside autocomp", shlex.join(["python", "benchmarks/peers.py", *sys.argv[1:]]), body
        )


if __name__ == "__main__":
    main()
