"""The fast evaluator: compress a copy of the baseline, recalibrate BatchNorm, fine-tune briefly, score held out.

Scores come from the held-out part of the training set (the test set is never seen here) and
are repeatable: the batches, their order and every random draw follow from the settings'
seed. A policy scored once is never scored again at the same settings (`Evaluator.cache`,
keyed by `Evaluator.score_key`; a search refills it from its study when it resumes). A
candidate that breaks (NaN loss, out of memory, a layer that cannot be built) comes back as
a failed result with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.utils.data import TensorDataset

from autocomp.compress import Compressor
from autocomp.compress.resize import InputResize
from autocomp.cost import Cost, LatencyTarget, measure
from autocomp.data import iterate_batches
from autocomp.distill import attention_points
from autocomp.errors import ConfigError
from autocomp.evaluate.bn import recalibrate_batchnorm
from autocomp.evaluate.fidelity import Fidelity, ProxyTraining, check_positive_int
from autocomp.evaluate.memory import release_free_memory
from autocomp.evaluate.metrics import held_out_score
from autocomp.evaluate.proxy import proxy_finetune
from autocomp.evaluate.stream import TrainingStream
from autocomp.evaluate.timing import Stopwatch, Timing
from autocomp.policy import Policy

_CRITERION_BATCHES = 4
"""Training batches that data-driven criteria (taylor, apoz) and reconstruction see."""

Reporter = Callable[[int, float], bool]
"""Receives (fine-tune step, intermediate held-out accuracy); returns True to go on, False to stop the candidate."""


@dataclass(frozen=True)
class EvaluatorSettings:
    """What a score depends on.

    ``bn_batches`` training batches of ``batch_size`` recalibrate BatchNorm; ``val_examples``
    held-out examples (None: all) give the score. With a reporter, an intermediate score on
    the first ``report_examples`` of them comes every ``report_every`` fine-tune steps.
    """

    fidelity: Fidelity = Fidelity()
    proxy: ProxyTraining = ProxyTraining()
    bn_batches: int = 20
    batch_size: int = 256
    val_examples: int | None = 2500
    report_every: int = 10
    report_examples: int = 500
    criterion: str = "l1"
    reconstruct: bool = False
    seed: int = 0
    latency: LatencyTarget | None = None
    """Where each candidate's latency is measured (None: not measured)."""

    def __post_init__(self) -> None:
        for name in ("bn_batches", "batch_size", "report_every", "report_examples"):
            check_positive_int(getattr(self, name), f"evaluator {name}")
        if self.val_examples is not None and (isinstance(self.val_examples, bool) or not isinstance(self.val_examples, int)
                                              or self.val_examples < 1):
            raise ConfigError(f"evaluator val_examples must be a positive integer or None (all), not {self.val_examples!r}.")

    def defining(self) -> dict[str, object]:
        """The settings a finished score depends on (not how intermediate scores are reported)."""
        trains = self.fidelity.level != "bn"
        return {"fidelity": self.fidelity.to_dict(), "proxy": self.proxy.to_dict() if trains else None,
                "bn_batches": self.bn_batches, "bn_batch_size": self.batch_size, "val_examples": self.val_examples,
                "criterion": self.criterion, "reconstruct": self.reconstruct, "seed": self.seed,
                **({} if self.latency is None else {"latency": self.latency.describe()})}


@dataclass(frozen=True)
class EvalResult:
    """One candidate's score: held-out accuracy in [0, 1] and cross-entropy, its measured cost, its time.

    A failed candidate has ``error`` (the reason), accuracy NaN and no cost; ``retry`` marks a
    failure that may pass another time (out of memory). ``curve`` holds the intermediate
    (step, accuracy) scores; ``stopped_at`` the step at which a reporter stopped it (its
    accuracy is then the last intermediate score). ``cached``: returned from the cache, in no time.
    """

    accuracy: float
    cost: Cost | None
    seconds: float
    loss: float = math.nan
    error: str | None = None
    retry: bool = False
    curve: tuple[tuple[int, float], ...] = ()
    stopped_at: int | None = None
    timing: Timing = field(default_factory=lambda: Timing(0.0, 0.0))
    cached: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None


