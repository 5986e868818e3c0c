"""How hard a candidate is trained before it is scored: the fidelity levels and the proxy fine-tune's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Annotated

from autocomp.errors import ConfigError
from autocomp.settings import Momentum, NonNegativeFloat, OneOf, Positive, PositiveFloat, Weight, check

FIDELITY_LEVELS = ("bn", "proxy", "epochs", "halving")
"""bn: BatchNorm recalibration only (AutoSlim, EagleEye); proxy: ``steps`` fine-tune steps with
distillation; epochs: ``epochs`` full passes over the training split, the same way; halving: scored at each of
``rungs`` (fine-tune steps so far, 0: after the recalibration), where a pruner may stop it (successive halving)."""

FidelityLevel = Annotated[str, OneOf(FIDELITY_LEVELS)]


@dataclass(frozen=True)
class Fidelity:
    """One fidelity level: ``bn``, ``proxy`` (``steps`` fine-tune steps), ``epochs`` (full passes) or ``halving``
    (scored at each of ``rungs``; from one rung to the next the fine-tune goes on with a cosine of its own, so the
    score at a rung of 50 steps is the ``proxy`` level's of 50 steps)."""

    level: FidelityLevel = "halving"
    steps: Positive = 50
    epochs: Positive = 1
    rungs: tuple[int, ...] = (0, 50, 200)

    def __post_init__(self) -> None:
        check(self, "fidelity")
        rungs = self.rungs
        if len(rungs) < 2 or rungs[0] < 0 or any(b <= a for a, b in pairwise(rungs)):
            raise ConfigError(
                f"fidelity rungs {list(rungs)} are not allowed; need two or more increasing step counts, the first >= 0."
            )

    def training_steps(self, steps_per_epoch: int) -> int:
        """Fine-tune steps a candidate gets at this level (0 for ``bn``; halving: to its last rung)."""
        return {"bn": 0, "proxy": self.steps, "epochs": self.epochs * steps_per_epoch, "halving": self.rungs[-1]}[
            self.level
        ]

    def describe(self) -> str:
        return {
            "bn": "BN recalibration",
            "proxy": f"{self.steps}-step proxy fine-tune",
            "epochs": f"{self.epochs}-epoch fine-tune",
            "halving": f"successive halving at {'/'.join(map(str, self.rungs))} fine-tune steps",
        }[self.level]

    def to_dict(self) -> dict[str, object]:
        """The fields that change a score at this level (so unused ones do not split the cache)."""
        return {
            "level": self.level,
            **({"steps": self.steps} if self.level == "proxy" else {}),
            **({"epochs": self.epochs} if self.level == "epochs" else {}),
            **({"rungs": list(self.rungs)} if self.level == "halving" else {}),
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
