"""Where a candidate's seconds go: forward/backward passes against everything else (the evaluator's overhead)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Seconds in forward/backward passes (``compute``) out of ``total``; the rest is overhead."""

    total: float
    compute: float

    @property
    def overhead(self) -> float:
        """Seconds outside forward/backward passes: compression, copies, data, cost measurement."""
        return max(0.0, self.total - self.compute)


class Stopwatch:
    """Counts the seconds spent inside `computing` blocks since it was started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.compute = 0.0

    @contextmanager
    def computing(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.compute += time.perf_counter() - start

    def timing(self) -> Timing:
        return Timing(total=time.perf_counter() - self.started, compute=self.compute)
