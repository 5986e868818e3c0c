"""The fixed sequence of fine-tune batches every candidate sees, with the teacher's targets computed once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from autocomp.data import num_batches
from autocomp.data.batching import epoch_order
from autocomp.distill import FeatureTaps, attention_map
from autocomp.errors import ConfigError
from autocomp.evaluate.timing import Stopwatch
from autocomp.modes import evaluating

MEMO_EXAMPLES = 16_384
"""Batches up to this many examples into the stream are kept with their teacher targets (51 MB of 28x28 images)."""


@dataclass(frozen=True)
class TeacherBatch:
    """Images and labels, the teacher's logits and its attention maps at the attention points."""

    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    maps: tuple[torch.Tensor, ...]


class TrainingStream:
    """Seeded epochs of the training split in ``batch_size`` batches, each paired with the teacher's outputs.

    Batch ``i`` is the same for every candidate, so the teacher runs once per batch for the
    first batches (up to `MEMO_EXAMPLES` examples: all a proxy fine-tune needs), which are
    kept. Later batches (the ``epochs`` level) are rebuilt, teacher included, for every candidate.
    """

    def __init__(self, data: TensorDataset, batch_size: int, seed: int, teacher: nn.Module,
                 attention_points: Sequence[str] = ()) -> None:
        self.steps_per_epoch = num_batches(data, batch_size, drop_last=True)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"proxy batch_size {batch_size} is larger than the {len(data)} training examples.")
        self._data, self._batch_size, self._seed = data, batch_size, seed
        self._teacher, self._points = teacher, list(attention_points)
        self._memo: list[TeacherBatch] = []
        self._memo_steps = max(1, MEMO_EXAMPLES // batch_size)

    def prefill(self, steps: int) -> None:
        """Compute the teacher's targets of the first ``steps`` batches now (as many as are kept)."""
        for _ in self.batches(min(steps, self._memo_steps)):
            pass

    def batches(self, steps: int, stopwatch: Stopwatch | None = None) -> Iterator[TeacherBatch]:
        """The first ``steps`` batches of the stream; the teacher's passes count as compute on ``stopwatch``."""
        watch = stopwatch or Stopwatch()
        for step in range(min(steps, len(self._memo))):
            yield self._memo[step]
        step = len(self._memo)
        while step < steps:
            epoch, first = divmod(step, self.steps_per_epoch)
            order = epoch_order(len(self._data), self._seed, epoch)
            for batch_index in range(first, min(self.steps_per_epoch, first + steps - step)):
                index = order[batch_index * self._batch_size:(batch_index + 1) * self._batch_size]
                images, labels = (tensor.index_select(0, index) for tensor in self._data.tensors)
                with watch.computing():
                    batch = self._with_teacher(images, labels)
                if step == len(self._memo) and step < self._memo_steps:
                    self._memo.append(batch)
                yield batch
                step += 1

    @torch.no_grad()
    def _with_teacher(self, images: torch.Tensor, labels: torch.Tensor) -> TeacherBatch:
        with evaluating(self._teacher), FeatureTaps(self._teacher, self._points) as taps:
            logits = self._teacher(images)
            maps = tuple(attention_map(features) for features in taps.take())
        return TeacherBatch(images, labels, logits, maps)
