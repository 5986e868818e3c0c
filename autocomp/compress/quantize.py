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
``[0, alpha]``; LSQ (Esser et al. 2020), a learned step, signed or not.

`QuantizedConv2d` and `QuantizedLinear` run a layer on quantized weights and inputs;
`quantize_layers` puts them in a model where a policy asks for bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

from autocomp.compress.lowrank import LowRank
from autocomp.deploy.onnx_export import OnnxForm
from autocomp.errors import ConfigError
from autocomp.geometry import as_pair
from autocomp.modes import evaluating
from autocomp.policy import (
    MAX_BITS,
    MIN_BITS,
    WEIGHT_SCHEMES,
    LayerDecision,
    check_bits,
    check_weight_precision,
    weight_scheme_for,
)

INTEGER_SCHEMES = ("uniform", "binary", "ternary")
"""Weight schemes whose values are integers times one scale per output channel."""


def _straight_through(w: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Exactly ``quantized`` forward (``w - w.detach()`` is exactly zero), identity gradient to ``w`` backward."""
    return quantized.detach() + (w - w.detach())


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return _straight_through(x, x.round())


def _per_channel(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A per-output-channel statistic shaped to broadcast against ``w``."""
    return values.view(-1, *([1] * (w.dim() - 1)))


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
    check_bits(bits)
    levels = 2 ** (bits - 1) - 1
    scale = _per_channel(w.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-12) / levels, w)
    return _straight_through(w, (w / scale).round().clamp(-levels, levels) * scale)


