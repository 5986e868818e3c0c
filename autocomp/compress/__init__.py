"""Compression operators: structured pruning, low-rank factorization, input resizing (quantization to come)."""

from autocomp.compress.criteria import criterion_names, get_criterion, register_criterion
from autocomp.compress.prune import Compressor, compress, prunable_layers
from autocomp.compress.resize import InputResize

__all__ = [
    "Compressor", "InputResize", "compress", "criterion_names", "get_criterion", "prunable_layers", "register_criterion",
]
