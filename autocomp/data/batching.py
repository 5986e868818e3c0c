"""Reading a data set in seeded batches, resumable mid-epoch, whether it is in memory or read from disk.

In-memory data (a `TensorDataset`, or `Subset`s of one: the held-out split) is batched by tensor indexing, the fast
path. Any other map-style data set goes through a DataLoader (worker processes, pinned memory, persistent workers)
whose batches are planned here, so the same (seed, epoch) reads the same examples in the same order, only the
batches asked for are read, and a data set that augments (`AUGMENTS`) draws its augmentation from (seed, epoch,
example). An iterable data set is read in its own order, in this process.
"""

from __future__ import annotations

import multiprocessing
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    Subset,
    TensorDataset,
)

from autocomp.errors import ConfigError, DataError

Batch = tuple[torch.Tensor, torch.Tensor]
AUGMENTS = "autocomp_augments"
"""A map-style data set with this attribute set to True takes ``(index, draw)`` keys: ``draw`` seeds its random
augmentation of example ``index`` (see `draw_seed`)."""


def dataset_length(dataset: Dataset) -> int:
    """How many examples ``dataset`` holds; `DataError` for an iterable data set without ``__len__``."""
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            f"data set {type(dataset).__name__} has no length; an iterable data set must define __len__ "
            "(its examples per epoch) so that epochs and schedules can be planned."
        ) from None


def num_batches(dataset: Dataset, batch_size: int, drop_last: bool = False) -> int:
    """How many batches one epoch of ``dataset`` has."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}.")
    n = dataset_length(dataset)
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``range(n)`` for ``epoch``: a function of (seed, epoch) only."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, not {epoch!r}.")
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


def draw_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of example ``index``'s augmentation in ``epoch`` of a reading seeded ``seed``."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


def unwrap(dataset: Dataset) -> tuple[Dataset, torch.Tensor | None]:
    """The data set under any `Subset`s of ``dataset`` and the indices of it they read (None: all, in order)."""
    index = None
    while isinstance(dataset, Subset):
        indices = torch.as_tensor(dataset.indices, dtype=torch.long)
        index = indices if index is None else indices[index]
        dataset = dataset.dataset
    return dataset, index


class _Plan(Sampler[list]):
    """The batches of keys its DataLoader reads in the pass under way (persistent workers see each new plan), and
    whether a pass is under way."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.busy = False

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
"""How DataLoader workers start: from a small server process, not forked from the search, whose heap (gigabytes of
freed activations at 224x224) a forked worker would keep alive for as long as it lives. A data set read by workers is
therefore pickled to them: it must be defined in an importable module."""


class _Pool(list):
    """Planned DataLoaders over one data set, each with its plan: a second joins only while one pass is under way
    beside another."""


_POOLS: weakref.WeakValueDictionary[tuple[int, int, bool], _Pool] = weakref.WeakValueDictionary()
"""Per data set under the readers' `Subset`s (the training images; the held-out ones, which may be the same) and
(workers, pin_memory): the pool every persistent reader of it shares (the proxy batches, BatchNorm's and the final
fine-tune's; the held-out scores and accuracies), so its worker processes start once. A pool lives as long as a
reader holds it (the evaluator's, for a whole search); the readers hold the data set, so its id names it meanwhile."""


def _shared_pool(base: Dataset, workers: int, pin_memory: bool) -> _Pool:
    key = (id(base), workers, pin_memory)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = _Pool()
    return pool


