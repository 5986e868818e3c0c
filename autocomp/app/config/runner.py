"""Where candidates are evaluated: the ``runner`` section."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from autocomp.app.config.section import Section
from autocomp.settings import OneOf

RUNNERS = ("local", "ray")
SCHEDULERS = ("none", "asha")
"""none, or asha: Ray trials whose intermediate scores trail are stopped."""


class RunnerConfig(Section):
    """Where candidates are evaluated: ``local`` (this process) or ``ray`` (Ray Tune, on the cluster at ``address``,
    else a local one). With a ``storage`` URL (postgresql://..., sqlite:///..., or a journal file path) the study lives
    there and ``autocomp worker`` processes anywhere can share it."""

    kind: Annotated[str, OneOf(RUNNERS)] = "local"
    storage: str | None = None
    address: str | None = None
    concurrent: int | None = Field(default=None, ge=1)
    """Trials at once on Ray (None: as many as the cluster's CPUs allow)."""
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    max_failures: int = Field(default=2, ge=0)
    """Retries of a trial whose process died (Ray), or whose worker stopped beating (shared study)."""
    scheduler: Annotated[str, OneOf(SCHEDULERS)] = "none"
    """ASHA stops Ray trials whose intermediate scores trail (needs fidelity proxy or epochs)."""
    heartbeat: int = Field(default=10, ge=1)
    """Seconds between a worker's signs of life; a trial silent for 4 beats is failed and retried."""
