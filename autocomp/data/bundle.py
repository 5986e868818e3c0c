"""The containers a data set is delivered in."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from autocomp.errors import ConfigError


@dataclass(frozen=True)
class TrainTest:
    """A data set as its source defines it: the whole training set, the test set, the class count."""

    train: TensorDataset
    test: TensorDataset
    num_classes: int


@dataclass(frozen=True)
class DataBundle:
    """An image-classification data set in memory: float32 images (N, C, H, W), int64 labels.

    ``val`` is a deterministic held-out part of the training set, for search-time scores; ``train`` is
    the rest. ``test`` is the data set's official test split, used only for final reports.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros of shape (batch, C, H, W), for tracing and measuring models."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"example_input batch must be a positive integer, not {batch!r}.")
        return torch.zeros(batch, self.in_channels, *self.image_size)
