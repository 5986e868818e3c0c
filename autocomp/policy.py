"""Policy: the compression decision for every layer, as a plain, versioned, per-layer-name map.

Besides the per-layer decisions (channels kept, low-rank factorization) a policy carries the
model-wide multipliers of the MobileNet tables: ``width`` scales every layer's channels (the
first included) and ``resolution`` scales the input's height and width; ``channel_multiple``
rounds every kept channel count to a multiple (8 suits vectorised CPU and GPU kernels).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from autocomp.errors import ConfigError

if TYPE_CHECKING:
    from autocomp.graph import LayerInfo

POLICY_FORMAT = "autocomp.policy"
POLICY_VERSION = 2
_READABLE_VERSIONS = (1, 2)
RANK_SCHEMES = ("pair", "separable")
_MULTIPLIERS = ("width", "resolution", "channel_multiple")


def _check_fraction(value: object, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{what} {value!r} is not a number; allowed: a number in (0, 1].")
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{what} {value} is outside the allowed range (0, 1].")


@dataclass(frozen=True)
class LayerDecision:
    """What happens to one layer.

    ``keep``: the fraction of its output channels kept, in (0, 1].
    ``rank``: None, or the fraction of its full rank kept by an SVD factorization into two
    layers (after pruning); ``rank_scheme`` "pair" (k x k conv to ``rank`` channels, then
    1 x 1) or "separable" (k x 1, then 1 x k).
    """

    keep: float = 1.0
    rank: float | None = None
    rank_scheme: str = "pair"

    def __post_init__(self) -> None:
        _check_fraction(self.keep, "keep ratio")
        if self.rank is not None:
            _check_fraction(self.rank, "rank fraction")
        if self.rank_scheme not in RANK_SCHEMES:
            raise ConfigError(f"rank scheme {self.rank_scheme!r} is not known; allowed: {', '.join(RANK_SCHEMES)}.")


@dataclass(frozen=True)
class Policy:
    """Per-layer decisions keyed by module name (layers not listed are left as they are), plus multipliers."""

    layers: Mapping[str, LayerDecision] = field(default_factory=dict)
    width: float = 1.0
    resolution: float = 1.0
    channel_multiple: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.layers, Mapping):
            raise ConfigError(f"policy layers {self.layers!r} must map layer names to LayerDecision objects.")
        for name, decision in self.layers.items():
            if not isinstance(name, str) or not isinstance(decision, LayerDecision):
                raise ConfigError(
                    f"policy entry {name!r}: {decision!r} is not allowed; map a layer name to a LayerDecision such as "
                    "LayerDecision(keep=0.5)."
                )
        _check_fraction(self.width, "width multiplier")
        _check_fraction(self.resolution, "resolution multiplier")
        multiple = self.channel_multiple
        if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
            raise ConfigError(f"channel multiple {multiple!r} is not allowed; need a whole number >= 1.")

    @classmethod
    def uniform(cls, layers: Iterable[LayerInfo | str], keep: float, **options) -> Policy:
        """The same keep ratio for every given layer (``prunable_layers(...)`` or names)."""
        names = [layer if isinstance(layer, str) else layer.name for layer in layers]
        decision = LayerDecision(keep=float(keep))
        return cls({name: decision for name in names}, **options)

    def keep(self, name: str) -> float:
        """The keep ratio of layer ``name`` (1.0 when the policy does not mention it)."""
        decision = self.layers.get(name)
        return 1.0 if decision is None else decision.keep

    def decision(self, name: str) -> LayerDecision:
        """The decision for layer ``name`` (keep everything, no factorization, when not mentioned)."""
        return self.layers.get(name, LayerDecision())

    def to_dict(self) -> dict:
        """The JSON form: format, version, multipliers and the per-layer decisions, sorted by name."""
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "width": self.width,
            "resolution": self.resolution,
            "channel_multiple": self.channel_multiple,
            "layers": {name: _decision_dict(decision) for name, decision in sorted(self.layers.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "policy") -> Policy:
        """Build a policy from its JSON form, refusing other formats and newer versions."""
        if not isinstance(data, Mapping) or data.get("format") != POLICY_FORMAT:
            raise ConfigError(f"{source} is not an autocomp policy (expected \"format\": \"{POLICY_FORMAT}\").")
        version = data.get("version")
        if isinstance(version, bool) or version not in _READABLE_VERSIONS:
            raise ConfigError(f"{source} has policy version {version!r}; this autocomp reads versions 1 and {POLICY_VERSION}.")
        unknown = set(data) - {"format", "version", "layers", *_MULTIPLIERS}
        if unknown:
            raise ConfigError(f"{source} has unknown key(s) {sorted(unknown)}; allowed: {sorted(['layers', *_MULTIPLIERS])}.")
        layers = data.get("layers")
        if not isinstance(layers, Mapping):
            raise ConfigError(f"{source} has no \"layers\" mapping of layer names to decisions.")
        allowed = {f.name for f in fields(LayerDecision)}
        decisions = {}
        for name, entry in layers.items():
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{source}: layer {name!r} must map to an object such as {{\"keep\": 0.5}}.")
            unknown = set(entry) - allowed
            if unknown:
                raise ConfigError(f"{source}: layer {name!r} has unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
            decisions[name] = LayerDecision(**entry)
        options = {key: data[key] for key in _MULTIPLIERS if key in data}
        return cls(decisions, **options)

    def to_json(self) -> str:
        """`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write the policy's JSON to ``path``."""
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Policy:
        """Read a policy file, refusing missing files, invalid JSON and foreign formats with one sentence."""
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
        return isinstance(other, Policy) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.key())


def _decision_dict(decision: LayerDecision) -> dict:
    """The JSON form of a decision, without the low-rank fields of a layer that is not factorized."""
    data = asdict(decision)
    if decision.rank is None:
        del data["rank"], data["rank_scheme"]
    return data
