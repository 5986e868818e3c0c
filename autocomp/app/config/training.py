"""How models are trained and candidates scored and searched: the ``finetune``, ``evaluator`` and ``search`` sections.

The ``baseline`` section is the library's `TrainSettings` and ``evaluator.proxy`` its `ProxyTraining`; the sections
here extend the library's settings dataclasses with what only a run needs, so each field and default is defined once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any

from annotated_types import Ge
from pydantic import Field, with_config

from autocomp.app.config.section import STRICT, Section
from autocomp.evaluate import EvaluatorSettings, Scoring
from autocomp.evaluate.fidelity import Fidelity, FidelityLevel
from autocomp.settings import OneOf, Positive, PositiveFloat, Weight
from autocomp.train import Distillation, TrainSettings

WARM_STARTS = ("none", "sensitivity")
"""How a search starts: with the agent's own first proposal, or with the sensitivity profile's guided policy."""
PRUNERS = ("none", "median")
"""none, or median: a candidate whose intermediate score falls below the median of earlier ones at that step stops."""


@with_config(STRICT)
@dataclass(frozen=True)
class FinetuneConfig(TrainSettings):
    """Final fine-tune of the best candidate, distilled from the baseline (`Distillation`'s defaults).

    ``finalists`` > 1 fine-tunes the search's best few distinct candidates the same way and keeps the one most accurate
    on the held-out data afterwards (each finalist costs one more fine-tune)."""

    epochs: Positive = 2
    lr: PositiveFloat = 0.02
    temperature: PositiveFloat = Distillation.temperature
    alpha: Weight = Distillation.alpha
    finalists: Positive = 1

    def training(self) -> TrainSettings:
        """The training settings alone."""
        return TrainSettings(**{f.name: getattr(self, f.name) for f in fields(TrainSettings)})


@with_config(STRICT)
@dataclass(frozen=True)
class EvaluatorConfig(Scoring):
    """How candidates are scored: ``fidelity`` bn (BatchNorm recalibration on ``bn_batches`` training
    batches), proxy (then ``steps`` fine-tune steps) or epochs (then ``epochs`` passes); accuracy on
    ``val_examples`` held-out examples; or halving (the default: scored at each of ``rungs`` fine-tune steps, 0 after
    the recalibration, where only the best ``1/reduction`` go on; `HalvingPruner`). ``pruner: median`` stops a proxy
    or epochs candidate whose intermediate score (every ``report_every`` steps) falls below the median of earlier
    candidates at that step."""

    fidelity: FidelityLevel = Fidelity.level
    steps: Positive = Fidelity.steps
    epochs: Positive = Fidelity.epochs
    rungs: tuple[int, ...] = Fidelity.rungs
    reduction: Annotated[int, Ge(2)] = 3
    """halving: the best 1/reduction of the candidates scored at a rung go on to the next."""
    brackets: Positive = 1
    """halving: > 1 splits the candidates into Hyperband-style brackets, bracket b first compared at rung b."""
    pruner: Annotated[str, OneOf(PRUNERS)] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pruner != "none" and self.fidelity in ("bn", "halving"):
            raise ValueError(
                f"pruner {self.pruner} does not apply to fidelity {self.fidelity} "
                f"({'it has no intermediate scores' if self.fidelity == 'bn' else 'it stops candidates itself'}); "
                "use fidelity proxy or epochs, or pruner none"
            )
        self.level()  # the rungs checked as the library checks them
        if self.brackets > len(self.rungs) - 1:
            raise ValueError(
                f"brackets {self.brackets} is more than the {len(self.rungs) - 1} rungs a candidate can be stopped at; "
                f"use at most {len(self.rungs) - 1}"
            )

    def level(self) -> Fidelity:
        """The fidelity this section asks for."""
        return Fidelity(self.fidelity, steps=self.steps, epochs=self.epochs, rungs=self.rungs)


class SearchConfig(Section):
    """Who searches: ``agent`` (a name from `agents.agent_names()`) with its own ``options`` (the agent's Options)."""

    agent: str = "tpe"
    options: dict[str, Any] = Field(default_factory=dict)
    trials: Positive = 40
    seed: int = EvaluatorSettings.seed
    criterion: str = EvaluatorSettings.criterion
    reconstruct: bool = EvaluatorSettings.reconstruct
    warm_start: Annotated[str, OneOf(WARM_STARTS)] = "none"
    """sensitivity: probe each decision first (`app.sensitivity`), draw the profile in the report, and evaluate the
    profile-guided policy as the first candidate."""
    reference: bool = True
    """Score uniform pruning to the same budget the same way, as a reference candidate the report compares the best
    with (chosen only if it wins; not one of ``trials``; none for the uniform agent, whose one candidate it is)."""
