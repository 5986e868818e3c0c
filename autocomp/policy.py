"""Policy: the compression decision for every layer, as a plain, versioned, per-layer-name map.

Besides the per-layer decisions (channels kept, low-rank factorization) a policy carries the
model-wide multipliers of the MobileNet tables: ``width`` scales every layer's channels (the
first included) and ``resolution`` scales the input's height and width; ``channel_multiple``
rounds every kept channel count to a multiple (8 suits vectorised CPU and GPU kernels).
Per layer, ``weight_bits``/``act_bits`` choose the precision its weights and inputs run at
(None: floating point); `compress` prunes first, then quantizes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from autocomp.errors import ConfigError
from autocomp.files import write_text

if TYPE_CHECKING:
    from autocomp.graph import LayerInfo

POLICY_FORMAT = "autocomp.policy"
POLICY_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
RANK_SCHEMES = ("pair", "separable")
WEIGHT_SCHEMES = ("uniform", "dorefa", "binary", "ternary")
FIXED_BITS = {"binary": 1, "ternary": 2}
"""Weight schemes with a fixed bit-width; ``uniform`` and ``dorefa`` take ``MIN_BITS..MAX_BITS``."""
MIN_BITS, MAX_BITS = 2, 8
_MULTIPLIERS = ("width", "resolution", "channel_multiple")


def _check_fraction(value: object, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{what} {value!r} is not a number; allowed: a number in (0, 1].")
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{what} {value} is outside the allowed range (0, 1].")


def check_bits(bits: object, what: str = "bit-width") -> None:
    """Refuse anything but a whole number of bits from MIN_BITS to MAX_BITS."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{what} {bits!r} is not allowed; allowed: a whole number from {MIN_BITS} to {MAX_BITS}.")


def weight_scheme_for(bits: object, scheme: str) -> str:
    """``scheme``, except that one bit with the default ``uniform`` means binary weights."""
    return "binary" if bits == 1 and not isinstance(bits, bool) and scheme == "uniform" else scheme


def check_weight_precision(bits: object, scheme: object) -> None:
    """Refuse a weight scheme that is not known or a bit-width it cannot take (binary: 1, ternary: 2)."""
    if scheme not in WEIGHT_SCHEMES:
        raise ConfigError(f"weight quantizer {scheme!r} is not known; allowed: {', '.join(WEIGHT_SCHEMES)}.")
    if scheme in FIXED_BITS:
        fixed = FIXED_BITS[scheme]
        if bits != fixed or isinstance(bits, bool):
            raise ConfigError(f"{scheme} weights use {fixed} bit{'s' if fixed > 1 else ''}, not {bits!r}.")
    else:
        check_bits(bits, f"{scheme} weight bit-width")


class _Precision(TypedDict):
    """A layer's precision, as `LayerDecision` takes it."""

    weight_bits: int | None
    act_bits: int | None
    weight_scheme: str


