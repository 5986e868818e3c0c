"""The run configuration: a YAML file validated by pydantic, every error one sentence naming the key."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autocomp.errors import ConfigError
from autocomp.imports import IMPORT_PATH

if TYPE_CHECKING:
    from torch import nn

    from autocomp.data import DataBundle
    from autocomp.runtime import Runtime


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """A zoo model (``name``, default resnet20) or the user's own (``factory``: ``package.module:function``).

    With a ``checkpoint`` (a state dict file) the baseline starts from those weights and is not trained.
    """

    name: str | None = None
    factory: str | None = None
    checkpoint: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _zoo_or_factory(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        if values.get("name") is not None and values.get("factory") is not None:
            raise ValueError("give model.name (a zoo model) or model.factory (your own model), not both")
        if values.get("factory") is None and values.get("name") is None:
            return {**values, "name": "resnet20"}
        return values

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str | None) -> str | None:
        from autocomp import models

        if name is not None and name not in models.names():
            raise ValueError(
                f"unknown model {name!r}; allowed: {', '.join(models.names())}, or your own as "
                "model.factory: package.module:function"
            )
        return name

    @field_validator("factory")
    @classmethod
    def _import_path(cls, factory: str | None) -> str | None:
        if factory is not None and not IMPORT_PATH.fullmatch(factory):
            raise ValueError("it must be an import path of the form package.module:function")
        return factory

    @field_validator("kwargs")
    @classmethod
    def _no_data_arguments(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        taken = sorted({"num_classes", "in_channels"} & set(kwargs))
        if taken:
            raise ValueError(f"{taken[0]} comes from the data set and cannot be set here")
        return kwargs

    @property
    def label(self) -> str:
        """The zoo name, or the factory's import path."""
        return self.name or str(self.factory)

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        """A fresh model as this section describes it, with its initial weights (the checkpoint is not loaded)."""
        from autocomp import models

        if self.factory is not None:
            from autocomp.models.user import build_user_model

            return build_user_model(self.factory, num_classes, in_channels, **self.kwargs)
        return models.create(str(self.name), num_classes=num_classes, in_channels=in_channels, **self.kwargs)


class DataConfig(_Section):
    """A built-in data set, an ``image_folder`` (``dir`` holding train/ and test/), or ``factory``: the data sets a
    user's function returns (``factory: package.module:function``, called with ``options``)."""

    name: Literal["fashion_mnist", "digits", "synthetic", "image_folder", "factory"] = "fashion_mnist"
    dir: str | None = None
    factory: str | None = None
    val_size: int | float = Field(default=5000, gt=0)
    seed: int = 0
    workers: int = Field(default=0, ge=0)
    """DataLoader processes reading a data set that is not in memory (a large image folder, a user's data set); 0:
    this process. Persistent across passes; pinned memory when the device is a GPU."""
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _factory_with_its_name(self) -> DataConfig:
        if (self.name == "factory") != (self.factory is not None):
            raise ValueError("data.factory (package.module:function) goes with data.name factory, and only with it")
        if self.factory is not None and not IMPORT_PATH.fullmatch(self.factory):
            raise ValueError(
                f"data.factory {self.factory!r} must be an import path of the form package.module:function"
            )
        return self

    @property
    def label(self) -> str:
        """The data set's name, or the data factory's import path."""
        return self.factory or self.name

    def load(self) -> DataBundle:
        """The data set this section names, with its held-out split."""
        from autocomp.data import load_dataset

        return load_dataset(
            self.name, data_dir=self.dir, val_size=self.val_size, seed=self.seed, factory=self.factory, **self.options
        )

    def fingerprint(self) -> str:
        """What defines the data beyond this section: an image folder's files (names, sizes, times) or the data
        factory's source file ("" for the built-in sets)."""
        if self.factory is not None:
            from autocomp.imports import source_digest

            return source_digest(self.factory)
        if self.name == "image_folder" and self.dir is not None:
            from autocomp.data.image_folder import folder_fingerprint

            return folder_fingerprint(self.dir)
        return ""


