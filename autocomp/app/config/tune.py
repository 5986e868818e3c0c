"""A tune file: the run config every trial starts from, the keys tuned and their ranges (`autocomp tune`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import Field, ValidationError, model_validator

from autocomp.app.config.loading import one_sentence, read_mapping
from autocomp.app.config.section import Section
from autocomp.errors import ConfigError


class ParamRange(Section):
    """One tuned key: ``choices``, or a ``float``/``int`` range from ``low`` to ``high`` (``log``: on a log scale)."""

    type: Literal["float", "int"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[str | int | float | bool | None] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> ParamRange:
        if self.choices is not None:
            given = [key for key in ("low", "high", "step") if getattr(self, key) is not None]
            given += ["log"] * self.log + ["type"] * (self.type != "float")
            if given:
                raise ValueError(
                    f"give either choices or a range (low, high, log, step, type), not choices with {given[0]}"
                )
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range), or choices")
        if not self.low < self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError(f"type int needs whole numbers, got low {self.low}, high {self.high}, step {self.step}")
        return self

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution the sampler draws this key from."""
        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        low, high = self._range()
        if self.type == "int":
            return IntDistribution(int(low), int(high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(low, high, log=self.log, step=self.step)

    def extremes(self) -> list[Any]:
        """Every choice, or both ends of the range: what the run config must accept."""
        if self.choices is not None:
            return list(self.choices)
        low, high = self._range()
        return [int(low), int(high)] if self.type == "int" else [low, high]

    def _range(self) -> tuple[float, float]:
        """``low`` and ``high``, which a key without choices has (`_one_kind`)."""
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range), or choices")
        return self.low, self.high


class TuneConfig(Section):
    """What `autocomp tune` tunes: ``params`` of the run ``config`` (keys as for ``--set``), scored by ``target``."""

    config: str
    """The run config every trial starts from (a path relative to the tune file)."""
    target: Literal["search", "finetune"] = "search"
    """search: each trial is a whole search; finetune: each trial fine-tunes ``policy`` (finetune.* keys only)."""
    policy: str | None = None
    """target finetune: the policy.json to fine-tune (or a run folder holding one), relative to the tune file."""
    params: dict[str, ParamRange] = Field(min_length=1)
    set: list[str] = Field(default_factory=list)
    """Overrides every trial shares, e.g. search.trials=8 for small searches."""
    trials: int = Field(default=20, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    startup: int = Field(default=5, ge=1)
    """Random trials before TPE models the results."""
    seed: int = 0
    heartbeat: int = Field(default=30, ge=1)
    """Seconds between a running trial's signs of life in a shared storage; silent for 4 beats, it is retried."""
    max_failures: int = Field(default=1, ge=0)
    """Retries of a trial whose process died."""

    @model_validator(mode="after")
    def _target_fits(self) -> TuneConfig:
        if self.target == "finetune":
            if self.policy is None:
                raise ValueError("target finetune needs policy: the policy.json (or run folder) to fine-tune")
            outside = [key for key in self.params if not key.startswith("finetune.")]
            if outside:
                raise ValueError(
                    f"target finetune tunes finetune.* keys only, not {outside[0]!r}; use target search for the others"
                )
        elif self.policy is not None:
            raise ValueError("policy is for target finetune; target search searches its own")
        return self


def load_tune_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TuneConfig:
    """Read a tune file (``yaml.safe_load``), its paths made absolute, ``overrides`` (``trials=40``) laid over it."""
    path = Path(path)
    data = read_mapping(path, "tune file", "keys (config, params, ...)")
    for pair in overrides:
        key, sep, raw = pair.partition("=")
        if not sep or key not in TuneConfig.model_fields:
            raise ConfigError(
                f"tune override {pair!r} is not key=value with a key of {', '.join(TuneConfig.model_fields)}."
            )
        data[key] = yaml.safe_load(raw)
    for key in ("config", "policy"):
        if isinstance(data.get(key), str):
            data[key] = str((path.parent / data[key]).resolve())
    try:
        return TuneConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(one_sentence(err, f"tune file {path}")) from None