def dorefa_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-Net weights in [-1, 1] on 2^k levels (the straight-through path runs through tanh)."""
    check_bits(bits)
    levels = 2**bits - 1
    squashed = torch.tanh(w)
    unit = squashed / (2 * squashed.detach().abs().max().clamp(min=1e-12)) + 0.5
    return 2 * round_ste(unit * levels) / levels - 1


def _given_bits(bits: int | None) -> int:
    """``bits``, which uniform and dorefa weights need: None is refused as `check_bits` refuses it."""
    if bits is None:
        raise ConfigError(f"bit-width None is not allowed; allowed: a whole number from {MIN_BITS} to {MAX_BITS}.")
    return bits


def quantize_weights(w: torch.Tensor, scheme: str, bits: int | None = None) -> torch.Tensor:
    """``w`` quantized by ``scheme`` (``bits`` for uniform and dorefa)."""
    if scheme == "binary":
        return binary_weights(w)
    if scheme == "ternary":
        return ternary_weights(w)
    if scheme == "uniform":
        return uniform_weights(w, _given_bits(bits))
    if scheme == "dorefa":
        return dorefa_weights(w, _given_bits(bits))
    raise ConfigError(f"weight quantizer {scheme!r} is not known; allowed: {', '.join(WEIGHT_SCHEMES)}.")


class PACT(nn.Module):
    """k-bit activations on ``[0, alpha]`` with a learned clipping level ``alpha`` (PACT)."""

    def __init__(self, bits: int, alpha: float = 6.0) -> None:
        super().__init__()
        check_bits(bits)
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

    The step starts at ``2 mean |x| / sqrt(Q_p)`` on the first batch it sees (`calibrate` feeds
    it real data), and its gradient is scaled by ``1 / sqrt(numel x Q_p)`` as in the paper.
    Whether it has started is saved with the state dict, so a loaded model keeps its step.
    """

    def __init__(self, bits: int, signed: bool) -> None:
        super().__init__()
        check_bits(bits, "activation bit-width")
        self.bits, self.signed = bits, signed
        self.low = -(2 ** (bits - 1)) if signed else 0
        self.high = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.initialized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            with torch.no_grad():
                self.step.copy_((2 * x.abs().mean() / self.high**0.5).clamp(min=1e-8))
            self.initialized = True
        step = self.step
        if torch.is_grad_enabled() and step.requires_grad:  # value: step (to a rounding); gradient: scaled
            scale = 1.0 / (x.numel() * self.high) ** 0.5
            step = step * scale + (step - step * scale).detach()
        return round_ste((x / step).clamp(self.low, self.high)) * step

    def get_extra_state(self) -> dict:
        return {"initialized": self.initialized}

    def set_extra_state(self, state: dict) -> None:
        self.initialized = bool(state["initialized"])

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class _Quantized:
    """What quantized conv and linear layers share: the weight quantizer and the input quantizer."""

    weight: torch.Tensor  # the conv's or linear layer's
    weight_bits: int
    weight_scheme: str
    inputs: LSQ | None

    def _set_precision(self, weight_bits: int, weight_scheme: str, act_bits: int | None, signed_inputs: bool) -> None:
        weight_scheme = weight_scheme_for(weight_bits, weight_scheme)
        check_weight_precision(weight_bits, weight_scheme)
        self.weight_bits, self.weight_scheme = weight_bits, weight_scheme
        self.inputs = None if act_bits is None else LSQ(act_bits, signed=signed_inputs)

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass sees it: on the scheme's grid, straight-through to ``weight``."""
        return quantize_weights(self.weight, self.weight_scheme, self.weight_bits)

    def _quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.inputs is None else self.inputs(x)

    @property
    def act_bits(self) -> int | None:
        return None if self.inputs is None else self.inputs.bits

    def quantization_spec(self) -> dict:
        """Plain data enough to rebuild this layer's quantizers (bits, scheme, signedness)."""
        return {
            "weight_bits": self.weight_bits,
            "weight_scheme": self.weight_scheme,
            "act_bits": self.act_bits,
            "signed_inputs": True if self.inputs is None else self.inputs.signed,
        }

    def integer_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The quantized weight as int8 integers and one float scale per output channel (uniform, binary, ternary)."""
        quantized = self.quantized_weight().detach().float()
        levels = 2 ** (self.weight_bits - 1) - 1 if self.weight_scheme == "uniform" else 1
        scales = quantized.abs().flatten(1).amax(dim=1) / levels
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero channel: any scale
        integers = (quantized / scales.view(-1, *([1] * (quantized.dim() - 1)))).round().clamp(-127, 127)
        return integers.to(torch.int8), scales

    def _onnx_form(self) -> OnnxForm:
        """How QDQ ONNX expresses this layer: integer weights with their scales (else floating-point weights), and the
        input quantizer's step and range; refused while the input step has not been set by a first batch."""
        integers, scales = self.integer_weights() if self.weight_scheme in INTEGER_SCHEMES else (None, None)
        if self.inputs is None:
            return OnnxForm(integers, scales)
        if not self.inputs.initialized:
            raise ConfigError(
                "a quantized layer's activation step is not set yet; compress with data (or run one batch) before "
                "exporting it to ONNX."
            )
        return OnnxForm(integers, scales, float(self.inputs.step.detach()), self.inputs.low, self.inputs.high)

    def _precision_repr(self) -> str:
        return f"weights={self.weight_scheme}:{self.weight_bits}, inputs={self.act_bits or 'float'}"


class QuantizedConv2d(_Quantized, nn.Conv2d):
    """An ``nn.Conv2d`` whose forward runs on quantized weights and, optionally, quantized inputs.

    Being a ``Conv2d`` (same parameters, same state-dict names, plus ``inputs.step``), it is
    counted, traced, saved and factorized like the layer it replaces.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._quantized_input(x), self.quantized_weight(), self.bias)

    def onnx_form(self) -> tuple[nn.Conv2d, OnnxForm]:
        """A plain ``nn.Conv2d`` on the quantized weight, and its QDQ form (`autocomp.deploy.to_onnx`)."""
        twin = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            as_pair(self.kernel_size),
            as_pair(self.stride),
            self.padding if isinstance(self.padding, str) else as_pair(self.padding),
            as_pair(self.dilation),
            self.groups,
            self.bias is not None,
            self.padding_mode,
        )
        return _with_weights(twin, self), self._onnx_form()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._precision_repr()}"


class QuantizedLinear(_Quantized, nn.Linear):
    """An ``nn.Linear`` whose forward runs on quantized weights and, optionally, quantized inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self._quantized_input(x), self.quantized_weight(), self.bias)

    def onnx_form(self) -> tuple[nn.Linear, OnnxForm]:
        """A plain ``nn.Linear`` on the quantized weight, and its QDQ form (`autocomp.deploy.to_onnx`)."""
        return _with_weights(
            nn.Linear(self.in_features, self.out_features, self.bias is not None), self
        ), self._onnx_form()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._precision_repr()}"


