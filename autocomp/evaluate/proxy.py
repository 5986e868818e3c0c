"""The proxy fine-tune: a few steps of distillation from the baseline, stoppable after any step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import cast

import torch
from torch import nn

from autocomp.distill import FeatureTaps, attention_loss, distillation_loss
from autocomp.evaluate.fidelity import ProxyTraining
from autocomp.evaluate.stream import TrainingStream
from autocomp.evaluate.timing import Stopwatch
from autocomp.memory_format import channels_last
from autocomp.runtime import CPU, Runtime
from autocomp.train import descend

StepCallback = Callable[[int], bool]
"""Called after each step with the number of steps done; returning False stops the fine-tune."""


def proxy_finetune(
    student: nn.Module,
    stream: TrainingStream,
    steps: int,
    settings: ProxyTraining,
    attention_points: Sequence[str] = (),
    after_step: StepCallback | None = None,
    stopwatch: Stopwatch | None = None,
    runtime: Runtime = CPU,
    start: int = 0,
) -> None:
    """Fine-tune ``student`` (on ``runtime``'s device) in place on ``steps`` batches of the stream from batch ``start``
    (fewer if ``after_step`` stops it; it is told the steps done counted from the stream's first batch).

    SGD (Nesterov momentum) with the learning rate decaying from ``settings.lr`` to 0 on a
    cosine, at ``runtime``'s precision. Raises FloatingPointError when the loss stops being finite.
    """
    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.momentum > 0,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    scaler = runtime.grad_scaler()
    watch = stopwatch or Stopwatch()
    attention = settings.attention > 0 and bool(attention_points)
    student.train()
    done = start
    with (
        FeatureTaps(student, attention_points) if attention else nullcontext() as taps,
        channels_last(student) as layout,
    ):
        for batch in stream.batches(start + steps, watch, start):
            with watch.computing():
                with runtime.autocast():
                    logits = student(layout(batch.images)).float()
                    loss = distillation_loss(logits, batch.logits, batch.labels, settings.temperature, settings.alpha)
                    if attention:
                        student_maps = [f.float() for f in cast(FeatureTaps, taps).take()]  # taps: attention on
                        loss = loss + settings.attention / 2 * attention_loss(student_maps, batch.maps)
                descend(
                    optimizer, schedule, loss, f"the proxy fine-tune's loss became {{}} at step {done + 1}.", scaler
                )
            done += 1
            if after_step is not None and not after_step(done):
                break