@dataclass(frozen=True)
class LayerDecision:
    """What happens to one layer.

    ``keep``: the fraction of its output channels kept, in (0, 1].
    ``rank``: None, or the fraction of its full rank kept by an SVD factorization into two
    layers (after pruning); ``rank_scheme`` "pair" (k x k conv to ``rank`` channels, then
    1 x 1) or "separable" (k x 1, then 1 x k).
    ``weight_bits``: None (floating point) or the bits of its weights under ``weight_scheme``:
    1 is binary (the scheme follows), 2 ternary or 2..8 uniform or dorefa.
    ``act_bits``: None (floating-point inputs) or 2..8 bits for its inputs; needs ``weight_bits``.
    """

    keep: float = 1.0
    rank: float | None = None
    rank_scheme: str = "pair"
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_scheme: str = "uniform"

    def __post_init__(self) -> None:
        _check_fraction(self.keep, "keep ratio")
        if self.rank is not None:
            _check_fraction(self.rank, "rank fraction")
        if self.rank_scheme not in RANK_SCHEMES:
            raise ConfigError(f"rank scheme {self.rank_scheme!r} is not known; allowed: {', '.join(RANK_SCHEMES)}.")
        object.__setattr__(self, "weight_scheme", weight_scheme_for(self.weight_bits, self.weight_scheme))
        if self.weight_bits is not None:
            check_weight_precision(self.weight_bits, self.weight_scheme)
        elif self.weight_scheme != "uniform":
            raise ConfigError(
                f"weight scheme {self.weight_scheme!r} needs weight_bits; without them weights stay in floating point."
            )
        if self.act_bits is not None:
            check_bits(self.act_bits, "activation bit-width")
            if self.weight_bits is None:
                raise ConfigError(
                    f"act_bits {self.act_bits} needs weight_bits too: a layer is quantized weights first."
                )

    @property
    def quantized(self) -> bool:
        return self.weight_bits is not None


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
    def uniform(
        cls,
        layers: Iterable[LayerInfo | str],
        keep: float = 1.0,
        *,
        weight_bits: int | None = None,
        act_bits: int | None = None,
        weight_scheme: str = "uniform",
        edge_bits: int | None = 8,
        **options,
    ) -> Policy:
        """The same decision for every given layer (``prunable_layers(...)``, ``model_layers(...)`` or names).

        Layers known (as `LayerInfo`) not to be prunable keep all their channels. With bits,
        the first and the last of ``layers`` run at ``edge_bits`` (weights and inputs; None:
        like the others), as most quantization papers keep them.
        """
        entries = list(layers)
        names = [layer if isinstance(layer, str) else layer.name for layer in entries]
        fixed = {name for name, layer in zip(names, entries) if not isinstance(layer, str) and layer.group is None}
        edges = {names[0], names[-1]} if names and weight_bits is not None and edge_bits is not None else set()
        precision: _Precision = {"weight_bits": weight_bits, "act_bits": act_bits, "weight_scheme": weight_scheme}
        at_edges: _Precision = {
            "weight_bits": edge_bits,
            "act_bits": None if act_bits is None else edge_bits,
            "weight_scheme": "uniform",
        }
        return cls(
            {
                name: LayerDecision(
                    keep=1.0 if name in fixed else float(keep), **(at_edges if name in edges else precision)
                )
                for name in names
            },
            **options,
        )

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
            raise ConfigError(f'{source} is not an autocomp policy (expected "format": "{POLICY_FORMAT}").')
        version = data.get("version")
        if isinstance(version, bool) or version not in _READABLE_VERSIONS:
            raise ConfigError(
                f"{source} has policy version {version!r}; this autocomp reads versions 1 to {POLICY_VERSION}."
            )
        unknown = set(data) - {"format", "version", "layers", *_MULTIPLIERS}
        if unknown:
            raise ConfigError(
                f"{source} has unknown key(s) {sorted(unknown)}; allowed: {sorted(['layers', *_MULTIPLIERS])}."
            )
        layers = data.get("layers")
        if not isinstance(layers, Mapping):
            raise ConfigError(f'{source} has no "layers" mapping of layer names to decisions.')
        allowed = {f.name for f in fields(LayerDecision)}
        decisions = {}
        for name, entry in layers.items():
            if not isinstance(entry, Mapping):
                raise ConfigError(f'{source}: layer {name!r} must map to an object such as {{"keep": 0.5}}.')
            unknown = set(entry) - allowed
            if unknown:
                raise ConfigError(
                    f"{source}: layer {name!r} has unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}."
                )
            decisions[name] = LayerDecision(**entry)
        options = {key: data[key] for key in _MULTIPLIERS if key in data}
        return cls(decisions, **options)

    def to_json(self) -> str:
        """`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write the policy's JSON to ``path`` (whole or not at all)."""
        write_text(path, self.to_json() + "\n")

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
    """The JSON form of a decision, without the low-rank or precision fields of a layer that has none."""
    data = asdict(decision)
    if decision.rank is None:
        del data["rank"], data["rank_scheme"]
    if decision.weight_bits is None:
        del data["weight_bits"], data["act_bits"], data["weight_scheme"]
    return data
