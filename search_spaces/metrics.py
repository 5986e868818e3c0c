"""The cost metrics a constraint may bound, and the kinds of decisions each depends on."""

METRICS = ("macs", "flops", "params", "size_bytes", "bops", "latency_ms")
"""What a constraint may bound; ``latency_ms`` is predicted by a `LatencyTable` and measured on the final model."""

AFFECTED_BY = {
    "macs": {"keep", "rank", "width", "resolution"},
    "flops": {"keep", "rank", "width", "resolution"},
    "latency_ms": {"keep", "rank", "width", "resolution"},
    "params": {"keep", "rank", "width"},
    "size_bytes": {"keep", "rank", "width", "weight_bits"},
    "bops": {"keep", "rank", "width", "resolution", "weight_bits", "act_bits"},
}
"""The kinds of decisions each metric depends on (a projection leaves the others alone)."""