class TrainConfig(_Section):
    """SGD with momentum and a one-cycle learning-rate schedule."""

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    seed: int = 0
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many steps (the schedule shortened to them) instead of ``epochs`` full passes."""


class FinetuneConfig(TrainConfig):
    """Final fine-tune of the best candidate, distilled from the baseline.

    ``finalists`` > 1 fine-tunes the search's best few distinct candidates the same way and keeps the one most accurate
    on the held-out data afterwards (each finalist costs one more fine-tune)."""

    epochs: int = Field(default=2, ge=1)
    lr: float = Field(default=0.02, gt=0)
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    finalists: int = Field(default=1, ge=1)


class ConstraintConfig(_Section):
    """``max`` is a fraction of the baseline in (0, 1] when ``relative``, else an absolute value (ms for latency_ms)."""

    metric: Literal["macs", "flops", "params", "size_bytes", "bops", "latency_ms"] = "macs"
    max: float = Field(gt=0)
    relative: bool = True

    @model_validator(mode="after")
    def _ratio_in_range(self) -> ConstraintConfig:
        if self.relative and not 0 < self.max <= 1:
            raise ValueError(
                f"relative constraint max={self.max} is outside (0, 1]; set relative: false for an absolute limit"
            )
        return self


Grouping = Literal["layer", "group", "stage", "global"]


class KeepAxisConfig(_Section):
    """Channels kept per coupled group (``layer`` and ``group`` alike), per stage or globally."""

    low: float = Field(default=0.2, gt=0, le=1)
    high: float = Field(default=1.0, gt=0, le=1)
    grouping: Grouping = "group"


class BitsAxisConfig(_Section):
    """Bits in [low, high]; frozen layers keep ``frozen`` bits (null: floating point)."""

    low: int = Field(default=2, ge=2, le=8)
    high: int = Field(default=8, ge=2, le=8)
    grouping: Grouping = "layer"
    frozen: int | None = Field(default=8, ge=2, le=8)


class RankAxisConfig(_Section):
    """The fraction of each layer's full rank kept by an SVD factorization (1.0: left whole)."""

    low: float = Field(default=0.25, gt=0, le=1)
    high: float = Field(default=1.0, gt=0, le=1)
    grouping: Grouping = "layer"
    scheme: Literal["pair", "separable"] = "pair"


class ChoicesConfig(_Section):
    """A model-wide multiplier chosen from ``choices`` in (0, 1]."""

    choices: list[float] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _fractions(cls, choices: list[float]) -> list[float]:
        bad = [c for c in choices if not 0 < c <= 1]
        if bad:
            raise ValueError(f"choice {bad[0]} is outside (0, 1]")
        return choices


class SpaceConfig(_Section):
    """What the search decides: each axis set (a mapping) is searched, each null is left alone.

    ``frozen``: layers no axis touches (names, or first/last). ``projection``: how proposals
    reach the budget: auto, scale, bits (lower bits first) or wall (AMC's sequential wall).
    """

    keep: KeepAxisConfig | None = KeepAxisConfig()
    weight_bits: BitsAxisConfig | None = None
    act_bits: BitsAxisConfig | None = None
    rank: RankAxisConfig | None = None
    width: ChoicesConfig | None = None
    resolution: ChoicesConfig | None = None
    frozen: list[str] = Field(default_factory=lambda: ["first", "last"])
    channel_multiple: int = Field(default=1, ge=1)
    projection: Literal["auto", "scale", "bits", "wall"] = "auto"

    @model_validator(mode="after")
    def _something_to_decide(self) -> SpaceConfig:
        axes = (self.keep, self.weight_bits, self.act_bits, self.rank, self.width, self.resolution)
        if all(axis is None for axis in axes):
            raise ValueError(
                "every axis is null, so there is nothing to search; set at least one of keep, weight_bits, "
                "act_bits, rank, width, resolution"
            )
        if self.act_bits is not None and self.weight_bits is None:
            raise ValueError("act_bits needs weight_bits too: a layer is quantized weights first")
        for name, axis in (
            ("keep", self.keep),
            ("weight_bits", self.weight_bits),
            ("act_bits", self.act_bits),
            ("rank", self.rank),
        ):
            if axis is not None and axis.low > axis.high:
                raise ValueError(f"{name} range [{axis.low}, {axis.high}] is empty; need low <= high")
        return self


