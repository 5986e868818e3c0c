"""Measured latency: median wall time of forward passes after warm-up, on a described target.

`LatencyTarget` says where and how a model is timed (runtime, device, threads, batch size, warm-up,
repeats); `measure_latency_ms` times one model there, `LatencyMeter` times models against a reference
(a run's baseline) in alternating rounds, and the per-layer lookup table (`latency_table.LatencyTable`)
times single layers with the same code. The runtime is eager PyTorch
(``torch``) or ONNX Runtime's CPU execution provider (``onnxruntime``): the model exported to ONNX
(`autocomp.deploy.to_onnx`, quantized layers as QDQ) and timed in a session on the target's threads,
so a latency budget is the latency of the runtime the model is deployed with.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from torch import nn

from autocomp.deploy import INPUT, session, to_onnx
from autocomp.errors import ConfigError
from autocomp.imports import require
from autocomp.modes import evaluating
from autocomp.runtime import torch_threads
from autocomp.settings import NonNegative, OneOf, Positive, check

DEVICES = ("cpu", "cuda")
RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class LatencySettings:
    """Where and how latency is measured: device, CPU threads (None: torch's current count), batch size,
    warm-up passes before timing, timed passes whose median is reported, and the runtime (eager ``torch``, or
    ``onnxruntime`` on the CPU) (a run config's ``latency`` section)."""

    device: Annotated[str, OneOf(DEVICES)] = "cpu"
    threads: Positive | None = None
    batch_size: Positive = 1
    warmup: NonNegative = 5
    repeats: Positive = 20
    runtime: Annotated[str, OneOf(RUNTIMES)] = "torch"

    def __post_init__(self) -> None:
        check(self, "latency target")


@dataclass(frozen=True)
class LatencyTarget(LatencySettings):
    """Latency settings this machine can measure (a cuda target needs a GPU here, an onnxruntime one the package)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.runtime == "onnxruntime":
            if self.device != "cpu":
                raise ConfigError(
                    f"latency runtime 'onnxruntime' measures on its CPU execution provider, not device "
                    f"{self.device!r}; allowed with it: device 'cpu'."
                )
            require("onnxruntime", "onnx", "the latency runtime 'onnxruntime'")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "latency target device 'cuda' is not available on this machine "
                "(torch.cuda.is_available() is False); allowed here: 'cpu'."
            )

    @property
    def used_threads(self) -> int:
        """The CPU threads a measurement runs with."""
        return self.threads if self.threads is not None else torch.get_num_threads()

    def processor(self) -> str:
        """The processor's model name: the GPU's for cuda, else /proc/cpuinfo's (or platform's)."""
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(errors="replace"), re.MULTILINE)
            if found:
                return found.group(1).strip()
        return platform.processor() or platform.machine() or "unknown processor"

    def describe(self) -> str:
        """One line for reports: device, processor, threads, batch size, torch version (and ONNX Runtime's)."""
        described = (
            f"{self.device} ({self.processor()}), {self.used_threads} threads, batch {self.batch_size}, "
            f"torch {torch.__version__}"
        )
        if self.runtime == "onnxruntime":
            described += f", onnxruntime {require('onnxruntime', 'onnx', 'ONNX Runtime').__version__}"
        return described

    def key(self) -> str:
        """A file-name-safe string that identifies the target (not how many passes are timed)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.processor().lower()).strip("-")[:40]
        digest = hashlib.sha256(self.describe().encode()).hexdigest()[:10]
        runtime = "-ort" if self.runtime == "onnxruntime" else ""
        return f"{self.device}{runtime}-{slug}-t{self.used_threads}-b{self.batch_size}-{digest}"


def random_batch(example_inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A random standard-normal batch shaped like ``example_inputs`` (without its batch), in its dtype."""
    return torch.randn(batch_size, *example_inputs.shape[1:], dtype=example_inputs.dtype)


WHOLE_MODEL_SECONDS = 0.1
WHOLE_MODEL_ROUNDS = 3
"""A whole model is timed in `WHOLE_MODEL_ROUNDS` rounds of at least `WHOLE_MODEL_SECONDS` each, beside the target's
pass counts: a few dozen passes of a sub-millisecond model last milliseconds."""


def median_pass_ms(run: Callable[[], object], warmup: int, repeats: int, min_seconds: float = 0.0) -> float:
    """Median milliseconds of ``run()`` over at least ``repeats`` passes and ``min_seconds``, after at least ``warmup``
    passes and a fifth of ``min_seconds``."""
    warm_until = time.perf_counter() + min_seconds / 5
    passes = 0
    while passes < warmup or time.perf_counter() < warm_until:
        run()
        passes += 1
    times: list[float] = []
    timed_until = time.perf_counter() + min_seconds
    while len(times) < repeats or time.perf_counter() < timed_until:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


class _Passes:
    """``model(batch)`` on a target, ready to run pass after pass (`run`, inside `ready`): an ONNX Runtime session on
    the model's export, or the model itself in eval mode without grad on the target's threads and device."""

    def __init__(self, model: nn.Module, batch: torch.Tensor, target: LatencyTarget) -> None:
        self.target = target
        self._model, self._batch = model, batch
        self._session: Any = None
        if target.runtime == "onnxruntime":
            with evaluating(model):
                model_bytes = to_onnx(model, batch[:1])
            self._session, self._feed = session(model_bytes, target.used_threads), {INPUT: batch.float().numpy()}
        elif target.device == "cuda":
            self._model, self._batch = copy.deepcopy(model).to("cuda"), batch.to("cuda")

    @contextlib.contextmanager
    def ready(self) -> Iterator[None]:
        if self._session is not None:
            yield
            return
        with torch.no_grad(), torch_threads(self.target.used_threads), evaluating(self._model):
            yield

    def run(self) -> None:
        if self._session is not None:
            self._session.run(None, self._feed)
        elif self.target.device == "cuda":
            torch.cuda.synchronize()
            self._model(self._batch)
            torch.cuda.synchronize()
        else:
            self._model(self._batch)

    def median_ms(self, min_seconds: float = 0.0) -> float:
        """One round: the median of its passes (call inside `ready`)."""
        return median_pass_ms(self.run, self.target.warmup, self.target.repeats, min_seconds)

    def fastest_ms(self, min_seconds: float = 0.0, rounds: int = 1) -> float:
        """The fastest of ``rounds`` rounds' medians."""
        with self.ready():
            return min(self.median_ms(min_seconds) for _ in range(rounds))


def median_ms(
    model: nn.Module, batch: torch.Tensor, target: LatencyTarget, min_seconds: float = 0.0, rounds: int = 1
) -> float:
    """Median milliseconds of ``model(batch)`` on ``target`` (eval mode, no grad), the fastest of ``rounds`` rounds of
    warm-up then timed passes, each round at least ``min_seconds`` long (in ONNX Runtime: the model's ONNX export in a
    session on the target's threads)."""
    return _Passes(model, batch, target).fastest_ms(min_seconds, rounds)


def measure_latency_ms(
    model: nn.Module, example_inputs: torch.Tensor, target: LatencyTarget = LatencyTarget()
) -> float:
    """Median milliseconds of a forward pass of a random ``target.batch_size`` batch shaped like ``example_inputs``: the
    fastest of `WHOLE_MODEL_ROUNDS` rounds of at least `WHOLE_MODEL_SECONDS`."""
    return median_ms(
        model, random_batch(example_inputs, target.batch_size), target, WHOLE_MODEL_SECONDS, WHOLE_MODEL_ROUNDS
    )


class LatencyMeter:
    """Measures models on a target against a reference model (a run's baseline): rounds of the reference's passes and
    the model's alternate, and a model's latency is the ratio of the two fastest rounds, times the reference's latency.

    On a shared machine, load comes and goes for seconds at a time (ONNX Runtime's pool threads on this project's
    2-core machine: resnet20 at 60% of its latency measured 0.16 ms for a while, then 0.25-0.41 ms, in fresh
    sessions of an idle process). Load that lasts slows both sides of a pair alike, so the ratio holds and a limit
    relative to the reference is met or missed by the ratio alone; load that comes and goes only ever slows a round
    down, so each side's fastest round is the one to compare.
    """

    def __init__(
        self,
        reference: nn.Module,
        example_inputs: torch.Tensor,
        target: LatencyTarget,
        reference_ms: float | None = None,
    ) -> None:
        self.target = target
        self._batch = random_batch(example_inputs, target.batch_size)
        self._reference = _Passes(reference, self._batch, target)
        if reference_ms is None:
            reference_ms = self._reference.fastest_ms(WHOLE_MODEL_SECONDS, WHOLE_MODEL_ROUNDS)
        self.reference_ms = reference_ms
        """The reference's latency: given (the figure a relative limit was computed from), else measured."""

    def ms(self, model: nn.Module, rounds: int = WHOLE_MODEL_ROUNDS) -> float:
        """``model``'s latency on the target, measured in ``rounds`` pairs of rounds beside the reference."""
        passes = _Passes(model, self._batch, self.target)
        reference, measured = math.inf, math.inf
        with self._reference.ready(), passes.ready():
            for _ in range(rounds):
                reference = min(reference, self._reference.median_ms(WHOLE_MODEL_SECONDS))
                measured = min(measured, passes.median_ms(WHOLE_MODEL_SECONDS))
        return measured / reference * self.reference_ms


@torch.no_grad()
def compare_latency_ms(
    models: Mapping[str, nn.Module],
    example_inputs: torch.Tensor,
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 15,
) -> dict[str, float]:
    """Median milliseconds per forward pass of a ``batch_size`` batch, for each model.

    The models take turns, pass by pass, so a noisy shared machine slows them alike and their
    ratio stays honest.
    """
    batch = random_batch(example_inputs, batch_size)
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(batch)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(batch)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}
