"""Does removing MACs make models faster? CPU latency of pruned models beside their MACs ratio.

For each model and MACs target, the width multiplier (every layer's channels, rounded to a
multiple of 8, or of 1 for comparison) is set by bisection to the widest model within the
target; latency is the median of repeated forward passes, the models taking turns so that a
noisy machine slows them alike.

    python benchmarks/speedup.py                     # resnet56 and mobilenet_v2, 50% and 30% MACs
    python benchmarks/speedup.py --repeats 5 --no-record
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys

import torch
from results import append_section, markdown_table, print_table

import autocomp
from autocomp.cost import compare_latency_ms
from autocomp.graph import ModelGraph

SETTINGS = {  # the inputs these models are used with
    "resnet56": ({"num_classes": 10, "in_channels": 3}, (3, 32, 32)),
    "mobilenet_v2": ({"num_classes": 1000, "in_channels": 3, "small_input": False}, (3, 224, 224)),
}


def width_for(graph: ModelGraph, target_macs: float, multiple: int) -> autocomp.Policy:
    """The widest ``Policy(width=w)`` whose MACs stay within ``target_macs``."""
    low, high = 1e-3, 1.0  # the floor: one channel multiple per layer
    for _ in range(30):
        mid = (low + high) / 2
        if graph.predict_macs(autocomp.Policy(width=mid, channel_multiple=multiple)) <= target_macs:
            low = mid
        else:
            high = mid
    return autocomp.Policy(width=low, channel_multiple=multiple)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.3], help="MACs fractions of the baseline")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument(
        "--multiples", nargs="+", type=int, default=[8, 1], help="channel counts rounded to these multiples"
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    header = [
        "model",
        "input",
        "MACs target",
        "multiple",
        "MACs ratio",
        "width",
        "params",
        "batch",
        "baseline ms",
        "pruned ms",
        "speedup",
    ]
    rows = []
    for name in args.models:
        kwargs, shape = SETTINGS[name]
        model = autocomp.zoo.create(name, **kwargs).eval()
        example = torch.randn(1, *shape)
        base = autocomp.measure(model, example)
        graph = ModelGraph(copy.deepcopy(model), example)
        pruned = {}
        for target in args.targets:
            for multiple in args.multiples:
                policy = width_for(graph, target * base.macs, multiple)
                small = autocomp.compress(model, policy, example).eval()
                pruned[target, multiple] = (policy, small, autocomp.measure(small, example))
        for batch in args.batches:
            repeats = max(3, args.repeats // 3) if batch > 1 and shape[1] > 100 else args.repeats
            models = {"baseline": model, **{key: small for key, (_, small, _) in pruned.items()}}
            latency = compare_latency_ms(models, example, batch_size=batch, repeats=repeats)
            for (target, multiple), (policy, _, cost) in pruned.items():
                rows.append(
                    [
                        name,
                        "x".join(map(str, shape)),
                        f"{target:.0%}",
                        multiple,
                        f"{cost.macs / base.macs:.1%}",
                        f"{policy.width:.3f}",
                        f"{cost.params / base.params:.1%}",
                        batch,
                        f"{latency['baseline']:.1f}",
                        f"{latency[target, multiple]:.1f}",
                        f"{latency['baseline'] / latency[target, multiple]:.2f}x",
                    ]
                )
    print_table(header, rows)
    if not args.no_record:
        body = [
            "Width multiplier found by bisection for each MACs target and channel multiple; latency = median "
            "forward time, eager fp32, models alternating.",
            "",
            *markdown_table(header, rows),
        ]
        append_section(
            "CPU speed-up of pruned models", shlex.join(["python", "benchmarks/speedup.py", *sys.argv[1:]]), body
        )


if __name__ == "__main__":
    main()
