"""Real integer inference on the CPU: quantized layers run on oneDNN's int8 kernels.

`to_int8` turns a model that `compress` quantized into one whose quantized conv and linear
layers multiply 8-bit integers: inputs become ``uint8`` (the LSQ step is the scale), weights
``int8`` with one scale per output channel, and oneDNN accumulates in int32 and writes
float32 (the x86 int8 kernels PyTorch's inductor lowers quantized models to). Layers with at
most 8 bits on uniform, binary or ternary weights and quantized inputs convert; their outputs
equal the simulated layer's up to float rounding, since both compute on the same integers.
Sub-8-bit layers run on the same int8 kernels: on these CPUs fewer bits save storage, not time.

CPUs without VNNI (AVX2) add ``uint8 x int8`` products in pairs into int16, which saturates
above 32767. Signed inputs would sit on zero point 128 and hit that often, so they are split
by sign, ``conv(x) = conv(max(x, 0)) - conv(max(-x, 0))``: two kernels on values up to 128,
whose pairs (2 x 128 x 127) never saturate. Unsigned inputs run once; a pair of inputs and
weights both near 255 and 127 could still saturate there, which real activations, mostly
far below the top of their range, did not do in our measurements (benchmarks/quantization.py).
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn

from autocomp.compress.quantize import INTEGER_SCHEMES, QUANTIZED_TYPES, QuantizedConv2d, QuantizedLinear
from autocomp.errors import ConfigError


def int8_available() -> bool:
    """Whether this PyTorch build has the oneDNN int8 kernels (x86 CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv2d_pointwise")


class _Int8Layer(nn.Module):
    """Shared by the int8 layers: the input quantizer (integers on the layer's learned step) and the weights."""

    w_scales: torch.Tensor
    w_zero_points: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, layer: QuantizedConv2d | QuantizedLinear) -> None:
        super().__init__()
        inputs = layer.inputs
        if inputs is None:
            raise ConfigError(
                "an int8 layer needs quantized inputs (act_bits); this layer's inputs are floating point."
            )
        self.x_scale = float(inputs.step.detach())
        self.signed, self.low, self.high = inputs.signed, inputs.low, inputs.high
        integers, scales = layer.integer_weights()
        self.register_buffer("w_scales", scales)
        self.register_buffer("w_zero_points", torch.zeros(scales.numel(), dtype=torch.int64))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        self.bits = (layer.weight_bits, inputs.bits)
        self.packed = self._pack(integers, layer)

    def _pack(self, integers: torch.Tensor, layer: QuantizedConv2d | QuantizedLinear) -> torch.Tensor:
        """The weights in the kernel's own (opaque) layout."""
        raise NotImplementedError

    def _kernel(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The int8 kernel on unsigned integer inputs ``x`` (uint8), float32 out."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        integers = x.div(self.x_scale).round_().clamp_(self.low, self.high)
        if not self.signed:
            return self._kernel(integers.to(torch.uint8), self.bias)
        positive, negative = integers.clamp(min=0).to(torch.uint8), integers.neg_().clamp_(min=0).to(torch.uint8)
        return self._kernel(positive, self.bias) - self._kernel(negative, None)

    def extra_repr(self) -> str:
        return f"weights={self.bits[0]}, inputs={self.bits[1]}{' signed' if self.signed else ''}, int8 kernels"


class Int8Conv2d(_Int8Layer):
    """A quantized 2-d convolution computed by oneDNN's int8 convolution, float32 out."""

    def _pack(self, integers: torch.Tensor, layer: QuantizedConv2d | QuantizedLinear) -> torch.Tensor:
        conv = cast(QuantizedConv2d, layer)  # an Int8Conv2d is made of a conv (`to_int8`)
        self.geometry = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        return torch.ops.onednn.qconv_prepack(integers, self.w_scales, self.x_scale, 0, *self.geometry, None)

    def _kernel(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return torch.ops.onednn.qconv2d_pointwise(
            x,
            self.x_scale,
            0,
            self.packed,
            self.w_scales,
            self.w_zero_points,
            bias,
            *self.geometry,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )


class Int8Linear(_Int8Layer):
    """A quantized linear layer computed by oneDNN's int8 matmul, float32 out."""

    def _pack(self, integers: torch.Tensor, layer: QuantizedConv2d | QuantizedLinear) -> torch.Tensor:
        return torch.ops.onednn.qlinear_prepack(integers, None)

    def _kernel(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return torch.ops.onednn.qlinear_pointwise(
            x,
            self.x_scale,
            0,
            self.packed,
            self.w_scales,
            self.w_zero_points,
            bias,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )


def convertible(layer: nn.Module) -> bool:
    """Whether a quantized layer can run on the int8 kernels (integer weights, quantized inputs, zero padding)."""
    if not isinstance(layer, QUANTIZED_TYPES) or layer.inputs is None or layer.weight_scheme not in INTEGER_SCHEMES:
        return False
    if not layer.inputs.initialized:
        return False
    return not isinstance(layer, QuantizedConv2d) or (
        layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    )


@torch.no_grad()
def to_int8(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` whose convertible quantized layers run on int8 kernels; ``model`` is untouched.

    Other layers (floating point, dorefa weights, float inputs) stay as they are. Raises
    ConfigError when the build has no int8 kernels or nothing converts.
    """
    if not int8_available():
        raise ConfigError("this PyTorch build has no oneDNN int8 kernels; the int8 path needs an x86 CPU build.")
    converted = copy.deepcopy(model).eval()
    names = [name for name, module in converted.named_modules() if convertible(module)]
    if not names:
        raise ConfigError(
            "no layer of this model can run in int8: that needs weight_bits with a uniform, binary or ternary scheme, "
            "act_bits, and activation ranges set by a first batch (compress with data, or run one batch)."
        )
    for name in names:
        layer = converted.get_submodule(name)
        if isinstance(layer, QuantizedConv2d):
            converted.set_submodule(name, Int8Conv2d(layer))
        else:  # `convertible`: the other quantized type
            converted.set_submodule(name, Int8Linear(cast(QuantizedLinear, layer)))
    return converted
