"""Accuracy and loss of a classifier on an in-memory data set."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from autocomp.data import iterate_batches


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] (``model`` is put in eval mode)."""
    return held_out_score(model, data, batch_size)[0]


@torch.no_grad()
def held_out_score(model: nn.Module, data: TensorDataset, batch_size: int = 256) -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy) of ``model`` in eval mode.

    Raises FloatingPointError when the model's outputs are not finite, so a broken candidate
    is never scored as if it were merely bad.
    """
    model.eval()
    correct, loss = 0, 0.0
    for images, labels in iterate_batches(data, batch_size):
        logits = model(images)
        if not torch.isfinite(logits).all():
            raise FloatingPointError("the model's outputs on held-out data are not finite (NaN or inf).")
        correct += (logits.argmax(dim=1) == labels).sum().item()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
    return correct / len(data), loss / len(data)
