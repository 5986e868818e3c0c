"""The run configuration: a YAML file validated by pydantic, every error one sentence naming the key.

The library's settings dataclasses are sections of it as they are (``baseline``: `TrainSettings`, ``latency``:
`LatencySettings`, ``evaluator.proxy``: `ProxyTraining`) or extended with what a run adds (``finetune``, ``evaluator``,
the space's axes); their annotations hold the bounds and allowed values, checked by pydantic here with the key named.
"""

from autocomp.app.config.loading import RENAMED, build_config, load_config, one_sentence, parse_overrides, read_mapping
from autocomp.app.config.run import RunConfig
from autocomp.app.config.runner import RunnerConfig
from autocomp.app.config.section import Section
from autocomp.app.config.sources import DataConfig, ModelConfig
from autocomp.app.config.space import (
    BitsAxisConfig,
    ChoicesConfig,
    ConstraintConfig,
    KeepAxisConfig,
    RankAxisConfig,
    SpaceConfig,
)
from autocomp.app.config.training import EvaluatorConfig, FinetuneConfig, SearchConfig

__all__ = [
    "RENAMED",
    "BitsAxisConfig",
    "ChoicesConfig",
    "ConstraintConfig",
    "DataConfig",
    "EvaluatorConfig",
    "FinetuneConfig",
    "KeepAxisConfig",
    "ModelConfig",
    "RankAxisConfig",
    "RunConfig",
    "RunnerConfig",
    "SearchConfig",
    "Section",
    "SpaceConfig",
    "build_config",
    "load_config",
    "one_sentence",
    "parse_overrides",
    "read_mapping",
]
