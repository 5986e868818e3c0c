"""What a report says, worded once: the terminal's summary (`autocomp search`) and report.md show these rows and
sentences, so no figure can differ between them."""

from __future__ import annotations

from typing import NamedTuple

from autocomp.app.report.record import ConstraintRecord, Report
from autocomp.cost.format import format_number

COLUMNS = ("", "baseline", "compressed", "change")
"""The comparison's header: a row's label, then its `Row` fields."""


class Row(NamedTuple):
    """One line of the comparison of the baseline with the compressed model, as text."""

    label: str
    baseline: str
    compressed: str
    change: str


def percent(fraction: float) -> str:
    """``0.5`` as ``50.00%``: every accuracy and share in a report."""
    return f"{100 * fraction:.2f}%"


def title(report: Report) -> str:
    """``autocomp report: resnet20 on fashion_mnist``."""
    return f"autocomp report: {report.model} on {report.data}"


def run_sentence(report: Report) -> str:
    """The agent, its trials by outcome, the best trial and the wall time, in one sentence."""
    return (
        f"Agent {report.agent}, {report.trials} trials ({report.failed_trials} failed, {report.pruned_trials} stopped "
        f"early, {report.cached_trials} from the cache, {report.probe_trials} probes outside the budget), best is "
        f"trial {report.best.trial}; wall time {report.wall_seconds:.0f} s.{_lead(report)}"
    )


def _lead(report: Report) -> str:
    """`` Lead over uniform pruning to the same budget (trial 0, 88.10%): +0.80 pt held-out.`` ("" without one)."""
    reference = report.reference
    if reference is None:
        return ""
    lead = 100 * (report.best.val_accuracy - reference.val_accuracy)
    return (
        f" Lead over uniform pruning to the same budget (trial {reference.trial}, {percent(reference.val_accuracy)}"
        f" held-out): {lead:+.2f} pt."
    )


def comparison(report: Report) -> list[Row]:
    """The baseline against the compressed model: accuracies, costs, latency, then each limit of the budget."""
    base, best, latency = report.baseline, report.best, report.latency
    return [
        _accuracy("test accuracy", base.test_accuracy, best.test_accuracy),
        _accuracy(
            f"held-out accuracy (search score: {report.evaluator.describe})", base.val_accuracy, best.val_accuracy
        ),
        _accuracy("held-out accuracy after the fine-tune", base.val_accuracy, best.finetuned_val_accuracy),
        Row("MACs", f"{base.macs:,}", f"{best.macs:,}", percent(best.macs / base.macs)),
        Row("parameters", f"{base.params:,}", f"{best.params:,}", percent(best.params / base.params)),
        Row("size (bytes)", f"{base.size_bytes:,}", f"{best.size_bytes:,}", percent(best.size_bytes / base.size_bytes)),
        Row(
            f"{'CPU' if latency.device == 'cpu' else latency.device} latency, batch {latency.batch_size}, "
            f"{latency.threads} threads (ms)",
            f"{base.latency_ms:.3g}",
            f"{best.latency_ms:.3g}",
            f"{base.latency_ms / best.latency_ms:.2f}x faster",
        ),
        *(_budget(constraint) for constraint in report.constraints),
    ]


def _accuracy(label: str, baseline: float, compressed: float) -> Row:
    return Row(label, percent(baseline), percent(compressed), f"{100 * (compressed - baseline):+.2f} pt")


def _budget(constraint: ConstraintRecord) -> Row:
    """``budget: macs <= 15,510,976 (50.00% of the baseline)``, both models' measures and the share of it used."""
    relative = f" ({percent(constraint.max)} of the baseline)" if constraint.relative else ""
    return Row(
        f"budget: {constraint.metric} <= {format_number(constraint.limit)}{relative}",
        format_number(constraint.baseline),
        format_number(constraint.best),
        f"{percent(constraint.used)} used",
    )
