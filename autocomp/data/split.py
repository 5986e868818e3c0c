"""The deterministic held-out (validation) split of a training set."""

from __future__ import annotations

import numbers

import torch
from torch.utils.data import TensorDataset

from autocomp.errors import DataError


def val_count(val_size: int | float, n: int, name: str) -> int:
    """How many of the ``n`` training examples of data set ``name`` ``val_size`` holds out.

    An int is a count, a float in (0, 1) a fraction; at least one example must be held out and at
    least half must stay for training.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise DataError(f"val_size must be an int count or a float fraction in (0, 1), not {val_size!r}.")
    if isinstance(val_size, numbers.Integral):
        count = int(val_size)
        if count < 1:
            raise DataError(f"val_size {count} holds out no example; use a count of at least 1 "
                            f"or a fraction in (0, 1).")
    else:
        if not 0 < val_size < 1:
            raise DataError(f"val_size {val_size!r} is a float outside (0, 1); pass a fraction such as 0.1 "
                            f"or an int count of examples.")
        count = round(float(val_size) * n)
        if count < 1:
            raise DataError(f"val_size {val_size!r} holds out none of the {n} training examples of {name}; "
                            f"use a fraction of at least {0.5 / n:.2g} or an int count.")
    maximum = n // 2
    if count > maximum:
        raise DataError(f"val_size {val_size!r} would hold out {count} of the {n} training examples of {name}, "
                        f"leaving fewer than half for training; use at most {maximum}.")
    return count


def split_indices(n: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices: a permutation of ``range(n)`` drawn from ``seed``, its first ``count`` held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[count:], order[:count]


def hold_out(data: TensorDataset, count: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """(train, val): ``count`` examples of ``data`` held out by `split_indices`, the rest kept for training."""
    train_index, val_index = split_indices(len(data), count, seed)
    return (TensorDataset(*(t.index_select(0, train_index) for t in data.tensors)),
            TensorDataset(*(t.index_select(0, val_index) for t in data.tensors)))
