"""Cost of models and policies: MACs, BOPs, parameters, size in bits, measured and predicted latency."""

from autocomp.cost.latency import LatencyMeter, LatencyTarget, compare_latency_ms, measure_latency_ms
from autocomp.cost.macs import count_bops, count_macs, module_macs
from autocomp.cost.measure import Cost, count_params, measure, storage_bits

__all__ = [
    "Cost",
    "LatencyMeter",
    "LatencyTarget",
    "compare_latency_ms",
    "count_bops",
    "count_macs",
    "count_params",
    "measure",
    "measure_latency_ms",
    "module_macs",
    "storage_bits",
]