QUANTIZED_TYPES = (QuantizedConv2d, QuantizedLinear)
Layer = TypeVar("Layer", nn.Conv2d, nn.Linear)


@torch.no_grad()
def _with_weights(twin: Layer, layer: QuantizedConv2d | QuantizedLinear) -> Layer:
    """``twin`` holding ``layer``'s quantized weight and its bias, in eval mode."""
    twin.weight.copy_(layer.quantized_weight())
    if twin.bias is not None and layer.bias is not None:
        twin.bias.copy_(layer.bias)
    return twin.eval()


def quantized_layer(
    layer: nn.Module,
    weight_bits: int,
    weight_scheme: str = "uniform",
    act_bits: int | None = None,
    signed_inputs: bool = True,
) -> QuantizedConv2d | QuantizedLinear:
    """A quantized copy of a conv or linear ``layer`` sharing its parameters (other layers are refused).

    ``weight_bits``: 1 (binary), 2 with ``weight_scheme="ternary"``, or 2..8 uniform or dorefa.
    ``act_bits``: None keeps inputs in floating point; otherwise LSQ, signed unless the inputs
    are never negative (``signed_inputs=False``, as after a ReLU).
    """
    bias = layer.bias is not None
    quantized: QuantizedConv2d | QuantizedLinear
    if type(layer) is nn.Conv2d:
        quantized = QuantizedConv2d(
            layer.in_channels,
            layer.out_channels,
            as_pair(layer.kernel_size),
            as_pair(layer.stride),
            layer.padding if isinstance(layer.padding, str) else as_pair(layer.padding),
            as_pair(layer.dilation),
            layer.groups,
            bias,
            layer.padding_mode,
            device="meta",
        )
    elif type(layer) is nn.Linear:
        quantized = QuantizedLinear(layer.in_features, layer.out_features, bias, device="meta")
    else:
        raise ConfigError(f"quantization applies to nn.Conv2d and nn.Linear layers, not {type(layer).__name__}.")
    quantized.weight, quantized.bias = layer.weight, layer.bias  # shared, not copied: the meta placeholders go
    quantized.train(layer.training)
    quantized._set_precision(weight_bits, weight_scheme, act_bits, signed_inputs)
    if quantized.inputs is not None:
        quantized.inputs.to(layer.weight.device)
    return quantized


def quantize_layers(
    model: nn.Module, decisions: Mapping[str, LayerDecision], probe: nn.Module, probe_inputs: Sequence[torch.Tensor]
) -> None:
    """Replace each layer of ``model`` named in ``decisions`` by its quantized twin, in place.

    A factorized layer (`LowRank`) has both of its factors quantized. Inputs count as unsigned
    when they were never negative on any of ``probe_inputs`` run through ``probe`` (``model``
    or a wrapper around it): a layer after a ReLU then spends no level on negative values.
    """
    targets: dict[str, LayerDecision] = {}
    for name, decision in decisions.items():
        module = model.get_submodule(name)
        parts = (f"{name}.first", f"{name}.second") if isinstance(module, LowRank) else (name,)
        targets.update((part, decision) for part in parts)
    signed = _signed_inputs(model, list(targets), probe, probe_inputs)
    for name, decision in targets.items():
        layer = quantized_layer(
            model.get_submodule(name),
            _given_bits(decision.weight_bits),
            decision.weight_scheme,
            decision.act_bits,
            signed_inputs=signed[name],
        )
        model.set_submodule(name, layer)


@torch.no_grad()
def _signed_inputs(
    model: nn.Module, names: list[str], probe: nn.Module, probe_inputs: Sequence[torch.Tensor]
) -> dict[str, bool]:
    """Whether each named layer saw a negative input on any probe."""
    signed = dict.fromkeys(names, False)

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            signed[name] = signed[name] or bool((args[0] < 0).any())

        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(record(name)) for name in names]
    try:
        with evaluating(probe):
            for inputs in probe_inputs:
                probe(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return signed


@torch.no_grad()
def calibrate(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Set the step of every activation quantizer that has not started from one batch of real ``inputs``."""
    with evaluating(model):
        model(inputs)
    return model
