"""Compression operators: structured pruning (more to come: quantization, low-rank, resize)."""

from autocomp.compress.criteria import criterion_names, get_criterion, register_criterion
from autocomp.compress.prune import compress, prunable_layers

__all__ = ["compress", "criterion_names", "get_criterion", "prunable_layers", "register_criterion"]
