"""Where autocomp keeps what it computes once (trained baselines, latency tables)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$AUTOCOMP_CACHE``, else ``~/.cache/autocomp``."""
    return Path(os.environ.get("AUTOCOMP_CACHE") or Path.home() / ".cache" / "autocomp")
