"""Simulated quantization: weights and activations rounded to few bits in the forward pass.

Every quantizer returns a tensor of the input's shape holding only the quantized values,
with straight-through gradients (Bengio et al. 2013): the backward pass treats the rounding
as the identity, so proxy and final fine-tuning are quantization-aware.

Weights (per output channel, dimension 0):
* ``binary``: BWN/XNOR-Net, ``alpha * sign(w)`` with ``alpha = mean |w|``: two values.
* ``ternary``: TWN, ``alpha * sign(w)`` where ``|w| > 0.7 mean |w|``, else 0: three values.
* ``uniform``: symmetric k-bit, scale ``max |w| / (2^(k-1) - 1)``: at most 2^k - 1 values.
* ``dorefa``: DoReFa-Net, ``2 q_k(tanh w / (2 max |tanh w|) + 1/2) - 1``: 2^k values (per layer).
Activations: PACT (Choi et al. 2018), a learned clipping level ``alpha``, k-bit uniform on
``[0, alpha]``.
"""

from __future__ import annotations

import torch
from torch import nn

from autocomp.errors import ConfigError

WEIGHT_SCHEMES = ("binary", "ternary", "uniform", "dorefa")
_FIXED_BITS = {"binary": 1, "ternary": 2}
MIN_BITS, MAX_BITS = 2, 8


def _straight_through(w: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Exactly ``quantized`` forward (``w - w.detach()`` is exactly zero), identity gradient to ``w`` backward."""
    return quantized.detach() + (w - w.detach())


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return _straight_through(x, x.round())


def _per_channel(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A per-output-channel statistic shaped to broadcast against ``w``."""
    return values.view(-1, *([1] * (w.dim() - 1)))


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bit-width {bits!r} is not allowed; allowed: a whole number from {MIN_BITS} to {MAX_BITS}.")


def binary_weights(w: torch.Tensor) -> torch.Tensor:
    """BWN: ``alpha_c * sign(w)`` per output channel c, ``alpha_c = mean |w_c|`` (sign(0) taken as +1)."""
    alpha = _per_channel(w.detach().abs().flatten(1).mean(dim=1), w)
    return _straight_through(w, alpha * torch.where(w >= 0, 1.0, -1.0))


def ternary_weights(w: torch.Tensor) -> torch.Tensor:
    """TWN: threshold ``0.7 mean |w_c|``; kept weights become ``+-alpha_c``, their mean magnitude."""
    magnitude = w.detach().abs()
    delta = _per_channel(0.7 * magnitude.flatten(1).mean(dim=1), w)
    kept = magnitude > delta
    kept_sum = (magnitude * kept).flatten(1).sum(dim=1)
    alpha = _per_channel(kept_sum / kept.flatten(1).sum(dim=1).clamp(min=1), w)
    return _straight_through(w, alpha * torch.sign(w) * kept)


def uniform_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric k-bit with a per-output-channel scale: integers in [-(2^(k-1) - 1), 2^(k-1) - 1]."""
    _check_bits(bits)
    levels = 2 ** (bits - 1) - 1
    scale = _per_channel(w.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-12) / levels, w)
    return _straight_through(w, (w / scale).round().clamp(-levels, levels) * scale)


def dorefa_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-Net weights in [-1, 1] on 2^k levels (the straight-through path runs through tanh)."""
    _check_bits(bits)
    levels = 2**bits - 1
    squashed = torch.tanh(w)
    unit = squashed / (2 * squashed.detach().abs().max().clamp(min=1e-12)) + 0.5
    return 2 * round_ste(unit * levels) / levels - 1


def quantize_weights(w: torch.Tensor, scheme: str, bits: int | None = None) -> torch.Tensor:
    """``w`` quantized by ``scheme`` (``bits`` for uniform and dorefa)."""
    if scheme == "binary":
        return binary_weights(w)
    if scheme == "ternary":
        return ternary_weights(w)
    if scheme == "uniform":
        return uniform_weights(w, bits)
    if scheme == "dorefa":
        return dorefa_weights(w, bits)
    raise ConfigError(f"weight quantizer {scheme!r} is not known; allowed: {', '.join(WEIGHT_SCHEMES)}.")


class PACT(nn.Module):
    """k-bit activations on ``[0, alpha]`` with a learned clipping level ``alpha`` (PACT)."""

    def __init__(self, bits: int, alpha: float = 6.0) -> None:
        super().__init__()
        _check_bits(bits)
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clamp(x, 0, alpha) written so that d/d alpha = 1 where x >= alpha, as in the paper
        clipped = torch.relu(x) - torch.relu(x - self.alpha)
        step = self.alpha / (2**self.bits - 1)
        return round_ste(clipped / step) * step

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class LSQ(nn.Module):
    """k-bit activations with a learned step size (Esser et al. 2020), signed or not.

    The step starts at ``2 mean |x| / sqrt(Q_p)`` on the first batch it sees, and its gradient is
    scaled by ``1 / sqrt(numel x Q_p)`` as in the paper.
    """

    def __init__(self, bits: int, signed: bool) -> None:
        super().__init__()
        _check_bits(bits)
        self.bits, self.signed = bits, signed
        self.low = -(2 ** (bits - 1)) if signed else 0
        self.high = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            with torch.no_grad():
                self.step.copy_((2 * x.abs().mean() / self.high**0.5).clamp(min=1e-8))
                self.initialized.fill_(True)
        scale = 1.0 / (x.numel() * self.high) ** 0.5
        step = self.step * scale + (self.step - self.step * scale).detach()  # value: step; gradient: scaled
        return round_ste((x / step).clamp(self.low, self.high)) * step

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class QuantizedLayer(nn.Module):
    """A conv or linear ``layer`` run with quantized weights and, optionally, quantized inputs.

    ``weight_bits``: 1 (binary), 2..8 with ``weight_scheme`` uniform or dorefa, or ternary
    (``weight_scheme="ternary"``, two bits). ``act_bits``: None keeps inputs in floating point;
    otherwise LSQ, signed unless ``unsigned_inputs`` (inputs that follow a ReLU).
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, weight_bits: int, weight_scheme: str = "uniform",
                 act_bits: int | None = None, unsigned_inputs: bool = False) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise ConfigError(f"quantization applies to nn.Conv2d and nn.Linear layers, not {type(layer).__name__}.")
        if weight_bits == 1:
            weight_scheme = "binary"
        if weight_scheme not in WEIGHT_SCHEMES:
            raise ConfigError(f"weight quantizer {weight_scheme!r} is not known; allowed: {', '.join(WEIGHT_SCHEMES)}.")
        if weight_scheme in _FIXED_BITS:
            if weight_bits != _FIXED_BITS[weight_scheme]:
                bits = _FIXED_BITS[weight_scheme]
                raise ConfigError(f"{weight_scheme} weights use {bits} bit{'s' if bits > 1 else ''}, not {weight_bits!r}.")
        else:
            _check_bits(weight_bits)
        self.layer = layer
        self.weight_bits, self.weight_scheme = weight_bits, weight_scheme
        self.inputs = None if act_bits is None else LSQ(act_bits, signed=not unsigned_inputs)

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weights(self.layer.weight, self.weight_scheme, self.weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs is not None:
            x = self.inputs(x)
        weight = self.quantized_weight()
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)

    def extra_repr(self) -> str:
        return f"weights={self.weight_scheme}:{self.weight_bits}, inputs={self.inputs.bits if self.inputs else 'float'}"
