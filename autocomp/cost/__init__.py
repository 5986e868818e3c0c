"""Cost of models and policies: MACs, BOPs, parameters, size in bits, measured latency."""

from autocomp.cost.latency import compare_latency_ms
from autocomp.cost.macs import count_bops, count_macs, module_macs
from autocomp.cost.measure import Cost, count_params, measure, storage_bits

__all__ = [
    "Cost", "compare_latency_ms", "count_bops", "count_macs", "count_params", "measure", "module_macs", "storage_bits",
]