class BatchReader:
    """Reads ``dataset`` in batches of ``batch_size``: `batches` plans one epoch (or part of one) at a time.

    ``workers`` DataLoader processes and ``pin_memory`` apply to data sets not in memory; ``persistent`` readers of
    one data set share their workers, kept alive between passes, others start theirs for each pass.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, workers: int = 0, pin_memory: bool = False, persistent: bool = True
    ) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self._base, self._index = unwrap(dataset)
        self._length = dataset_length(dataset)
        self._tensors = self._base.tensors if isinstance(self._base, TensorDataset) else None
        self._workers, self._pin_memory, self._persistent = workers, pin_memory, persistent
        self._stream: DataLoader | None = None
        self._pool = _Pool()
        if isinstance(self._base, IterableDataset):  # a stream's position (its held-out part) is counted in one process
            self._stream = DataLoader(self._base, batch_size=batch_size, pin_memory=pin_memory)
        elif self._tensors is None and persistent:
            self._pool = _shared_pool(self._base, workers, pin_memory)

    def batches(
        self,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        start: int = 0,
        count: int | None = None,
    ) -> Iterator[Batch]:
        """Batches ``start`` to ``start + count`` (None: to the end) of one epoch; with ``shuffle`` in the order
        `epoch_order` gives. Only these batches are read. Without shuffling, in-memory batches are views."""
        total = num_batches(self.dataset, self.batch_size, drop_last)
        stop = total if count is None else min(total, start + count)
        if self._stream is not None:
            return _slice(_typed(iter(self._stream)), start, stop)
        order = epoch_order(self._length, seed, epoch) if shuffle else None
        spans = [
            (first, min(first + self.batch_size, self._length))
            for first in range(start * self.batch_size, stop * self.batch_size, self.batch_size)
        ]
        if self._tensors is not None:
            return self._tensor_batches(self._tensors, spans, order)
        keys = [self._keys(order, first, end, seed, epoch) for first, end in spans]
        return self._read(keys) if keys else iter(())

    def _read(self, keys: list[list]) -> Iterator[Batch]:
        """The batches of ``keys`` through an idle loader of the pool (a new one when all are reading)."""
        idle = next((entry for entry in self._pool if not entry[1].busy), None)
        if idle is None:
            plan = _Plan()
            idle = (
                DataLoader(
                    self._base,
                    batch_sampler=plan,
                    num_workers=self._workers,
                    pin_memory=self._pin_memory,
                    persistent_workers=self._persistent and self._workers > 0,
                    multiprocessing_context=WORKER_START if self._workers else None,
                ),
                plan,
            )
            self._pool.append(idle)
        loader, plan = idle
        plan.batches, plan.busy = keys, True
        try:
            yield from _typed(iter(loader))
        finally:
            plan.busy = False

    def _positions(self, order: torch.Tensor | None, first: int, end: int) -> torch.Tensor | None:
        """Indices into the underlying data set of positions ``first:end`` of the epoch (None: a plain slice)."""
        if order is None:
            return None if self._index is None else self._index[first:end]
        picked = order[first:end]
        return picked if self._index is None else self._index.index_select(0, picked)

    def _tensor_batches(
        self, tensors: tuple[torch.Tensor, ...], spans: Sequence[tuple[int, int]], order: torch.Tensor | None
    ) -> Iterator[Batch]:
        for first, end in spans:
            index = self._positions(order, first, end)
            if index is None:
                yield tuple(t[first:end] for t in tensors)  # type: ignore[misc]
            else:
                yield tuple(t.index_select(0, index) for t in tensors)  # type: ignore[misc]

    def _keys(self, order: torch.Tensor | None, first: int, end: int, seed: int, epoch: int) -> list:
        index = self._positions(order, first, end)
        indices = list(range(first, end)) if index is None else index.tolist()
        if getattr(self._base, AUGMENTS, False):
            return [(i, draw_seed(seed, epoch, i)) for i in indices]
        return indices


def _typed(batches: Iterator) -> Iterator[Batch]:
    """Collated (images, labels) as the loops expect them: float images, int64 labels."""
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise DataError(f"a data set's items must be (image, label) pairs; a batch came as {type(batch).__name__}.")
        images, labels = batch[0], torch.as_tensor(batch[1])
        yield (images if images.is_floating_point() else images.float()), labels.long()


def _slice(batches: Iterator[Batch], start: int, stop: int) -> Iterator[Batch]:
    for number, batch in enumerate(batches):
        if number >= stop:
            return
        if number >= start:
            yield batch


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    start: int = 0,
) -> Iterator[Batch]:
    """One epoch of (images, labels) batches from batch ``start`` on, read in this process (see `BatchReader`).

    Since the order depends only on (seed, epoch), an interrupted epoch resumes at the batch it stopped at.
    """
    return BatchReader(dataset, batch_size, persistent=False).batches(shuffle, seed, epoch, drop_last, start)


def as_tensors(dataset: Dataset, batch_size: int = 1024) -> Batch:
    """Every (image, label) of ``dataset`` stacked into two tensors, in order (for data sets that fit in memory)."""
    batches = list(iterate_batches(dataset, batch_size))
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])
