"""Compression operators: structured pruning, low-rank factorization, quantization, input resizing; int8 export."""

from autocomp.compress.criteria import (
    criterion_names,
    get_criterion,
    register_criterion,
)
from autocomp.compress.int8 import to_int8
from autocomp.compress.prune import Compressor, compress, model_layers, prunable_layers
from autocomp.compress.quantize import calibrate
from autocomp.compress.resize import InputResize

__all__ = [
    "Compressor",
    "InputResize",
    "calibrate",
    "compress",
    "criterion_names",
    "get_criterion",
    "model_layers",
    "prunable_layers",
    "register_criterion",
    "to_int8",
]
