"""Accuracy and loss of a classifier on a data set, in memory or read from disk."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from autocomp.data.batching import BatchReader
from autocomp.memory_format import channels_last
from autocomp.runtime import CPU, Runtime, Throughput


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset | BatchReader, batch_size: int = 256, runtime: Runtime = CPU) -> float:
    """Top-1 accuracy in [0, 1] (``model`` is put in eval mode; it must be on ``runtime``'s device)."""
    return held_out_score(model, data, batch_size, runtime)[0]


@torch.no_grad()
def held_out_score(
    model: nn.Module,
    data: Dataset | BatchReader,
    batch_size: int = 256,
    runtime: Runtime = CPU,
    throughput: Throughput | None = None,
) -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy) of ``model`` in eval mode on ``data`` (a data set, read once by
    workers of this pass, or a reader of one whose batch size is used); ``throughput`` counts the images scored and
    their seconds.

    Raises FloatingPointError when the model's outputs are not finite, so a broken candidate
    is never scored as if it were merely bad.
    """
    reader = (
        data
        if isinstance(data, BatchReader)
        else BatchReader(data, batch_size, runtime.workers, runtime.pin_memory, persistent=False)
    )
    model.eval()
    correct, loss, count = 0, 0.0, 0
    started = time.perf_counter()
    with channels_last(model, enabled=runtime.channels_last_scoring) as layout:
        for images, labels in reader.batches():
            images, labels = runtime.to_device(images), runtime.to_device(labels)
            with runtime.autocast():
                logits = model(layout(images)).float()
            if not torch.isfinite(logits).all():
                raise FloatingPointError("the model's outputs on held-out data are not finite (NaN or inf).")
            correct += (logits.argmax(dim=1) == labels).sum().item()
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            count += len(labels)
    if throughput is not None:
        throughput.add(count, time.perf_counter() - started)
    return correct / count, loss / count
