"""How hard a candidate is trained before it is scored: the fidelity levels and the proxy fine-tune's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

from autocomp.settings import Momentum, NonNegativeFloat, OneOf, Positive, PositiveFloat, Weight, check

FIDELITY_LEVELS = ("bn", "proxy", "epochs")
"""bn: BatchNorm recalibration only (AutoSlim, EagleEye); proxy: ``steps`` fine-tune steps with
distillation; epochs: ``epochs`` full passes over the training split, the same way."""

FidelityLevel = Annotated[str, OneOf(FIDELITY_LEVELS)]


@dataclass(frozen=True)
class Fidelity:
    """One fidelity level: ``bn``, ``proxy`` (``steps`` fine-tune steps) or ``epochs`` (full passes)."""

    level: FidelityLevel = "proxy"
    steps: Positive = 50
    epochs: Positive = 1

    def __post_init__(self) -> None:
        check(self, "fidelity")

    def training_steps(self, steps_per_epoch: int) -> int:
        """Fine-tune steps a candidate gets at this level (0 for ``bn``)."""
        return {"bn": 0, "proxy": self.steps, "epochs": self.epochs * steps_per_epoch}[self.level]

    def describe(self) -> str:
        return {
            "bn": "BN recalibration",
            "proxy": f"{self.steps}-step proxy fine-tune",
            "epochs": f"{self.epochs}-epoch fine-tune",
        }[self.level]

    def to_dict(self) -> dict[str, object]:
        """The fields that change a score at this level (so unused ones do not split the cache)."""
        return {
            "level": self.level,
            **({"steps": self.steps} if self.level == "proxy" else {}),
            **({"epochs": self.epochs} if self.level == "epochs" else {}),
        }


@dataclass(frozen=True)
class ProxyTraining:
    """The fine-tune of the proxy and epochs levels: SGD with a cosine decay, distilled from the baseline.

    Loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE`` plus, when
    ``attention`` > 0, ``attention / 2`` times the attention-transfer loss at the end of each
    resolution (Zagoruyko & Komodakis use 1000).
    """

    batch_size: Positive = 128
    lr: PositiveFloat = 0.01
    momentum: Momentum = 0.9
    weight_decay: NonNegativeFloat = 0.0
    temperature: PositiveFloat = 4.0
    alpha: Weight = 0.7
    attention: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        check(self, "proxy")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
