"""Deployment in ONNX: a model as ONNX bytes (quantized layers as QDQ), run and timed in ONNX Runtime.

`to_onnx` exports any model (dynamic batch); `check_onnx` runs the export in ONNX Runtime beside
the PyTorch model; `session` opens an ONNX Runtime CPU session on a number of threads;
`int8_onnx` is the fast int8 form: ONNX Runtime's static quantization (`quantize_static`) of the
floating-point export with BatchNorm folded, keeping a quantized model's learned input steps.
"""

from autocomp.deploy.onnx_export import INPUT, OnnxForm, to_onnx
from autocomp.deploy.ort import (
    Agreement,
    OnnxMismatchError,
    check_onnx,
    checked_onnx,
    int8_onnx,
    quantize_static,
    run,
    session,
)

__all__ = [
    "INPUT",
    "Agreement",
    "OnnxForm",
    "OnnxMismatchError",
    "check_onnx",
    "checked_onnx",
    "int8_onnx",
    "quantize_static",
    "run",
    "session",
    "to_onnx",
]