class LatencyConfig(_Section):
    """The target latency is measured and predicted on: device, threads (null: torch's), batch size."""

    device: Literal["cpu", "cuda"] = "cpu"
    threads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1, ge=1)
    warmup: int = Field(default=5, ge=0)
    repeats: int = Field(default=20, ge=1)


class SearchConfig(_Section):
    """Who searches: ``agent`` (a name from `agents.agent_names()`) with its own ``options`` (the agent's Options)."""

    agent: str = "tpe"
    options: dict[str, Any] = Field(default_factory=dict)
    trials: int = Field(default=40, ge=1)
    seed: int = 0
    criterion: str = "l1"
    reconstruct: bool = False


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
    cache_mb: float = Field(default=1024, ge=0)
    """Megabytes of fixed batches (proxy batches with the teacher's outputs, then BatchNorm's) kept on the device."""

    @model_validator(mode="after")
    def _pruner_needs_training(self) -> EvaluatorConfig:
        if self.pruner != "none" and self.fidelity == "bn":
            raise ValueError(
                f"pruner {self.pruner} needs intermediate scores, which fidelity bn has none of; "
                "use fidelity proxy or epochs, or pruner none"
            )
        return self


class RunnerConfig(_Section):
    """Where candidates are evaluated: ``local`` (this process) or ``ray`` (Ray Tune, on the cluster at ``address``,
    else a local one). With a ``storage`` URL (postgresql://..., sqlite:///..., or a journal file path) the study lives
    there and ``autocomp worker`` processes anywhere can share it."""

    kind: Literal["local", "ray"] = "local"
    storage: str | None = None
    address: str | None = None
    concurrent: int | None = Field(default=None, ge=1)
    """Trials at once on Ray (None: as many as the cluster's CPUs allow)."""
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    max_failures: int = Field(default=2, ge=0)
    """Retries of a trial whose process died (Ray), or whose worker stopped beating (shared study)."""
    scheduler: Literal["none", "asha"] = "none"
    """ASHA stops Ray trials whose intermediate scores trail (needs fidelity proxy or epochs)."""
    heartbeat: int = Field(default=10, ge=1)
    """Seconds between a worker's signs of life; a trial silent for 4 beats is failed and retried."""


