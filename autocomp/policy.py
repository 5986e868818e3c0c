"""Policy: the compression decision for every layer, as a plain, versioned, per-layer-name map."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autocomp.errors import ConfigError

if TYPE_CHECKING:
    from autocomp.graph import LayerInfo

POLICY_FORMAT = "autocomp.policy"
POLICY_VERSION = 1


@dataclass(frozen=True)
class LayerDecision:
    """What happens to one layer: ``keep`` is the fraction of its output channels kept, in (0, 1]."""

    keep: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.keep, (int, float)) or isinstance(self.keep, bool) or not math.isfinite(self.keep):
            raise ConfigError(f"keep ratio {self.keep!r} is not a number; allowed: a number in (0, 1].")
        if not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"keep ratio {self.keep} is outside the allowed range (0, 1].")


@dataclass(frozen=True)
class Policy:
    """Per-layer decisions keyed by module name; layers not listed are left as they are."""

    layers: Mapping[str, LayerDecision] = field(default_factory=dict)

    @classmethod
    def uniform(cls, layers: Iterable[LayerInfo | str], keep: float) -> Policy:
        """The same keep ratio for every given layer (``prunable_layers(...)`` or names)."""
        names = [layer if isinstance(layer, str) else layer.name for layer in layers]
        decision = LayerDecision(keep=float(keep))
        return cls({name: decision for name in names})

    def keep(self, name: str) -> float:
        """The keep ratio of layer ``name`` (1.0 when the policy does not mention it)."""
        decision = self.layers.get(name)
        return 1.0 if decision is None else decision.keep

    def to_dict(self) -> dict:
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "layers": {name: asdict(decision) for name, decision in sorted(self.layers.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "policy") -> Policy:
        """Build a policy from its JSON form, refusing other formats and newer versions."""
        if not isinstance(data, Mapping) or data.get("format") != POLICY_FORMAT:
            raise ConfigError(f"{source} is not an autocomp policy (expected \"format\": \"{POLICY_FORMAT}\").")
        version = data.get("version")
        if version != POLICY_VERSION:
            raise ConfigError(f"{source} has policy version {version!r}; this autocomp reads version {POLICY_VERSION}.")
        layers = data.get("layers")
        if not isinstance(layers, Mapping):
            raise ConfigError(f"{source} has no \"layers\" mapping of layer names to decisions.")
        decisions = {}
        for name, fields in layers.items():
            if not isinstance(fields, Mapping):
                raise ConfigError(f"{source}: layer {name!r} must map to an object such as {{\"keep\": 0.5}}.")
            unknown = set(fields) - {"keep"}
            if unknown:
                raise ConfigError(f"{source}: layer {name!r} has unknown field(s) {sorted(unknown)}; allowed: ['keep'].")
            decisions[name] = LayerDecision(**fields)
        return cls(decisions)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Policy:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"policy file {path} does not exist.") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"policy file {path} is not valid JSON ({err.msg} at line {err.lineno}).") from None
        return cls.from_dict(data, source=f"policy file {path}")

    def key(self) -> str:
        """A canonical hash: equal policies (same decisions, any order) have equal keys."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and dict(self.layers) == dict(other.layers)

    def __hash__(self) -> int:
        return hash(self.key())
