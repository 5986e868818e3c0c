"""Accuracy of a classifier on an in-memory data set."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from autocomp.data import iterate_batches


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] (``model`` is put in eval mode)."""
    model.eval()
    correct = 0
    for images, labels in iterate_batches(data, batch_size):
        correct += (model(images).argmax(dim=1) == labels).sum().item()
    return correct / len(data)