class Evaluator:
    """Scores policies against a fixed baseline at one fidelity."""

    def __init__(self, baseline: nn.Module, example_inputs: torch.Tensor, train: TensorDataset, val: TensorDataset,
                 settings: EvaluatorSettings = EvaluatorSettings()) -> None:
        self.baseline = baseline.eval()
        self.example_inputs = example_inputs
        self.settings = settings
        self.cache: dict[str, EvalResult] = {}
        calibration = iterate_batches(train, settings.batch_size, shuffle=True, seed=settings.seed)
        batches = list(itertools.islice(calibration, settings.bn_batches))
        self._calibration = [images for images, _ in batches]
        self._compressor = Compressor(self.baseline, example_inputs, settings.criterion, data=batches[:_CRITERION_BATCHES],
                                      reconstruct=settings.reconstruct)
        if settings.val_examples is not None and settings.val_examples < len(val):
            val = TensorDataset(*(tensor[: settings.val_examples] for tensor in val.tensors))
        self._val = val
        self._report_val = TensorDataset(*(tensor[: settings.report_examples] for tensor in val.tensors))
        self._attention_points = attention_points(self.baseline, example_inputs) if settings.proxy.attention > 0 else []
        self._stream: TrainingStream | None = None
        self._training_steps = 0
        if settings.fidelity.level != "bn":
            self._stream = TrainingStream(train, settings.proxy.batch_size, settings.seed, self.baseline,
                                          self._attention_points)
            self._training_steps = settings.fidelity.training_steps(self._stream.steps_per_epoch)
            self._stream.prefill(self._training_steps)  # the teacher runs once, before any candidate
        self._key_prefix = json.dumps(settings.defining(), sort_keys=True)

    def score_key(self, policy: Policy) -> str:
        """A canonical hash of ``policy`` and the settings its score depends on: the cache's key."""
        return hashlib.sha256(f"{self._key_prefix}|{policy.key()}".encode()).hexdigest()[:16]

    def build(self, policy: Policy) -> nn.Module:
        """The compressed, BN-recalibrated model of ``policy`` (not fine-tuned)."""
        small = self._compressor(policy)
        return recalibrate_batchnorm(small, self._calibration)

    def score(self, policy: Policy, report: Reporter | None = None) -> EvalResult:
        """The cached result of ``policy`` if there is one, else a new evaluation at this evaluator's fidelity."""
        key = self.score_key(policy)
        if key in self.cache:
            return replace(self.cache[key], cached=True, seconds=0.0, timing=Timing(0.0, 0.0))
        result = self._evaluate(policy, report)
        release_free_memory()  # the candidate's tensors are gone; without this the process only grows
        self.remember(key, result)
        return result

    def remember(self, key: str, result: EvalResult) -> None:
        """Cache ``result`` under ``key`` (a `score_key`) when it is final: not stopped early, not out of memory."""
        if result.stopped_at is None and not result.retry:
            self.cache[key] = replace(result, cached=False)

    def _evaluate(self, policy: Policy, report: Reporter | None) -> EvalResult:
        watch = Stopwatch()
        stage = "compressing"
        try:
            with torch.random.fork_rng(devices=[]):  # the caller's CPU random state is left as it was
                torch.default_generator.manual_seed(self.settings.seed)
                small = self._compressor(policy)
                stage = "recalibrating BatchNorm"
                with watch.computing():
                    recalibrate_batchnorm(small, self._calibration)
                stage = "fine-tuning"
                curve, stopped_at = self._fine_tune(small, report, watch)
                stage = "scoring"
                if stopped_at is None:
                    with watch.computing():
                        acc, loss = held_out_score(small, self._val, self.settings.batch_size)
                else:
                    acc, loss = curve[-1][1], math.nan
                stage = "measuring"
                cost = measure(small, self.example_inputs, self.settings.latency)
        except Exception as err:  # noqa: BLE001 - any breakage of one candidate is its result, the search goes on
            message = str(err).splitlines()[0] if str(err) else "no message"
            out_of_memory = isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in message
            timing = watch.timing()
            return EvalResult(math.nan, None, timing.total, error=f"{type(err).__name__} while {stage}: {message}",
                              retry=out_of_memory, timing=timing)
        timing = watch.timing()
        return EvalResult(acc, cost, timing.total, loss=loss, curve=tuple(curve), stopped_at=stopped_at, timing=timing)

    def _fine_tune(self, small: nn.Module, report: Reporter | None,
                   watch: Stopwatch) -> tuple[list[tuple[int, float]], int | None]:
        """Proxy/epochs fine-tune with intermediate scores; returns the curve and the step a reporter stopped at."""
        curve: list[tuple[int, float]] = []
        if self._stream is None:
            return curve, None
        stopped: list[int] = []

        def after_step(step: int) -> bool:
            if report is None or (step % self.settings.report_every and step != self._training_steps):
                return True
            with watch.computing():
                score = held_out_score(small, self._report_val, self.settings.batch_size)[0]
            small.train()
            curve.append((step, score))
            if not report(step, score) and step < self._training_steps:
                stopped.append(step)
                return False
            return True

        points = self._attention_points
        if isinstance(small, InputResize):
            points = [f"model.{name}" for name in points]
        proxy_finetune(small, self._stream, self._training_steps, self.settings.proxy, points, after_step, watch)
        return curve, stopped[0] if stopped else None
