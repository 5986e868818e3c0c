"""The fixed sequence of fine-tune batches every candidate sees, with the teacher's targets computed once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.utils.data import Dataset

from autocomp.data import num_batches
from autocomp.data.batching import BatchReader
from autocomp.distill import FeatureTaps, attention_map
from autocomp.errors import ConfigError
from autocomp.evaluate.timing import Stopwatch
from autocomp.modes import evaluating
from autocomp.runtime import CPU, Runtime

MEMO_EXAMPLES = 16_384
"""Batches up to this many examples into the stream are kept with their teacher targets (51 MB of 28x28 images), as
far as the evaluator's `MemoryBound` allows."""


class MemoryBound:
    """The bytes of fixed batches (and their teacher outputs) an evaluator may keep; what does not fit is read again."""

    def __init__(self, limit_bytes: int) -> None:
        self.left = limit_bytes

    def take(self, *tensors: torch.Tensor) -> bool:
        """Whether ``tensors`` fit in what is left (then they are counted as kept)."""
        size = sum(t.numel() * t.element_size() for t in tensors)
        if size > self.left:
            return False
        self.left -= size
        return True


@dataclass(frozen=True)
class TeacherBatch:
    """Images and labels, the teacher's logits and its attention maps at the attention points."""

    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    maps: tuple[torch.Tensor, ...]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.images, self.labels, self.logits, *self.maps)


class TrainingStream:
    """Seeded epochs of the training split in ``batch_size`` batches, each paired with the teacher's outputs.

    Batch ``i`` is the same for every candidate, so the teacher runs once per batch for the
    first batches (up to `MEMO_EXAMPLES` examples and what ``bound`` allows: all a proxy fine-tune
    needs), which are kept on the device. Later batches (the ``epochs`` level) are read again,
    teacher included, for every candidate.
    """

    def __init__(
        self,
        data: Dataset,
        batch_size: int,
        seed: int,
        teacher: nn.Module,
        attention_points: Sequence[str] = (),
        runtime: Runtime = CPU,
        bound: MemoryBound | None = None,
    ) -> None:
        self.steps_per_epoch = num_batches(data, batch_size, drop_last=True)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"proxy batch_size {batch_size} is larger than the {len(cast(Sized, data))} training examples."
            )
        self._reader = BatchReader(data, batch_size, runtime.workers, runtime.pin_memory)
        self._seed, self._runtime = seed, runtime
        self._teacher, self._points = teacher, list(attention_points)
        self._memo: list[TeacherBatch] = []
        self._memo_steps = max(1, MEMO_EXAMPLES // batch_size)
        self._bound = bound or MemoryBound(2**62)

    def prefill(self, steps: int) -> None:
        """Compute the teacher's targets of the first ``steps`` batches now (as many as are kept)."""
        for _ in self.batches(min(steps, self._memo_steps)):
            pass

    def drop_kept(self) -> None:
        """Compute every batch's teacher outputs again from now on (nothing more is kept)."""
        self._memo.clear()
        self._memo_steps = 0

    def batches(self, steps: int, stopwatch: Stopwatch | None = None, start: int = 0) -> Iterator[TeacherBatch]:
        """Batches ``start`` to ``steps`` - 1 of the stream, on the device; the teacher's passes count as compute on
        ``stopwatch``."""
        watch = stopwatch or Stopwatch()
        for step in range(start, min(steps, len(self._memo))):
            yield self._memo[step]
        step = max(start, len(self._memo))
        while step < steps:
            epoch, first = divmod(step, self.steps_per_epoch)
            for images, labels in self._reader.batches(
                shuffle=True, seed=self._seed, epoch=epoch, drop_last=True, start=first, count=steps - step
            ):
                with watch.computing():
                    batch = self._with_teacher(self._runtime.to_device(images), self._runtime.to_device(labels))
                if step == len(self._memo) and step < self._memo_steps and self._bound.take(*batch.tensors()):
                    self._memo.append(batch)
                yield batch
                step += 1

    @torch.no_grad()
    def _with_teacher(self, images: torch.Tensor, labels: torch.Tensor) -> TeacherBatch:
        with evaluating(self._teacher), FeatureTaps(self._teacher, self._points) as taps, self._runtime.autocast():
            logits = self._teacher(images).float()
            maps = tuple(attention_map(features.float()) for features in taps.take())
        return TeacherBatch(images, labels, logits, maps)
