"""Quantization on ResNet-20 / Fashion-MNIST: accuracy, size and BOPs per bit-width; int8 against fp32 latency.

Every setting starts from the same trained baseline (the default config's, cached), gets the
same short quantization-aware fine-tune with distillation from that baseline (the float
reference too), and is scored once on the test set. First and last layers stay at 8 bits.
The 8-bit model is then converted to real int8 kernels (`autocomp.to_int8`): its test
accuracy, its agreement with the simulated model and its CPU latency beside fp32.

    python benchmarks/quantization.py                   # 200 fine-tune steps per setting, ~10 min on 2 cores
    python benchmarks/quantization.py --steps 20 --no-record
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch
from results import append_section, markdown_table, print_table, trained_baseline
from torch.utils.data import TensorDataset

import autocomp
from autocomp.cost import compare_latency_ms
from autocomp.data import as_tensors
from autocomp.evaluate import accuracy
from autocomp.train import Distillation, TrainSettings, train

SETTINGS = {  # label: (weight bits, activation bits); None: floating point
    "fp32": (None, None),
    "W8A8": (8, 8),
    "W4A4": (4, 4),
    "W2A2": (2, 2),
    "binary W1A8": (1, 8),
}


def quantize(
    model: torch.nn.Module, example: torch.Tensor, weight_bits: int | None, act_bits: int | None, calibration: list
) -> torch.nn.Module:
    """A quantized copy of ``model`` (first and last layer at 8 bits); a plain copy for fp32."""
    layers = autocomp.model_layers(model, example)
    policy = autocomp.Policy.uniform(layers, weight_bits=weight_bits, act_bits=act_bits)
    return autocomp.compress(model, policy, example, data=calibration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fmnist_resnet20.yaml", help="whose baseline to quantize")
    parser.add_argument("--steps", type=int, default=200, help="quantization-aware fine-tune steps per setting")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=30, help="latency: timed passes per model")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)

    config, data, baseline = trained_baseline(args.config)
    example = data.example_input()
    images, labels = as_tensors(data.train)
    calibration = [(images[: args.batch_size], labels[: args.batch_size])]
    count = args.steps * args.batch_size
    finetune_data = TensorDataset(images[:count], labels[:count])
    finetune = TrainSettings(epochs=1, batch_size=args.batch_size, lr=args.lr)

    rows, models = [], {}
    base_cost = autocomp.measure(baseline, example)
    for label, (weight_bits, act_bits) in SETTINGS.items():
        model = quantize(baseline, example, weight_bits, act_bits, calibration)
        before = accuracy(model, data.test)
        train(model, finetune_data, finetune, distill=Distillation(baseline), label=f"QAT {label}")
        after = accuracy(model, data.test)
        cost = autocomp.measure(model, example)
        models[label] = model
        rows.append(
            [
                label,
                f"{before:.2%}",
                f"{after:.2%}",
                f"{cost.size_bytes / 1024:,.1f}",
                f"{base_cost.size_bits / cost.size_bits:.1f}x",
                f"{cost.bops / 1e9:,.2f}",
                f"{base_cost.bops / cost.bops:.0f}x",
            ]
        )
    header = [
        "setting",
        "test acc. before QAT",
        f"after {args.steps}-step QAT",
        "size (KiB)",
        "smaller",
        "GBOPs",
        "fewer BOPs",
    ]
    print_table(header, rows)

    simulated = models["W8A8"]
    int8 = autocomp.to_int8(simulated)
    with torch.no_grad():
        expected, out = simulated(as_tensors(data.test)[0]), int8(as_tensors(data.test)[0])
    agreement = (expected.argmax(1) == out.argmax(1)).float().mean().item()
    int8_accuracy = accuracy(int8, data.test)
    latency_rows = []
    for batch in (1, 64):
        ms = compare_latency_ms(
            {"fp32": baseline, "int8": int8, "W8A8 simulated": simulated},
            example,
            batch_size=batch,
            repeats=args.repeats,
        )
        latency_rows.append(
            [
                batch,
                f"{ms['fp32']:.2f}",
                f"{ms['int8']:.2f}",
                f"{ms['fp32'] / ms['int8']:.2f}x",
                f"{ms['W8A8 simulated']:.2f}",
            ]
        )
    latency_header = ["batch", "fp32 ms", "int8 ms", "int8 speed-up", "simulated W8A8 ms"]
    print_table(latency_header, latency_rows)
    summary = (
        f"int8 model (oneDNN int8 kernels): test accuracy {int8_accuracy:.2%} (simulated W8A8 "
        f"{accuracy(simulated, data.test):.2%}); same top-1 as the simulated model on {agreement:.2%} of the "
        f"test images, mean |logit difference| {(out - expected).abs().mean().item():.4f} "
        f"(logit std {expected.std().item():.2f})."
    )
    print(summary)

    if not args.no_record:
        body = [
            f"ResNet-20, {config.data.name}; each setting: same {args.steps}-step fine-tune (batch {args.batch_size}, "
            f"lr {args.lr}, distillation from the fp32 baseline); first and last layer 8-bit; LSQ activations, "
            "per-channel symmetric weights (binary: BWN).",
            "",
            *markdown_table(header, rows),
            "",
            "CPU latency, median of alternating passes:",
            "",
            *markdown_table(latency_header, latency_rows),
            "",
            summary,
        ]
        append_section("Quantization: resnet20 on fashion_mnist", "python " + shlex.join(sys.argv), body)


if __name__ == "__main__":
    main()
