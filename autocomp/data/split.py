"""The deterministic held-out (validation) split of a training set."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterator, Sized
from typing import cast

import torch
from torch.utils.data import Dataset, IterableDataset, Subset

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
            raise DataError(
                f"val_size {count} holds out no example; use a count of at least 1 or a fraction in (0, 1)."
            )
    else:
        if not 0 < val_size < 1:
            raise DataError(
                f"val_size {val_size!r} is a float outside (0, 1); pass a fraction such as 0.1 "
                f"or an int count of examples."
            )
        count = round(float(val_size) * n)
        if count < 1:
            raise DataError(
                f"val_size {val_size!r} holds out none of the {n} training examples of {name}; "
                f"use a fraction of at least {0.5 / n:.2g} or an int count."
            )
    maximum = n // 2
    if count > maximum:
        raise DataError(
            f"val_size {val_size!r} would hold out {count} of the {n} training examples of {name}, "
            f"leaving fewer than half for training; use at most {maximum}."
        )
    return count


def split_indices(n: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices: a permutation of ``range(n)`` drawn from ``seed``, its first ``count`` held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[count:], order[:count]


class StreamPart(IterableDataset):
    """Positions ``start`` to ``stop`` of an iterable data set, read in its own order (the held-out split of a stream:
    its first examples; training: the rest)."""

    def __init__(self, data: IterableDataset, start: int, stop: int) -> None:
        self.data, self.start, self.stop = data, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[object]:
        return itertools.islice(iter(self.data), self.start, self.stop)


def hold_out(data: Dataset, count: int, seed: int, held_out_view: Dataset | None = None) -> tuple[Dataset, Dataset]:
    """(train, val): ``count`` examples of ``data`` held out by `split_indices`, the rest kept for training; both are
    views by index, never copies. ``held_out_view``: the same examples as the held-out part should see them (the
    training set without augmentation), if not ``data`` itself. An iterable data set holds out its first ``count``."""
    if isinstance(data, IterableDataset):
        return StreamPart(data, count, len(cast(Sized, data))), StreamPart(data, 0, count)
    train_index, val_index = split_indices(len(cast(Sized, data)), count, seed)
    return Subset(data, train_index.tolist()), Subset(
        data if held_out_view is None else held_out_view, val_index.tolist()
    )
