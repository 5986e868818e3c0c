"""The fast evaluator: compress a copy of the baseline, recalibrate BatchNorm, score on held-out data."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from autocomp.compress import Compressor
from autocomp.cost import Cost, measure
from autocomp.data import iterate_batches
from autocomp.evaluate.bn import recalibrate_batchnorm
from autocomp.evaluate.metrics import accuracy
from autocomp.policy import Policy


_CRITERION_BATCHES = 4
"""Training batches that data-driven criteria (taylor, apoz) and reconstruction see."""


@dataclass(frozen=True)
class EvaluatorSettings:
    bn_batches: int = 20
    batch_size: int = 256
    val_examples: int | None = 2500
    criterion: str = "l1"
    reconstruct: bool = False
    seed: int = 0


@dataclass(frozen=True)
class EvalResult:
    """Score of one candidate: held-out accuracy in [0, 1], its measured cost, and the seconds it took."""

    accuracy: float
    cost: Cost
    seconds: float


class Evaluator:
    """Scores policies against a fixed baseline; the test set is never seen here."""

    def __init__(self, baseline: nn.Module, example_inputs: torch.Tensor, train: TensorDataset, val: TensorDataset,
                 settings: EvaluatorSettings = EvaluatorSettings()) -> None:
        self.baseline = baseline.eval()
        self.example_inputs = example_inputs
        self.settings = settings
        calibration = iterate_batches(train, settings.batch_size, shuffle=True, seed=settings.seed)
        batches = list(itertools.islice(calibration, settings.bn_batches))
        self._calibration = [images for images, _ in batches]
        self._compressor = Compressor(self.baseline, example_inputs, settings.criterion, data=batches[:_CRITERION_BATCHES],
                                      reconstruct=settings.reconstruct)
        if settings.val_examples is not None and settings.val_examples < len(val):
            val = TensorDataset(*(tensor[: settings.val_examples] for tensor in val.tensors))
        self._val = val

    def build(self, policy: Policy) -> nn.Module:
        """The compressed, BN-recalibrated model of ``policy``."""
        small = self._compressor(policy)
        return recalibrate_batchnorm(small, self._calibration)

    def score(self, policy: Policy) -> EvalResult:
        start = time.perf_counter()
        small = self.build(policy)
        acc = accuracy(small, self._val, self.settings.batch_size)
        cost = measure(small, self.example_inputs)
        return EvalResult(accuracy=acc, cost=cost, seconds=time.perf_counter() - start)
