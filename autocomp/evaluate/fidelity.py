"""How hard a candidate is trained before it is scored: the fidelity levels and the proxy fine-tune's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from autocomp.errors import ConfigError

FIDELITY_LEVELS = ("bn", "proxy", "epochs")
"""bn: BatchNorm recalibration only (AutoSlim, EagleEye); proxy: ``steps`` fine-tune steps with
distillation; epochs: ``epochs`` full passes over the training split, the same way."""


def check_positive_int(value: object, name: str) -> None:
    """ConfigError naming ``name`` unless ``value`` is an int >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}.")


def _non_negative(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{name} must be a number >= 0, not {value!r}.")


@dataclass(frozen=True)
class Fidelity:
    """One fidelity level: ``bn``, ``proxy`` (``steps`` fine-tune steps) or ``epochs`` (full passes)."""

    level: str = "proxy"
    steps: int = 50
    epochs: int = 1

    def __post_init__(self) -> None:
        if self.level not in FIDELITY_LEVELS:
            raise ConfigError(f"fidelity level {self.level!r} is not allowed; allowed: {', '.join(FIDELITY_LEVELS)}.")
        check_positive_int(self.steps, "fidelity steps")
        check_positive_int(self.epochs, "fidelity epochs")

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

    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.7
    attention: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int(self.batch_size, "proxy batch_size")
        for name in ("lr", "momentum", "weight_decay", "attention"):
            _non_negative(getattr(self, name), f"proxy {name}")
        if not self.lr > 0:
            raise ConfigError(f"proxy lr must be > 0, not {self.lr!r}.")
        if not self.momentum < 1:
            raise ConfigError(f"proxy momentum must be in [0, 1), not {self.momentum!r}.")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not self.temperature > 0
        ):
            raise ConfigError(f"proxy temperature must be a number > 0, not {self.temperature!r}.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ConfigError(f"proxy alpha must be in [0, 1], not {self.alpha!r}.")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
