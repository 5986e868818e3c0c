"""Measured latency: median wall time of forward passes after warm-up, on a described target.

`LatencyTarget` says where and how a model is timed (runtime, device, threads, batch size, warm-up,
repeats); `measure_latency_ms` times one model there, and the per-layer lookup table
(`latency_table.LatencyTable`) times single layers with the same code. The runtime is eager PyTorch
(``torch``) or ONNX Runtime's CPU execution provider (``onnxruntime``): the model exported to ONNX
(`autocomp.deploy.to_onnx`, quantized layers as QDQ) and timed in a session on the target's threads,
so a latency budget is the latency of the runtime the model is deployed with.
"""

from __future__ import annotations

import copy
import hashlib
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from torch import nn

from autocomp.deploy import ort_median_ms, session, to_onnx
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


def _nothing() -> None:
    """No synchronization is needed on the CPU."""


@torch.no_grad()
def _time_forward(model: nn.Module, batch: torch.Tensor, synchronize: Callable[[], None] = _nothing) -> float:
    """Seconds of one ``model(batch)``, the device synchronized before and after."""
    synchronize()
    start = time.perf_counter()
    model(batch)
    synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def median_ms(model: nn.Module, batch: torch.Tensor, target: LatencyTarget) -> float:
    """Median milliseconds of ``model(batch)`` on ``target``: eval mode, no grad, after warm-up passes (in ONNX
    Runtime: the model's ONNX export in a session on the target's threads)."""
    if target.runtime == "onnxruntime":
        with evaluating(model):
            model_bytes = to_onnx(model, batch[:1])
        return ort_median_ms(session(model_bytes, target.used_threads), batch, target.warmup, target.repeats)
    cuda = target.device == "cuda"
    if cuda:
        model, batch = copy.deepcopy(model).to("cuda"), batch.to("cuda")
    synchronize = torch.cuda.synchronize if cuda else _nothing
    with torch_threads(target.used_threads), evaluating(model):
        for _ in range(target.warmup):
            model(batch)
        times = [_time_forward(model, batch, synchronize) for _ in range(target.repeats)]
    return 1000 * statistics.median(times)


def measure_latency_ms(
    model: nn.Module, example_inputs: torch.Tensor, target: LatencyTarget = LatencyTarget()
) -> float:
    """Median milliseconds of a forward pass of a random ``target.batch_size`` batch shaped like ``example_inputs``."""
    return median_ms(model, random_batch(example_inputs, target.batch_size), target)


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
            times[name].append(_time_forward(model, batch))
    return {name: 1000 * statistics.median(values) for name, values in times.items()}
