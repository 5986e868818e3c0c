"""The containers a data set is delivered in."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from autocomp.errors import ConfigError


@dataclass(frozen=True)
class TrainTest:
    """A data set as its source defines it: the whole training set, the test set, the class count, and the training
    set as held-out scores should see it (without augmentation; None: ``train`` itself)."""

    train: Dataset
    test: Dataset
    num_classes: int
    held_out_view: Dataset | None = None


@dataclass(frozen=True)
class DataBundle:
    """An image-classification data set of (float32 image C x H x W, int64 label) pairs, in memory or read from disk.

    ``val`` is a deterministic held-out part of the training set (a view by index), for search-time
    scores; ``train`` is the rest. ``test`` is the data set's official test split, used only for final reports.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros of shape (batch, C, H, W), for tracing and measuring models."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"example_input batch must be a positive integer, not {batch!r}.")
        return torch.zeros(batch, self.in_channels, *self.image_size)
