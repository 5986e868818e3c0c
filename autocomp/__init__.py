"""autocomp: AutoML compression search for PyTorch.

model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
layers = autocomp.prunable_layers(model, x)
small = autocomp.compress(model, autocomp.Policy.uniform(layers, keep=0.5), x)
autocomp.measure(small, x).macs
quantized = autocomp.compress(model, autocomp.Policy.uniform(autocomp.model_layers(model, x), weight_bits=4, act_bits=4), x)
autocomp.measure(quantized, x).bops
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autocomp import models as zoo
from autocomp.compress import compress, model_layers, prunable_layers, to_int8
from autocomp.cost import Cost, measure
from autocomp.errors import AutocompError, ConfigError, DataError, InfeasibleError
from autocomp.io import load, save
from autocomp.policy import LayerDecision, Policy

if TYPE_CHECKING:
    from autocomp.app.config import RunConfig
    from autocomp.app.search_loop import SearchResult

__version__ = "0.1.0"


def search(
    config: RunConfig | str | Path, out: str | Path | None = None, overrides: Sequence[str] = ()
) -> SearchResult:
    """Run the constrained search of ``config`` (a `RunConfig` or a YAML path), as ``autocomp search`` does."""
    from autocomp.app.config import RunConfig, load_config
    from autocomp.app.search_loop import search as run_search

    if not isinstance(config, RunConfig):
        config = load_config(config, list(overrides))
    return run_search(config, out if out is not None else Path("runs") / "run")


__all__ = [
    "AutocompError",
    "ConfigError",
    "Cost",
    "DataError",
    "InfeasibleError",
    "LayerDecision",
    "Policy",
    "compress",
    "load",
    "measure",
    "model_layers",
    "prunable_layers",
    "save",
    "search",
    "to_int8",
    "zoo",
]
