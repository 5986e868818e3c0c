"""The run configuration: a YAML file validated by pydantic, every error one sentence naming the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autocomp.errors import ConfigError

if TYPE_CHECKING:
    from autocomp.data import DataBundle


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    name: str = "resnet20"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from autocomp import models

        if name not in models.names():
            raise ValueError(f"unknown model {name!r}; allowed: {', '.join(models.names())}")
        return name

    @field_validator("kwargs")
    @classmethod
    def _no_data_arguments(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        taken = sorted({"num_classes", "in_channels"} & set(kwargs))
        if taken:
            raise ValueError(f"{taken[0]} comes from the data set and cannot be set here")
        return kwargs


class DataConfig(_Section):
    name: Literal["fashion_mnist", "digits", "synthetic"] = "fashion_mnist"
    dir: str | None = None
    val_size: int | float = Field(default=5000, gt=0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)

    def load(self) -> DataBundle:
        """The data set this section names, with its held-out split."""
        from autocomp.data import load_dataset

        return load_dataset(self.name, data_dir=self.dir, val_size=self.val_size, seed=self.seed, **self.options)


class TrainConfig(_Section):
    """SGD with momentum and a one-cycle learning-rate schedule."""

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    seed: int = 0


class FinetuneConfig(TrainConfig):
    """Final fine-tune of the best candidate, distilled from the baseline."""

    epochs: int = Field(default=2, ge=1)
    lr: float = Field(default=0.02, gt=0)
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)


class ConstraintConfig(_Section):
    """``max`` is a fraction of the baseline in (0, 1] when ``relative``, else an absolute count."""

    metric: Literal["macs", "flops", "bops"] = "macs"
    max: float = Field(gt=0)
    relative: bool = True

    @model_validator(mode="after")
    def _ratio_in_range(self) -> ConstraintConfig:
        if self.relative and not 0 < self.max <= 1:
            raise ValueError(f"relative constraint max={self.max} is outside (0, 1]; set relative: false for an absolute limit")
        return self


class SearchConfig(_Section):
    agent: str = "tpe"
    trials: int = Field(default=40, ge=1)
    seed: int = 0
    min_keep: float = Field(default=0.2, gt=0, le=1)
    criterion: str = "l1"
    reconstruct: bool = False
    channel_multiple: int = Field(default=1, ge=1)


class ProxyConfig(_Section):
    """The candidates' fine-tune at the ``proxy`` and ``epochs`` levels, distilled from the baseline."""

    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    attention: float = Field(default=0.0, ge=0)


class EvaluatorConfig(_Section):
    """How candidates are scored: ``fidelity`` bn (BatchNorm recalibration on ``bn_batches`` training
    batches), proxy (then ``steps`` fine-tune steps) or epochs (then ``epochs`` passes); accuracy on
    ``val_examples`` held-out examples. ``pruner: median`` stops a candidate whose intermediate score
    (every ``report_every`` steps) falls below the median of earlier candidates at that step."""

    fidelity: Literal["bn", "proxy", "epochs"] = "proxy"
    steps: int = Field(default=50, ge=1)
    epochs: int = Field(default=1, ge=1)
    proxy: ProxyConfig = ProxyConfig()
    bn_batches: int = Field(default=20, ge=1)
    batch_size: int = Field(default=256, ge=1)
    val_examples: int | None = Field(default=2500, ge=1)
    pruner: Literal["none", "median"] = "none"
    report_every: int = Field(default=10, ge=1)
    report_examples: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _pruner_needs_training(self) -> EvaluatorConfig:
        if self.pruner != "none" and self.fidelity == "bn":
            raise ValueError(f"pruner {self.pruner} needs intermediate scores, which fidelity bn has none of; "
                             "use fidelity proxy or epochs, or pruner none")
        return self


class RunConfig(_Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    baseline: TrainConfig = TrainConfig()
    constraint: ConstraintConfig = ConstraintConfig(max=0.5)
    search: SearchConfig = SearchConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    threads: int | None = Field(default=None, ge=1)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _one_sentence(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key {key!r}."
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "model_type":
        return f"{source}: config key {key!r} must be a mapping, got {first['input']!r}."
    return f"{source}: config key {key!r} = {first['input']!r} is not allowed: {message}."


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["search.trials=5", ...]`` into a nested mapping; values are read as YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not of the form key=value (for example search.trials=5).")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} conflicts with an earlier override of {part!r}.")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def build_config(data: Mapping[str, Any] | None = None, overrides: list[str] = (), source: str = "config") -> RunConfig:
    """Validate a mapping (plus ``key=value`` overrides) into a `RunConfig`."""
    merged = _merge(dict(data or {}), parse_overrides(list(overrides)))
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_one_sentence(err, source)) from None


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config file with ``yaml.safe_load`` and validate it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]}).") from None
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not a {type(data).__name__}.")
    return build_config(data, overrides, source=f"config file {path}")
