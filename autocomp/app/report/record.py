"""The report of a finished run, typed: what report.json holds, written by `save_report` and read by `load_report`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from autocomp.errors import ConfigError
from autocomp.files import write_text

REPORT_VERSION = 3
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class ConstraintRecord:
    """One limit of the budget and what the baseline and the chosen model measure against it."""

    metric: str
    limit: float
    max: float
    """The limit as the config gave it: a fraction of the baseline when ``relative``, else the limit itself."""
    relative: bool
    best: float
    baseline: float

    @property
    def used(self) -> float:
        """The fraction of the limit the chosen model uses."""
        return self.best / self.limit


@dataclass(frozen=True)
class SpaceRecord:
    """The search space: how many decisions, on which axes, and how proposals were projected into the budget."""

    decisions: int
    projection: str
    axes: tuple[str, ...]


@dataclass(frozen=True)
class FrontPoint:
    """A candidate of the Pareto front: held-out accuracy against measured budget use."""

    trial: int
    val_accuracy: float
    usage: float


@dataclass(frozen=True)
class HistoryPoint:
    """A completed trial, as the figures draw it."""

    trial: int
    val_accuracy: float
    feasible: bool
    usage: float


@dataclass(frozen=True)
class EvaluatorRecord:
    """How candidates were scored, and how long a score took."""

    fidelity: str
    describe: str
    seconds_per_evaluation: float
    rungs: tuple[tuple[int, int], ...] = ()
    """At fidelity halving: each rung's fine-tune steps and how many candidates were scored there."""


@dataclass(frozen=True)
class RuntimeRecord:
    """Where the run computed and how fast (None where nothing of the kind ran in this process)."""

    device: str
    describe: str
    precision: str
    train_images_per_second: float | None
    proxy_images_per_second: float | None
    score_images_per_second: float | None


@dataclass(frozen=True)
class LatencySettings:
    """What the report's latencies were timed with."""

    batch_size: int
    threads: int
    device: str


@dataclass(frozen=True)
class ModelRecord:
    """A model's accuracies and measured cost (its latency at the report's `LatencySettings`)."""

    val_accuracy: float
    test_accuracy: float
    macs: int
    params: int
    size_bytes: int
    size_bits: int
    bops: int
    latency_ms: float


@dataclass(frozen=True)
class BestRecord(ModelRecord):
    """The chosen model: its trial, its held-out accuracy after the fine-tune (what `autocomp tune` compares), the
    channels each prunable layer keeps ([kept, original]) and each quantized layer's [weight, activation] bits."""

    trial: int
    finetuned_val_accuracy: float
    channels: dict[str, tuple[int, int]]
    bits: dict[str, tuple[int | None, int | None]]


@dataclass(frozen=True)
class Finalist:
    """One of the search's best candidates after the final fine-tune."""

    trial: int
    val_accuracy: float
    """The search's score."""
    finetuned_val_accuracy: float
    """Held-out accuracy after the fine-tune: what chooses among the finalists."""


@dataclass(frozen=True)
class SensitivityProfile:
    """A sensitivity profile (`app.sensitivity`): the largest policy's held-out score and, per decision, (probed value,
    score with only it there) pairs, at the points `app.sensitivity.POINTS` of its range."""

    reference: float
    probes: dict[str, tuple[tuple[float, float], ...]]

    def drops(self) -> dict[str, tuple[float, ...]]:
        """Each decision's score drop at each probed point."""
        return {name: tuple(self.reference - score for _, score in pairs) for name, pairs in self.probes.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "probes": {n: [list(p) for p in pairs] for n, pairs in self.probes.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> SensitivityProfile:
        probes = {name: tuple((float(v), float(s)) for v, s in pairs) for name, pairs in data["probes"].items()}
        return cls(float(data["reference"]), probes)


@dataclass(frozen=True)
class ReferenceRecord:
    """The reference candidate, uniform pruning to the same budget, scored as every candidate was."""

    trial: int
    val_accuracy: float
    """Its search score (held-out), beside the best candidate's."""
    macs: int


@dataclass(frozen=True)
class Report:
    """Everything a finished run records: the run, its trials, the baseline against the chosen model, the config."""

    model: str
    data: str
    agent: str
    constraints: tuple[ConstraintRecord, ...]
    space: SpaceRecord
    trials: int
    probe_trials: int
    pareto_front: tuple[FrontPoint, ...]
    failed_trials: int
    pruned_trials: int
    cached_trials: int
    evaluator: EvaluatorRecord
    wall_seconds: float
    runtime: RuntimeRecord
    latency: LatencySettings
    baseline: ModelRecord
    history: tuple[HistoryPoint, ...]
    best: BestRecord
    finalists: tuple[Finalist, ...]
    config: dict[str, Any]
    """The run config, as `RunConfig.to_dict` writes it."""
    reference: ReferenceRecord | None = None
    """None when the run scored no reference (``search.reference: false``, the uniform agent, or it failed)."""
    sensitivity: SensitivityProfile | None = None
    """The profile, when the search measured one (``search.warm_start: sensitivity``)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the version, then every field."""
        return {"version": REPORT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: object, source: str = "report") -> Report:
        """The report `to_dict` wrote; `ConfigError` in one sentence naming ``source`` for another version or a
        missing or mistyped field."""
        if not isinstance(data, Mapping) or "version" not in data:
            raise ConfigError(f'{source} is not an autocomp report (it has no "version").')
        version = data["version"]
        if isinstance(version, bool) or version != REPORT_VERSION:
            raise ConfigError(
                f"{source} has report version {version!r}; this autocomp reads version {REPORT_VERSION} (run the "
                "search again to write it)."
            )
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(
                f"{source} is not a report this autocomp wrote: {where}: {first['msg'][0].lower()}{first['msg'][1:]} "
                "(run the search again to write it)."
            ) from None


_ADAPTER = TypeAdapter(Report)


def save_report(run_dir: Path, report: Report) -> None:
    """Write ``report`` as ``run_dir/report.json`` (whole or not at all)."""
    write_text(run_dir / REPORT_FILE, json.dumps(report.to_dict(), indent=2) + "\n")


def load_report(run_dir: Path) -> Report:
    """The report in ``run_dir/report.json``; `ConfigError` in one sentence naming the file when it is missing, not
    JSON, of another version or malformed."""
    path = run_dir / REPORT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{run_dir} holds no {REPORT_FILE}; give the folder of a finished `autocomp search`."
        ) from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"report file {path} is not valid JSON ({err.msg} at line {err.lineno}).") from None
    return Report.from_dict(data, source=f"report file {path}")
