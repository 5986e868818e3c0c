"""The fast evaluator: compress a copy of the baseline, recalibrate BatchNorm, fine-tune briefly, score held out.

Scores come from the held-out part of the training set (the test set is never seen here) and
are repeatable: the batches, their order and every random draw follow from the settings'
seed. A policy scored once is never scored again at the same settings (`Evaluator.cache`,
keyed by `Evaluator.score_key`; a search refills it from its study when it resumes). A
candidate that breaks (NaN loss, out of memory, a layer that cannot be built) comes back as
a failed result with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sized
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from autocomp.compress import Compressor, get_criterion
from autocomp.compress.resize import InputResize
from autocomp.cost import Cost, LatencyMeter, LatencyTarget, measure
from autocomp.data.batching import BatchReader
from autocomp.distill import attention_points
from autocomp.errors import PROGRAMMING_ERRORS
from autocomp.evaluate.bn import recalibrate_batchnorm
from autocomp.evaluate.fidelity import Fidelity, ProxyTraining
from autocomp.evaluate.memory import release_free_memory
from autocomp.evaluate.metrics import held_out_score
from autocomp.evaluate.proxy import proxy_finetune
from autocomp.evaluate.stream import MemoryBound, TrainingStream
from autocomp.evaluate.timing import Stopwatch, Timing
from autocomp.policy import Policy
from autocomp.runtime import CPU, Runtime, Throughput
from autocomp.settings import NonNegativeFloat, Positive, check

_CRITERION_BATCHES = 4
"""Training batches that data-driven criteria (taylor, apoz) and reconstruction see."""

Reporter = Callable[[int, float], bool]
"""Receives (fine-tune step, intermediate held-out accuracy); returns True to go on, False to stop the candidate."""


@dataclass(frozen=True)
class Scoring:
    """How a candidate is scored, whatever its fidelity and compression (a run config's ``evaluator`` section).

    ``bn_batches`` training batches of ``batch_size`` recalibrate BatchNorm; ``val_examples``
    held-out examples (None: all) give the score. With a reporter, an intermediate score on
    the first ``report_examples`` of them comes every ``report_every`` fine-tune steps.
    """

    proxy: ProxyTraining = field(default_factory=ProxyTraining)
    bn_batches: Positive = 20
    batch_size: Positive = 256
    val_examples: Positive | None = 2500
    report_every: Positive = 10
    report_examples: Positive = 500
    cache_mb: NonNegativeFloat = 1024.0
    """Megabytes of fixed batches (the proxy fine-tune's with their teacher outputs first, then BatchNorm's) kept on the
    device; what does not fit is read again for each candidate."""

    def __post_init__(self) -> None:
        check(self, "evaluator")


@dataclass(frozen=True)
class EvaluatorSettings(Scoring):
    """What a score depends on: the scoring, the fidelity, how a policy is compressed, the seed, the latency target."""

    fidelity: Fidelity = field(default_factory=Fidelity)
    criterion: str = "l1"
    reconstruct: bool = False
    seed: int = 0
    latency: LatencyTarget | None = None
    """Where each candidate's latency is measured (None: not measured)."""

    def defining(self) -> dict[str, object]:
        """The settings a finished score depends on (not how intermediate scores are reported)."""
        trains = self.fidelity.level != "bn"
        return {
            "fidelity": self.fidelity.to_dict(),
            "proxy": self.proxy.to_dict() if trains else None,
            "bn_batches": self.bn_batches,
            "bn_batch_size": self.batch_size,
            "val_examples": self.val_examples,
            "criterion": self.criterion,
            "reconstruct": self.reconstruct,
            "seed": self.seed,
            **({} if self.latency is None else {"latency": self.latency.describe()}),
        }


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

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready data (what a Ray worker reports)."""
        return {
            "accuracy": self.accuracy,
            "cost": None if self.cost is None else self.cost.to_dict(),
            "seconds": self.seconds,
            "loss": self.loss,
            "error": self.error,
            "retry": self.retry,
            "curve": [list(point) for point in self.curve],
            "stopped_at": self.stopped_at,
            "timing": asdict(self.timing),
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """The result `to_dict` wrote."""
        cost, timing = data["cost"], data["timing"]
        return cls(
            data["accuracy"],
            None if cost is None else Cost.from_dict(cost),
            data["seconds"],
            loss=data["loss"],
            error=data["error"],
            retry=data["retry"],
            curve=tuple((int(step), float(score)) for step, score in data["curve"]),
            stopped_at=data["stopped_at"],
            timing=Timing(**timing),
            cached=data["cached"],
        )

    @property
    def measured_cost(self) -> Cost:
        """``cost``, which every candidate that did not fail has."""
        if self.cost is None:
            raise ValueError(f"a failed candidate has no measured cost ({self.error}).")
        return self.cost


class Evaluator:
    """Scores policies against a fixed baseline at one fidelity, on ``runtime``'s device and precision.

    Candidates are compressed from ``baseline`` on the CPU and then moved to the device, where a copy of the baseline
    (the baseline itself on the CPU) is the teacher of their fine-tunes. With a latency target, each candidate's
    latency is measured beside a reference (``latency_meter``; by default the baseline, timed when the evaluator is
    made)."""

    def __init__(
        self,
        baseline: nn.Module,
        example_inputs: torch.Tensor,
        train: Dataset,
        val: Dataset,
        settings: EvaluatorSettings = EvaluatorSettings(),
        runtime: Runtime = CPU,
        latency_meter: LatencyMeter | None = None,
    ) -> None:
        self.baseline = baseline.eval()
        if latency_meter is None and settings.latency is not None:
            latency_meter = LatencyMeter(self.baseline, example_inputs, settings.latency)
        self.latency_meter = latency_meter
        """Measures each candidate's latency on ``settings.latency`` beside the baseline's (a run's own, so that a
        relative limit and the candidates share one reference)."""
        self.teacher = (copy.deepcopy(baseline) if runtime.cuda else baseline).to(runtime.device).eval()
        self.example_inputs = example_inputs
        self.settings = settings
        self.runtime = runtime
        self.cache: dict[str, EvalResult] = {}
        self.training = Throughput()
        """Images through the candidates' fine-tune steps and their compute seconds."""
        self.scoring = Throughput()
        """Images through the held-out scores and their seconds."""
        bound = MemoryBound(int(settings.cache_mb * 2**20))
        self._attention_points = attention_points(self.baseline, example_inputs) if settings.proxy.attention > 0 else []
        self._stream: TrainingStream | None = None
        self._training_steps = 0
        if settings.fidelity.level != "bn":
            self._stream = TrainingStream(
                train, settings.proxy.batch_size, settings.seed, self.teacher, self._attention_points, runtime, bound
            )
            self._training_steps = settings.fidelity.training_steps(self._stream.steps_per_epoch)
            self._stream.prefill(self._training_steps)  # the teacher runs once, before any candidate
        needs_data = get_criterion(settings.criterion).needs_data or settings.reconstruct
        self._calibration = _Calibration(train, settings, runtime, bound, _CRITERION_BATCHES if needs_data else 1)
        self._compressor = Compressor(
            self.baseline,
            example_inputs,
            settings.criterion,
            data=self._calibration.head,
            reconstruct=settings.reconstruct,
        )
        self._val_reader = BatchReader(
            _first(val, settings.val_examples), settings.batch_size, runtime.workers, runtime.pin_memory
        )
        self._report_reader = BatchReader(
            _first(val, settings.report_examples), settings.batch_size, runtime.workers, runtime.pin_memory
        )
        defining = settings.defining() | ({} if runtime.precision == "fp32" else {"precision": runtime.precision})
        self._key_prefix = json.dumps(defining, sort_keys=True)

    def speed(self) -> str:
        """Images per second of the candidates' fine-tunes and held-out scores so far, for progress lines."""
        rates = [
            f"{rate.per_second:.0f} img/s {what}"
            for rate, what in ((self.training, "fine-tuning"), (self.scoring, "scoring"))
            if rate.images
        ]
        return f"{', '.join(rates)} on {self.runtime.device}" if rates else ""

    def drop_kept_batches(self) -> None:
        """Free the fixed batches kept for the candidates (the proxy batches with their teacher outputs, BatchNorm's):
        the search's finish needs none of them, and its fine-tunes peak beside them. Later scores read them again."""
        if self._stream is not None:
            self._stream.drop_kept()
        self._calibration.drop_kept()
        release_free_memory()

    def score_key(self, policy: Policy) -> str:
        """A canonical hash of ``policy`` and the settings its score depends on: the cache's key."""
        return hashlib.sha256(f"{self._key_prefix}|{policy.key()}".encode()).hexdigest()[:16]

    def build(self, policy: Policy) -> nn.Module:
        """The compressed, BN-recalibrated model of ``policy`` (not fine-tuned), on the device."""
        small = self._compressor(policy).to(self.runtime.device)
        return recalibrate_batchnorm(small, self._calibration.images(), self.runtime)

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
            with self.runtime.fork_rng():  # the caller's random state is left as it was
                self.runtime.seed(self.settings.seed)
                small = self._compressor(policy).to(self.runtime.device)
                stage = "recalibrating BatchNorm"
                with watch.computing():
                    recalibrate_batchnorm(small, self._calibration.images(), self.runtime)
                stage = "fine-tuning"
                if self.settings.fidelity.level == "halving":
                    curve, stopped_at, (acc, loss) = self._climb_rungs(small, report, watch)
                else:
                    curve, stopped_at = self._fine_tune(small, report, watch)
                    stage = "scoring"
                    if stopped_at is None:
                        acc, loss = self._held_out(small, watch)
                    else:
                        acc, loss = curve[-1][1], math.nan
                stage = "measuring"
                cost = measure(small.cpu(), self.example_inputs, self.latency_meter)
        except PROGRAMMING_ERRORS:
            raise
        except Exception as err:
            message = str(err).splitlines()[0] if str(err) else "no message"
            out_of_memory = isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in message
            if out_of_memory and self.runtime.cuda:
                torch.cuda.empty_cache()
            timing = watch.timing()
            return EvalResult(
                math.nan,
                None,
                timing.total,
                error=f"{type(err).__name__} while {stage}: {message}",
                retry=out_of_memory,
                timing=timing,
            )
        timing = watch.timing()
        return EvalResult(acc, cost, timing.total, loss=loss, curve=tuple(curve), stopped_at=stopped_at, timing=timing)

    def _held_out(self, small: nn.Module, watch: Stopwatch) -> tuple[float, float]:
        """``small``'s accuracy and cross-entropy on the held-out examples that score candidates."""
        with watch.computing():
            return held_out_score(small, self._val_reader, runtime=self.runtime, throughput=self.scoring)

    def _climb_rungs(
        self, small: nn.Module, report: Reporter | None, watch: Stopwatch
    ) -> tuple[list[tuple[int, float]], int | None, tuple[float, float]]:
        """Successive halving's part: the held-out score at each rung, trained from one rung to the next (a cosine of
        its own per stretch); before the last rung the reporter may stop it. The curve, the rung it stopped at, and the
        accuracy and loss at the last rung reached."""
        curve: list[tuple[int, float]] = []
        rungs, done = self.settings.fidelity.rungs, 0
        for rung in rungs:
            if rung > done:
                self._train(small, rung - done, done, None, watch)
                done = rung
            acc, loss = self._held_out(small, watch)
            curve.append((rung, acc))
            if rung != rungs[-1] and report is not None and not report(rung, acc):
                return curve, rung, (acc, loss)
        return curve, None, (acc, loss)

    def _train(
        self, small: nn.Module, steps: int, start: int, after_step: Callable[[int], bool] | None, watch: Stopwatch
    ) -> None:
        """The proxy fine-tune of ``small`` on ``steps`` batches of the stream from batch ``start``."""
        points = self._attention_points
        if isinstance(small, InputResize):
            points = [f"model.{name}" for name in points]
        before, reached = watch.compute, [start]

        def counted(step: int) -> bool:
            reached[0] = step
            return after_step is None or after_step(step)

        stream = cast(TrainingStream, self._stream)
        proxy_finetune(small, stream, steps, self.settings.proxy, points, counted, watch, self.runtime, start=start)
        self.training.add((reached[0] - start) * self.settings.proxy.batch_size, watch.compute - before)

    def _fine_tune(
        self, small: nn.Module, report: Reporter | None, watch: Stopwatch
    ) -> tuple[list[tuple[int, float]], int | None]:
        """Proxy/epochs fine-tune with intermediate scores; returns the curve and the step a reporter stopped at."""
        curve: list[tuple[int, float]] = []
        if self._stream is None:
            return curve, None
        stopped: list[int] = []

        def after_step(step: int) -> bool:
            if report is None or (step % self.settings.report_every and step != self._training_steps):
                return True
            with watch.computing():
                score = held_out_score(small, self._report_reader, runtime=self.runtime)[0]
            small.train()
            curve.append((step, score))
            if not report(step, score) and step < self._training_steps:
                stopped.append(step)
                return False
            return True

        self._train(small, self._training_steps, 0, after_step, watch)
        return curve, stopped[0] if stopped else None


def _first(data: Dataset, count: int | None) -> Dataset:
    """The first ``count`` examples of ``data`` (a view; all of it when None or more than it holds)."""
    return data if count is None or count >= len(cast(Sized, data)) else Subset(data, range(count))


class _Calibration:
    """The training batches BatchNorm is recalibrated on: the first ``bn_batches`` of a seeded epoch, kept on the device
    as far as the memory bound allows and read again for each candidate beyond that. ``head``: the first ``head_count``
    (images, labels) batches on the CPU, for the data-driven criteria and the quantizers."""

    def __init__(
        self, train: Dataset, settings: EvaluatorSettings, runtime: Runtime, bound: MemoryBound, head_count: int
    ) -> None:
        self._reader = BatchReader(train, settings.batch_size, runtime.workers, runtime.pin_memory)
        self._count, self._seed, self._runtime = settings.bn_batches, settings.seed, runtime
        self._kept: list[torch.Tensor] = []
        self.head: list[tuple[torch.Tensor, torch.Tensor]] = []
        full = False  # once a batch does not fit, later ones are read again for each candidate
        for images, labels in self._batches(0):
            if len(self.head) < head_count:
                self.head.append((images, labels))
            full = full or not bound.take(images)
            if not full:
                self._kept.append(runtime.to_device(images))
            elif len(self.head) == head_count:
                break

    def _batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._reader.batches(shuffle=True, seed=self._seed, start=start, count=self._count - start)

    def drop_kept(self) -> None:
        """Read every batch again from now on."""
        self._kept.clear()

    def images(self) -> Iterator[torch.Tensor]:
        """Every calibration batch's images, on the device."""
        yield from self._kept
        for images, _ in self._batches(len(self._kept)):
            yield self._runtime.to_device(images)
