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
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, Subset, TensorDataset

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
        raise DataError(f"data set {type(dataset).__name__} has no length; an iterable data set must define __len__ "
                        "(its examples per epoch) so that epochs and schedules can be planned.") from None


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
    """The batches of keys a DataLoader reads next; set before each pass (persistent workers see the new plan).
    ``pass_number`` counts the passes, so a pass overtaken by another on the same loader knows it."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.pass_number = 0

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
"""How DataLoader workers start: from a small server process, not forked from the search, whose heap (gigabytes of
freed activations at 224x224) a forked worker would keep alive for as long as it lives. A data set read by workers is
therefore pickled to them: it must be defined in an importable module."""
_LOADERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per data set as the readers were given it (the training split, the held-out split) and (workers, pin_memory): one
DataLoader over the data set under it and its plan, so every reader of the training split (the proxy batches,
BatchNorm's, the final fine-tune) shares one pool of persistent worker processes, started at its first pass."""


def _shared_loader(dataset: Dataset, base: Dataset, workers: int, pin_memory: bool) -> tuple[DataLoader, _Plan]:
    loaders = _LOADERS.setdefault(dataset, {})
    if (workers, pin_memory) not in loaders:
        plan = _Plan()
        loader = DataLoader(base, batch_sampler=plan, num_workers=workers, pin_memory=pin_memory,
                            persistent_workers=workers > 0, multiprocessing_context=WORKER_START if workers else None)
        loaders[workers, pin_memory] = loader, plan
    return loaders[workers, pin_memory]


class BatchReader:
    """Reads ``dataset`` in batches of ``batch_size``: `batches` plans one epoch (or part of one) at a time.

    ``workers`` DataLoader processes and ``pin_memory`` apply to data sets not in memory; ``persistent`` readers of
    one data set share their workers, kept alive between passes, others start theirs for each pass.
    """

    def __init__(self, dataset: Dataset, batch_size: int, workers: int = 0, pin_memory: bool = False,
                 persistent: bool = True) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self._base, self._index = unwrap(dataset)
        self._length = dataset_length(dataset)
        self._tensors = self._base.tensors if isinstance(self._base, TensorDataset) else None
        self._loader: DataLoader | None = None
        self._plan: _Plan | None = None
        if isinstance(self._base, IterableDataset):  # a stream's position (its held-out part) is counted in one process
            self._loader = DataLoader(self._base, batch_size=batch_size, pin_memory=pin_memory)
        elif self._tensors is None and persistent:
            self._loader, self._plan = _shared_loader(dataset, self._base, workers, pin_memory)
        elif self._tensors is None:
            self._plan = _Plan()
            self._loader = DataLoader(self._base, batch_sampler=self._plan, num_workers=workers, pin_memory=pin_memory,
                                      multiprocessing_context=WORKER_START if workers else None)

    def batches(self, shuffle: bool = False, seed: int = 0, epoch: int = 0, drop_last: bool = False, start: int = 0,
                count: int | None = None) -> Iterator[Batch]:
        """Batches ``start`` to ``start + count`` (None: to the end) of one epoch; with ``shuffle`` in the order
        `epoch_order` gives. Only these batches are read. Without shuffling, in-memory batches are views."""
        total = num_batches(self.dataset, self.batch_size, drop_last)
        stop = total if count is None else min(total, start + count)
        if self._plan is None and self._loader is not None:
            return _slice(_typed(iter(self._loader)), start, stop)
        order = epoch_order(self._length, seed, epoch) if shuffle else None
        spans = [(first, min(first + self.batch_size, self._length))
                 for first in range(start * self.batch_size, stop * self.batch_size, self.batch_size)]
        if self._tensors is not None:
            return self._tensor_batches(spans, order)
        keys = [self._keys(order, first, end, seed, epoch) for first, end in spans]
        if not keys:
            return iter(())
        self._plan.batches = keys
        self._plan.pass_number += 1
        return _typed(iter(self._loader), self._plan)

    def _positions(self, order: torch.Tensor | None, first: int, end: int) -> torch.Tensor | None:
        """Indices into the underlying data set of positions ``first:end`` of the epoch (None: a plain slice)."""
        if order is None:
            return None if self._index is None else self._index[first:end]
        picked = order[first:end]
        return picked if self._index is None else self._index.index_select(0, picked)

    def _tensor_batches(self, spans: Sequence[tuple[int, int]], order: torch.Tensor | None) -> Iterator[Batch]:
        for first, end in spans:
            index = self._positions(order, first, end)
            if index is None:
                yield tuple(t[first:end] for t in self._tensors)  # type: ignore[misc]
            else:
                yield tuple(t.index_select(0, index) for t in self._tensors)  # type: ignore[misc]

    def _keys(self, order: torch.Tensor | None, first: int, end: int, seed: int, epoch: int) -> list:
        index = self._positions(order, first, end)
        indices = list(range(first, end)) if index is None else index.tolist()
        if getattr(self._base, AUGMENTS, False):
            return [(i, draw_seed(seed, epoch, i)) for i in indices]
        return indices


def _typed(batches: Iterator, plan: _Plan | None = None) -> Iterator[Batch]:
    """Collated (images, labels) as the loops expect them: float images, int64 labels. With the ``plan`` of a shared
    loader, a pass that another pass over the same data set overtook stops with an error, never with its batches."""
    number = None if plan is None else plan.pass_number
    while True:
        if plan is not None and plan.pass_number != number:  # checked before taking a batch of the other pass
            raise RuntimeError("two passes over one data set ran at once; a reader's pass must end before the next")
        batch = next(batches, None)
        if batch is None:
            return
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


def iterate_batches(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                    drop_last: bool = False, start: int = 0) -> Iterator[Batch]:
    """One epoch of (images, labels) batches from batch ``start`` on, read in this process (see `BatchReader`).

    Since the order depends only on (seed, epoch), an interrupted epoch resumes at the batch it stopped at.
    """
    return BatchReader(dataset, batch_size, persistent=False).batches(shuffle, seed, epoch, drop_last, start)


def as_tensors(dataset: Dataset, batch_size: int = 1024) -> Batch:
    """Every (image, label) of ``dataset`` stacked into two tensors, in order (for data sets that fit in memory)."""
    batches = list(iterate_batches(dataset, batch_size))
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])
