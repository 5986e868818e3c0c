"""ONNX Runtime on the CPU: sessions on a given number of threads, an export checked against its PyTorch model,
and ONNX Runtime's static int8 quantization."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocomp.deploy.onnx_export import INPUT, plain_copy, to_onnx
from autocomp.errors import AutocompError
from autocomp.imports import require
from autocomp.modes import evaluating

PROVIDER = "CPUExecutionProvider"
FLOAT_TOLERANCE = 1e-4
"""The largest difference allowed between a floating-point export's outputs and the model's, relative to the largest
output (at least 1)."""
QDQ_TOLERANCE = 0.1
"""The same for a QDQ export: float rounding in a different order (BatchNorm folded into the scales) may move an input
to the next integer level now and then, a difference of one step that the layers after it carry on."""


def session(model_bytes: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session on ``model_bytes``: ``threads`` threads inside each operator, operators one at a
    time, every graph optimization on."""
    ort = require("onnxruntime", "onnx", "ONNX Runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the optimizer's notes on the initializers it drops are not the user's
    return ort.InferenceSession(model_bytes, options, providers=[PROVIDER])


def run(ort_session: Any, batch: torch.Tensor) -> torch.Tensor:
    """The session's output on ``batch``, as a float tensor."""
    return torch.from_numpy(ort_session.run(None, {INPUT: batch.detach().float().numpy()})[0])


class OnnxMismatchError(AutocompError):
    """An ONNX export does not compute what its PyTorch model computes."""


@dataclass(frozen=True)
class Agreement:
    """An export's outputs beside the model's on one batch."""

    top1: float
    """The share of the batch on which both pick the same class."""
    max_difference: float
    """The largest absolute difference of their outputs."""
    allowed: float
    """The largest difference allowed: ``tolerance x max(1, largest |output| of the model)``."""
    margin_agrees: bool
    """Whether they pick the same class wherever the model's two best outputs are further apart than ``2 x allowed``."""

    @property
    def ok(self) -> bool:
        return self.max_difference <= self.allowed and self.margin_agrees


@torch.no_grad()
def check_onnx(model: nn.Module, model_bytes: bytes, batch: torch.Tensor, tolerance: float) -> Agreement:
    """Run ``model_bytes`` in ONNX Runtime and ``model`` in PyTorch on ``batch``; `OnnxMismatchError` unless they agree
    (the largest difference within ``tolerance`` of the outputs' scale, and the same top-1 wherever it is clear)."""
    with evaluating(model):
        expected = model(batch).float()
    got = run(session(model_bytes, threads=1), batch)
    allowed = tolerance * max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape:
        raise OnnxMismatchError(
            f"the ONNX model's output has shape {list(got.shape)}, the model's {list(expected.shape)}."
        )
    difference = float((got - expected).abs().max())
    top1_equal = got.argmax(-1) == expected.argmax(-1) if expected.dim() > 1 else torch.ones(1, dtype=torch.bool)
    if expected.dim() > 1 and expected.shape[-1] > 1:
        best = expected.topk(2, dim=-1).values
        clear = (best[..., 0] - best[..., 1]) > 2 * allowed
    else:
        clear = torch.zeros_like(top1_equal)
    agreement = Agreement(
        float(top1_equal.float().mean()), difference, allowed, bool(top1_equal[clear].all()) if clear.any() else True
    )
    if not agreement.ok:
        raise OnnxMismatchError(
            f"the ONNX model disagrees with the PyTorch model in ONNX Runtime (largest difference {difference:.3g}, "
            f"allowed {allowed:.3g}; same top-1 on {agreement.top1:.0%} of {len(batch)} inputs); nothing was written."
        )
    return agreement


def checked_onnx(model: nn.Module, example_inputs: torch.Tensor, batch: torch.Tensor) -> tuple[bytes, Agreement]:
    """``model`` as ONNX bytes (`to_onnx`) and its agreement with the model on ``batch`` in ONNX Runtime, checked
    (`check_onnx`) at `QDQ_TOLERANCE` when it has quantized layers, else at `FLOAT_TOLERANCE`."""
    model_bytes = to_onnx(model, example_inputs)
    tolerance = QDQ_TOLERANCE if plain_copy(model)[1] else FLOAT_TOLERANCE
    return model_bytes, check_onnx(model, model_bytes, batch, tolerance)


@torch.no_grad()
def int8_onnx(model: nn.Module, example_inputs: torch.Tensor, calibration: Sequence[torch.Tensor]) -> bytes:
    """The fast int8 form of ``model`` for ONNX Runtime: its floating-point export (a quantized model's quantized
    weights in float), BatchNorm folded into the convolutions, then ONNX Runtime's static quantization
    (`quantize_static`), whose fused kernels keep activations in uint8 from layer to layer. The 8-bit inputs of a
    quantized model's layers keep their learned step (the largest, where layers share an input); every other tensor
    is calibrated on ``calibration``."""
    require("onnx", "onnx", "ONNX export")
    from autocomp.deploy.qdq import fold_batchnorms

    plain, forms = plain_copy(model)
    folded, inputs = fold_batchnorms(to_onnx(plain, example_inputs))
    steps: dict[str, tuple[float, int]] = {}
    for name, form in forms.items():
        if form.input_step is not None and (form.input_low, form.input_high) in ((-128, 127), (0, 255)):
            tensor, zero_point = inputs[name], -form.input_low
            if form.input_step > steps.get(tensor, (0.0, 0))[0]:
                steps[tensor] = (form.input_step, zero_point)
    return quantize_static(folded, calibration, steps)


def quantize_static(
    model_bytes: bytes, calibration: Iterable[torch.Tensor], steps: Mapping[str, tuple[float, int]] | None = None
) -> bytes:
    """ONNX Runtime's static int8 quantization of a floating-point export, in QDQ form: weights int8 per channel,
    activations uint8 with ranges from ``calibration`` batches (min-max) or, for the tensors in ``steps``, that (scale,
    zero point); every tensor between quantizable operators (convolutions, adds, pooling) kept in 8 bits."""
    quantization = require("onnxruntime.quantization", "onnx", "ONNX Runtime quantization")
    overrides = {
        tensor: [{"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point, np.uint8)}]
        for tensor, (scale, zero_point) in (steps or {}).items()
    }
    batches = [{INPUT: batch.detach().float().numpy()} for batch in calibration]
    reader_base: Any = quantization.CalibrationDataReader

    class Reader(reader_base):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.left, None)

    root = logging.getLogger()  # ONNX Runtime's quantizer advises its pre-processing on the root logger
    level = root.level
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "model.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(model_bytes)
        root.setLevel(logging.ERROR)
        try:
            quantization.quantize_static(
                str(source),
                str(target),
                Reader(),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                extra_options={"TensorQuantOverrides": overrides},
            )
        finally:
            root.setLevel(level)
        return target.read_bytes()
