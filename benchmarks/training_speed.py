"""Training speed in the default (contiguous) and the channels-last memory layout, which autocomp's training loops use.

For each config's model, ``--steps`` SGD steps on batches of its training data (the baseline's batch size), the two
layouts taking turns ``--rounds`` times so that a noisy machine slows them alike; images per second of the best round.

    python benchmarks/training_speed.py                   # resnet20 and mobilenet_v2 on Fashion-MNIST
    python benchmarks/training_speed.py --steps 10 --no-record
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time

import torch
import torch.nn.functional as F
from results import append_section, markdown_table, print_table

from autocomp.app.config import load_config
from autocomp.data import iterate_batches
from autocomp.memory_format import channels_last

CONFIGS = {"resnet20": "configs/fmnist_resnet20.yaml", "mobilenet_v2": "configs/fmnist_mobilenet_v2.yaml"}
LAYOUTS = ("contiguous", "channels-last")


def images_per_second(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, layout: str
) -> float:
    """Images per second of ``steps`` SGD steps on one batch in ``layout``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    as_is = contextlib.nullcontext(lambda images: images)
    with channels_last(model) if layout == "channels-last" else as_is as convert:
        batch = convert(images)
        for step in range(steps + 2):  # two warm-up steps
            if step == 2:
                started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(batch), labels).backward()
            optimizer.step()
    return steps * len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        config = load_config(CONFIGS[name])
        data = config.data.load()
        model = config.model.build(data.num_classes, data.in_channels)
        images, labels = next(iterate_batches(data.train, config.baseline.batch_size))
        best = dict.fromkeys(LAYOUTS, 0.0)
        for _ in range(args.rounds):
            for layout in LAYOUTS:
                best[layout] = max(best[layout], images_per_second(model, images, labels, args.steps, layout))
        rows.append(
            [
                name,
                f"{best['contiguous']:.0f}",
                f"{best['channels-last']:.0f}",
                f"{best['channels-last'] / best['contiguous']:.2f}x",
            ]
        )
    header = ["model", "contiguous img/s", "channels-last img/s", "speed-up"]
    print_table(header, rows)
    if not args.no_record:
        append_section(
            "Training speed by memory layout",
            shlex.join(["python", *sys.argv]),
            [
                f"SGD steps on batches of {config.baseline.batch_size} Fashion-MNIST images (28x28), the layouts taking turns"
                f" {args.rounds} times, {args.steps} timed steps each; the best round's images per second.",
                "",
                *markdown_table(header, rows),
                "",
            ],
        )


if __name__ == "__main__":
    main()
