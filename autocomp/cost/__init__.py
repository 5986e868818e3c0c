"""Cost of models and policies: MACs, parameters, size, measured latency."""

from autocomp.cost.latency import compare_latency_ms
from autocomp.cost.macs import count_macs, module_macs
from autocomp.cost.measure import Cost, count_params, measure, weight_bytes

__all__ = ["Cost", "count_macs", "count_params", "measure", "compare_latency_ms", "module_macs", "weight_bytes"]
