"""The run configuration: every section of a run, checked together."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from autocomp.app.config.runner import RunnerConfig
from autocomp.app.config.section import Section
from autocomp.app.config.sources import DataConfig, ModelConfig
from autocomp.app.config.space import ConstraintConfig, SpaceConfig
from autocomp.app.config.training import EvaluatorConfig, FinetuneConfig, SearchConfig
from autocomp.cost.latency import LatencySettings
from autocomp.runtime import DEVICE_PATTERN, PRECISIONS, Runtime
from autocomp.settings import OneOf, Positive
from autocomp.train import TrainSettings


class RunConfig(Section):
    """A whole run: the model, its data, the baseline's training, the budget, the space, the search, the scoring,
    the final fine-tune and where it all runs."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    baseline: TrainSettings = TrainSettings()
    constraints: list[ConstraintConfig] = Field(default_factory=lambda: [ConstraintConfig(max=0.5)], min_length=1)
    space: SpaceConfig = SpaceConfig()
    latency: LatencySettings = LatencySettings()
    search: SearchConfig = SearchConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    runner: RunnerConfig = RunnerConfig()
    threads: Positive | None = None
    device: str = "auto"
    """Where models train and are scored: auto (the GPU when there is one), cpu, cuda or cuda:N."""
    precision: Annotated[str, OneOf(PRECISIONS)] = "fp32"
    """Mixed precision of training and scoring on the device: autocast to bf16 or fp16 (with a gradient scaler)."""

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
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
        if self.runner.scheduler != "none" and self.evaluator.fidelity in ("bn", "halving"):
            reason = "needs intermediate scores, which fidelity bn has none of"
            if self.evaluator.fidelity == "halving":
                reason = "would stop candidates beside fidelity halving, which stops them itself"
            raise ValueError(
                f"runner.scheduler {self.runner.scheduler} {reason}; use evaluator.fidelity proxy or epochs, "
                "or scheduler none"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
