"""Deployment on the CPU: fp32 and int8 latency in eager PyTorch and ONNX Runtime, and a search under an ONNX Runtime
latency budget.

For each zoo model (Fashion-MNIST; the trained baseline of the config, cached) the same test set and the same
batches of random inputs go through:
* fp32 eager: the baseline in PyTorch;
* fp32 ONNX Runtime: its ONNX export (`autocomp.deploy.to_onnx`) in an ONNX Runtime CPU session;
* int8 ours (oneDNN): the baseline quantized W8A8 (`compress` with a calibration batch, LSQ steps from it) on
  `autocomp.to_int8`'s oneDNN kernels;
* W8A8 QDQ export: the same quantized model exported as QDQ (`to_onnx`, learned steps) in ONNX Runtime;
* int8 ONNX Runtime: the same quantized model as `autocomp.deploy.int8_onnx` makes it (BatchNorm folded, ONNX Runtime's
  static quantization: activations uint8 between fused int8 kernels, the learned steps kept on the layers' inputs).
Latency: at batch 1 and 64 on ``--threads`` threads, each variant's median pass in 3 rounds of passes in a row, the
fastest round (load on a shared machine only ever slows a pass down). Accuracy: the whole test set.

``--search`` also runs a latency-constrained search measured in ONNX Runtime (`latency.runtime: onnxruntime`) and
checks that the final model's ONNX Runtime latency is within the limit and uses at least 90% of it.

    python benchmarks/deploy.py                                   # resnet20, resnet56, mobilenet_v2
    python benchmarks/deploy.py --models resnet20 --repeats 10    # a quick look
    python benchmarks/deploy.py --search --record                 # and the ONNX Runtime search; append to RESULTS.md
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from results import append_section, markdown_table, print_table, trained_baseline

import autocomp
from autocomp import deploy
from autocomp.cost.latency import median_pass_ms
from autocomp.data import as_tensors

CONFIGS = {  # model: (config, overrides); the baselines benchmarks/peers.py prunes (the config's 3 epochs)
    "resnet20": ("configs/fmnist_resnet20.yaml", []),
    "resnet56": ("configs/fmnist_resnet20.yaml", ["model.name=resnet56"]),
    "mobilenet_v2": ("configs/fmnist_mobilenet_v2.yaml", []),
}
VARIANTS = ["fp32 eager", "fp32 ONNX Runtime", "int8 ours (oneDNN)", "W8A8 QDQ export", "int8 ONNX Runtime"]
BATCHES = (1, 64)
ROUNDS, WARMUP = 3, 3


Deployed = Callable[[torch.Tensor], torch.Tensor]
"""One way of running the model: a batch in, its logits out."""


def variants(
    baseline: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor, threads: int
) -> dict[str, Deployed]:
    """Every variant of ``baseline``, each ready to run (ONNX Runtime sessions on ``threads`` threads)."""
    layers = autocomp.model_layers(baseline, example)
    policy = autocomp.Policy.uniform(layers, weight_bits=8, act_bits=8)
    quantized = autocomp.compress(baseline, policy, example, data=[(calibration, torch.zeros(len(calibration)))]).eval()
    int8 = autocomp.to_int8(quantized)

    def ort(model_bytes: bytes) -> Deployed:
        session = deploy.session(model_bytes, threads)
        return lambda batch: deploy.run(session, batch)

    return {
        "fp32 eager": baseline,
        "fp32 ONNX Runtime": ort(deploy.to_onnx(baseline, example)),
        "int8 ours (oneDNN)": int8,
        "W8A8 QDQ export": ort(deploy.to_onnx(quantized, example)),
        "int8 ONNX Runtime": ort(deploy.int8_onnx(quantized, example, calibration.split(32))),
    }


@torch.no_grad()
def test_accuracy(variant: Deployed, images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = sum(int((variant(x).argmax(1) == y).sum()) for x, y in zip(images.split(500), labels.split(500)))
    return correct / len(labels)


@torch.no_grad()
def latencies(found: dict[str, Deployed], example: torch.Tensor, batch: int, repeats: int) -> dict[str, float]:
    """Milliseconds per pass of a random ``batch``-sized batch: ROUNDS rounds in which each variant runs ``repeats``
    passes in a row (after WARMUP), the fastest round's median of each variant. Passes of different runtimes are not
    interleaved: ONNX Runtime's threads spin for a while after a pass, and so do PyTorch's, which would slow the
    other runtime's next pass on a machine with as many cores as threads."""
    inputs = torch.randn(batch, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, variant in found.items():
            milliseconds = median_pass_ms(functools.partial(variant, inputs), WARMUP, repeats)
            best[name] = min(best.get(name, float("inf")), milliseconds)
    return best


def measure_model(name: str, args: argparse.Namespace) -> list[list[str]]:
    """The table rows of one model: each variant's test accuracy and latency at each batch size."""
    path, overrides = CONFIGS[name]
    _, data, baseline = trained_baseline(path, overrides)
    example = data.example_input()
    images, labels = as_tensors(data.test)
    images, labels = images[: args.test_images], labels[: args.test_images]
    train_images, _ = as_tensors(data.train)
    found = variants(baseline, example, train_images[: args.calibration], args.threads)
    accuracies = {variant: test_accuracy(found[variant], images, labels) for variant in found}
    timed = {
        batch: latencies(found, example, batch, args.repeats if batch == 1 else args.repeats_64) for batch in BATCHES
    }
    rows = []
    for variant in VARIANTS:
        row = [name, variant, f"{accuracies[variant]:.2%}"]
        for batch in BATCHES:
            ms = timed[batch]
            row += [
                f"{ms[variant]:.2f}",
                f"{ms['fp32 eager'] / ms[variant]:.2f}x",
                f"{ms['fp32 ONNX Runtime'] / ms[variant]:.2f}x",
            ]
        rows.append(row)
    print_table(HEADER, rows)
    return rows


HEADER = [
    "model",
    "variant",
    "test acc.",
    "batch 1 ms",
    "vs fp32 eager",
    "vs fp32 ORT",
    "batch 64 ms",
    "vs fp32 eager",
    "vs fp32 ORT",
]


def search(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """A latency-constrained search on resnet20 measured in ONNX Runtime; its header and row."""
    from latency import SEARCH_HEADER, constrained_search

    overrides = ["latency.runtime=onnxruntime", f"latency.threads={args.threads}", f"finetune.max_steps={args.steps}"]
    with tempfile.TemporaryDirectory() as folder:
        result = constrained_search(
            CONFIGS["resnet20"][0], args.fraction, args.trials, Path(folder) / "search", overrides
        )
    row = result.row()
    print_table(SEARCH_HEADER, [row])
    return SEARCH_HEADER, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed passes per variant and round at batch 1")
    parser.add_argument("--repeats-64", type=int, default=5, help="timed passes per variant and round at batch 64")
    parser.add_argument("--calibration", type=int, default=128, help="training images that set the int8 ranges")
    parser.add_argument("--test-images", type=int, default=10_000, help="test images the accuracies are measured on")
    parser.add_argument("--search", action="store_true", help="also run a search under an ONNX Runtime latency limit")
    parser.add_argument("--search-only", action="store_true", help="only the search")
    parser.add_argument("--fraction", type=float, default=0.6, help="the search's limit, fraction of the baseline's")
    parser.add_argument("--trials", type=int, default=6, help="the search's trials")
    parser.add_argument("--steps", type=int, default=200, help="the search's final fine-tune steps")
    parser.add_argument("--record", action="store_true", help="append the tables to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    body = []
    if not args.search_only:
        load = os.getloadavg()[0]
        rows = [row for name in args.models for row in measure_model(name, args)]
        baselines = ", ".join(
            f"{name}: {CONFIGS[name][0]} {' '.join(CONFIGS[name][1])}".strip() for name in args.models
        )
        body = [
            f"Zoo models on Fashion-MNIST (baselines: {baselines}); accuracy on the first {args.test_images} test "
            "images; int8: W8A8 (first and last layer too), LSQ steps "
            f"from {args.calibration} training images, no fine-tune; {args.threads} threads; latency: median of "
            f"{args.repeats} (batch 1) / {args.repeats_64} (batch 64) passes, the fastest of {ROUNDS} rounds, each "
            f"variant's passes in a row; speed-ups at the same batch. Load average (1 min) at the start "
            f"{load:.1f}, at the end {os.getloadavg()[0]:.1f}: eager PyTorch's threads wait for each other at every "
            "operator, which a machine whose cores other jobs use slows far more than ONNX Runtime.",
            "",
            *markdown_table(HEADER, rows),
        ]
    if args.search or args.search_only:
        header, row = search(args)
        body += [
            *([""] if body else []),
            f"ONNX Runtime latency budget: `autocomp search --config {CONFIGS['resnet20'][0]}` with "
            f"`constraints=[{{metric: latency_ms, max: {args.fraction}}}]`, `latency.runtime=onnxruntime`, "
            f"`latency.threads={args.threads}`, {args.trials} trials, evaluator fidelity bn, {args.steps} fine-tune steps; "
            "every latency below measured in ONNX Runtime:",
            "",
            *markdown_table(header, [row]),
        ]
    if args.record:
        append_section("Deployment: fp32 and int8 in PyTorch and ONNX Runtime", "python " + shlex.join(sys.argv), body)


if __name__ == "__main__":
    main()