class RunConfig(_Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    baseline: TrainConfig = TrainConfig()
    constraints: list[ConstraintConfig] = Field(default_factory=lambda: [ConstraintConfig(max=0.5)], min_length=1)
    space: SpaceConfig = SpaceConfig()
    latency: LatencyConfig = LatencyConfig()
    search: SearchConfig = SearchConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    runner: RunnerConfig = RunnerConfig()
    threads: int | None = Field(default=None, ge=1)
    device: str = "auto"
    """Where models train and are scored: auto (the GPU when there is one), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision of training and scoring on the device: autocast to bf16 or fp16 (with a gradient scaler)."""

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        from autocomp.runtime import DEVICE_PATTERN

        if not DEVICE_PATTERN.fullmatch(device):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return device

    @model_validator(mode="after")
    def _ray_assigns_gpus(self) -> RunConfig:
        if self.runner.kind == "ray" and self.device.startswith("cuda:"):
            raise ValueError(
                f"device {self.device} names one GPU, but Ray assigns each trial its GPU share; use device "
                "cuda or auto with runner.gpus_per_trial"
            )
        if self.runner.kind == "ray" and self.device == "cuda" and self.runner.gpus_per_trial == 0:
            raise ValueError("device cuda on Ray needs runner.gpus_per_trial > 0 (a fraction lets trials share a GPU)")
        return self

    def runtime(self) -> Runtime:
        """The device (resolved here: `ConfigError` when it is not available), precision and data workers."""
        from autocomp.runtime import Runtime

        return Runtime.create(self.device, self.precision, self.data.workers)

    @model_validator(mode="after")
    def _one_limit_per_metric(self) -> RunConfig:
        metrics = [c.metric for c in self.constraints]
        repeated = sorted({m for m in metrics if metrics.count(m) > 1})
        if repeated:
            raise ValueError(f"metric {repeated[0]} has more than one limit; give each metric one entry")
        return self

    @model_validator(mode="after")
    def _scheduler_needs_scores(self) -> RunConfig:
        if self.runner.scheduler != "none" and self.evaluator.fidelity == "bn":
            raise ValueError(
                f"runner.scheduler {self.runner.scheduler} needs intermediate scores, which fidelity bn has "
                "none of; use evaluator.fidelity proxy or epochs, or scheduler none"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


RENAMED = {
    "constraint": "constraints, a list",
    "search.min_keep": "space.keep.low",
    "search.channel_multiple": "space.channel_multiple",
}
"""Keys of earlier versions and where they went."""


def _one_sentence(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        renamed = f" (renamed to {RENAMED[key]})" if key in RENAMED else ""
        return f"{source}: unknown config key {key!r}{renamed}."
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "model_type":
        return f"{source}: config key {key!r} must be a mapping, got {first['input']!r}."
    if not first["loc"]:
        return f"{source}: {message}."
    if isinstance(first["input"], Mapping):
        return f"{source}: config section {key!r} is not allowed: {message}."
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


def _merge(base: dict[str, Any], extra: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """``extra`` laid over ``base``; a list entry is addressed by its index (``constraints.0.max=0.3``)."""
    merged = dict(base)
    for key, value in extra.items():
        where = f"{path}{key}"
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = _merge(dict(current), value, f"{where}.")
        elif (
            isinstance(value, Mapping) and isinstance(current, list) and value and all(str(k).isdigit() for k in value)
        ):
            items = list(current)
            for index, entry in value.items():
                if int(index) >= len(items):
                    raise ConfigError(
                        f"override {where}.{index} names entry {index} of {where}, which has "
                        f"{len(items)} entr{'y' if len(items) == 1 else 'ies'} (indexes from 0)."
                    )
                item = items[int(index)]
                items[int(index)] = (
                    _merge(dict(item), entry, f"{where}.{index}.")
                    if isinstance(item, Mapping) and isinstance(entry, Mapping)
                    else entry
                )
            merged[key] = items
        else:
            merged[key] = value
    return merged


def build_config(
    data: Mapping[str, Any] | None = None, overrides: Sequence[str] = (), source: str = "config"
) -> RunConfig:
    """Validate a mapping (plus ``key=value`` overrides, laid over the defaults) into a `RunConfig`."""
    # Defaults, so that an override can address an entry of a default list; not the model's, whose default name would
    # clash with a user's model.factory.
    defaults = RunConfig().model_dump(mode="json", exclude={"model"})
    try:
        return RunConfig.model_validate(_merge(_merge(defaults, dict(data or {})), parse_overrides(list(overrides))))
    except ValidationError as err:
        raise ConfigError(_one_sentence(err, source)) from None


def read_mapping(path: Path, what: str, holds: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``yaml.safe_load``; empty: {}); `ConfigError` naming the file as ``what``
    for a missing file, invalid YAML or anything but a mapping (of ``holds``)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML ({str(err).splitlines()[0]}).") from None
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{what} {path} must hold a mapping of {holds}, not a {type(data).__name__}.")
    return dict(data or {})


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config file with ``yaml.safe_load`` and validate it."""
    path = Path(path)
    return build_config(read_mapping(path, "config file", "sections"), overrides, source=f"config file {path}")
