"""A lock file shared by processes on one machine (baseline cache, tune folders)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autocomp.errors import ConfigError


@contextmanager
def file_lock(path: Path, busy: str | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` (its folder created) while the block runs. Without ``busy``, wait for a process
    holding it; with ``busy``, do not wait: `ConfigError` with that sentence instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if busy is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
