"""Where and how tensors are computed: the device, the numeric precision and the data-loading processes.

One `Runtime` is made from the run config (``device``, ``precision``, ``data.workers``) and handed to every loop
that runs a model: baseline training, each candidate's BatchNorm recalibration, proxy fine-tune and held-out
score, the final fine-tune and the test accuracy. On the CPU in fp32 it changes nothing: the loops compute what
they computed before devices existed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from autocomp.errors import ConfigError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Each precision's autocast dtype (fp32: no autocast)."""


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` intra-op threads (None: as they are), then restore the process's count."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (auto | cpu | cuda | cuda:N) means here; `ConfigError` in one sentence when it is not
    available. ``auto`` is the GPU of the process's ``LOCAL_RANK`` (0 without one) when CUDA is available, else the CPU."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device {name!r} is not allowed; use auto, cpu, cuda or cuda:N.")
    available = torch.cuda.is_available()
    if name == "auto":
        if not available:
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    if not available:
        raise ConfigError(
            f"device {name!r} is not available on this machine (torch.cuda.is_available() is False); "
            "allowed here: cpu or auto."
        )
    device = torch.device(name)
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}."
        )
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Runtime:
    """A resolved device, a precision (fp32 | bf16 | fp16: autocast, with a gradient scaler for fp16) and the number
    of DataLoader worker processes that read data sets not held in memory."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    workers: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not allowed; use {', '.join(PRECISIONS)}.")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"data workers must be an integer >= 0, not {self.workers!r}.")

    @classmethod
    def create(cls, device: str = "auto", precision: str = "fp32", workers: int = 0) -> Runtime:
        """The runtime of a config's ``device`` name (see `resolve_device`), ``precision`` and ``workers``."""
        return cls(resolve_device(device), precision, workers)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        """Whether batches read from disk are put in page-locked memory (a faster, asynchronous copy to the GPU)."""
        return self.cuda

    @property
    def channels_last_scoring(self) -> bool:
        """Whether BatchNorm recalibration and held-out scores run in channels-last layout: on a GPU, where it pays;
        not on the CPU, where it would change the last digits of the scores the plain layout gives."""
        return self.cuda

    def describe(self) -> str:
        """``cpu, fp32`` or ``cuda:0 (NVIDIA H200), bf16``: for progress lines and reports."""
        name = f"{self.device} ({torch.cuda.get_device_name(self.device)})" if self.cuda else str(self.device)
        return f"{name}, {self.precision}"

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this runtime's device (asynchronous from pinned memory; the same tensor when it is there)."""
        return tensor.to(self.device, non_blocking=self.cuda)

    def autocast(self) -> AbstractContextManager[object]:
        """Mixed precision for forward passes: torch.autocast at this precision, nothing for fp32."""
        dtype = PRECISIONS[self.precision]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 training (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def fork_rng(self) -> AbstractContextManager[object]:
        """The caller's random state (CPU and this runtime's GPU) is restored after the block."""
        return torch.random.fork_rng(devices=[self.device.index or 0] if self.cuda else [])

    def seed(self, seed: int) -> None:
        """Random draws (dropout) start from ``seed`` on the CPU and on this runtime's GPU."""
        torch.default_generator.manual_seed(seed)
        if self.cuda:
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)

    def synchronize(self) -> None:
        """Wait for the device's queued work (a timing then measures the work, not its launch)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


CPU = Runtime()
"""The CPU in fp32, reading data in this process: what every loop used before devices existed."""


@dataclass
class Throughput:
    """Images through a loop and the seconds they took: images per second for progress lines and reports."""

    images: int = 0
    seconds: float = 0.0

    def add(self, images: int, seconds: float) -> None:
        self.images += images
        self.seconds += seconds

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0
