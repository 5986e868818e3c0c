"""A PyTorch model as ONNX bytes, with a dynamic batch; quantized layers as QuantizeLinear/DequantizeLinear (QDQ).

The export uses torch's TorchScript exporter (`torch.onnx.export(..., dynamo=False)`): it keeps every
parameter's name as its initializer's name (constant folding off), which is how a layer's weight is
found again to put it in QDQ form, and it exports in about a second where the dynamo exporter takes
five (the latency table exports every layer it times). Neither exporter converts torch's
fake-quantize ops to QDQ for our 8-bit ranges (the dynamo exporter does not know them; the TorchScript
one refuses the weights' symmetric -127..127), so quantized layers are exported as their plain
floating-point twin and the QDQ nodes are written into the graph afterwards (`qdq.py`).

A layer joins the QDQ form through a method ``onnx_form()`` (the quantized layers of
`autocomp.compress.quantize` have it) returning its plain twin and an `OnnxForm`: the integers and
per-channel scales of its weights, the step and integer range of its inputs.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autocomp.errors import PROGRAMMING_ERRORS, ConfigError
from autocomp.imports import require

OPSET = 17
INPUT, OUTPUT = "input", "output"


@dataclass(frozen=True)
class OnnxForm:
    """How a quantized layer appears in QDQ ONNX: int8 ``weight_integers`` times per-output-channel ``weight_scales``
    (None: floating-point weights), inputs rounded to integers in [``input_low``, ``input_high``] times ``input_step``
    (None: floating-point inputs)."""

    weight_integers: torch.Tensor | None = None
    weight_scales: torch.Tensor | None = None
    input_step: float | None = None
    input_low: int = 0
    input_high: int = 255


def plain_copy(model: nn.Module) -> tuple[nn.Module, dict[str, OnnxForm]]:
    """An eval copy of ``model`` whose layers with ``onnx_form()`` are their plain twins, and each one's `OnnxForm`."""
    plain = copy.deepcopy(model).eval()
    forms: dict[str, OnnxForm] = {}
    for name, module in list(plain.named_modules()):
        onnx_form = getattr(module, "onnx_form", None)
        if name and callable(onnx_form):
            twin, forms[name] = onnx_form()
            plain.set_submodule(name, twin)
    return plain, forms


@torch.no_grad()
def to_onnx(model: nn.Module, example_inputs: torch.Tensor) -> bytes:
    """``model`` (left untouched) as ONNX bytes: one input, one output, the batch dimension free; quantized layers in
    QDQ form (see the module's docstring)."""
    require("onnx", "onnx", "ONNX export")
    from autocomp.deploy.qdq import insert_qdq

    plain, forms = plain_copy(model)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():  # the exporter's deprecation notice
        warnings.simplefilter("ignore")
        path = f"{folder}/model.onnx"
        try:
            torch.onnx.export(
                plain,
                (example_inputs,),
                path,
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=False,
            )
        except PROGRAMMING_ERRORS:
            raise
        except Exception as err:  # an operator ONNX lacks, or what the tracer refuses
            reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
            raise ConfigError(f"this model cannot be exported to ONNX: {reason}.") from None
        exported = Path(path).read_bytes()
    return insert_qdq(exported, forms) if forms else exported
