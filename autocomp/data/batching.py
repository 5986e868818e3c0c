"""Fast in-memory batching of a `TensorDataset` by tensor indexing, resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import TensorDataset

from autocomp.errors import ConfigError


def num_batches(dataset: TensorDataset, batch_size: int, drop_last: bool = False) -> int:
    """How many batches `iterate_batches` yields for one epoch of ``dataset``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}.")
    return len(dataset) // batch_size if drop_last else -(-len(dataset) // batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``range(n)`` for ``epoch``: a function of (seed, epoch) only."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, not {epoch!r}.")
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


def iterate_batches(dataset: TensorDataset, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch of (images, labels) batches; with ``shuffle`` in the order `epoch_order` gives.

    Since the order depends only on (seed, epoch), an interrupted epoch resumes by skipping the
    batches already seen. Without shuffling, batches are views of the dataset's tensors.
    """
    count = num_batches(dataset, batch_size, drop_last)
    order = epoch_order(len(dataset), seed, epoch) if shuffle else None
    tensors = dataset.tensors

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, count * batch_size, batch_size):
            if order is None:
                yield tuple(t[start:start + batch_size] for t in tensors)
            else:
                index = order[start:start + batch_size]
                yield tuple(t.index_select(0, index) for t in tensors)

    return batches()
