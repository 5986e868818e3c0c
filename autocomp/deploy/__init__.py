"""Deployment in ONNX: a model as ONNX bytes (quantized layers as QDQ), run and timed in ONNX Runtime.

`to_onnx` exports any model (dynamic batch); `check_onnx` runs the export in ONNX Runtime beside
the PyTorch model; `session` opens an ONNX Runtime CPU session on a number of threads;
`quantize_static` is ONNX Runtime's static int8 quantization of a floating-point export.
"""

from autocomp.deploy.onnx_export import OnnxForm, to_onnx
from autocomp.deploy.ort import (
    Agreement,
    OnnxMismatchError,
    check_onnx,
    checked_onnx,
    ort_median_ms,
    quantize_static,
    run,
    session,
)

__all__ = [
    "Agreement",
    "OnnxForm",
    "OnnxMismatchError",
    "check_onnx",
    "checked_onnx",
    "ort_median_ms",
    "quantize_static",
    "run",
    "session",
    "to_onnx",
]
