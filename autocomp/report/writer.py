"""report.json and report.md of a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_VERSION = 3


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def format_number(value: float) -> str:
    """A cost for people: whole numbers with thousands separators from 100 up (MACs, bytes), else 3 digits (ms)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _constraint_line(constraint: dict[str, Any]) -> str:
    """``- macs <= 15,510,976 (50.00% of the baseline): 15,400,000 (99.29% used)``."""
    relative = f" ({_pct(constraint['max'])} of the baseline)" if constraint["relative"] else ""
    return (f"- {constraint['metric']} <= {format_number(constraint['limit'])}{relative}: {format_number(constraint['best'])} "
            f"({_pct(constraint['best'] / constraint['limit'])} used)")


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write ``report.json`` (the full record) and a short ``report.md`` beside it."""
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    base, best, latency = report["baseline"], report["best"], report["latency"]
    rows = [
        ("test accuracy", _pct(base["test_accuracy"]), _pct(best["test_accuracy"])),
        (f"held-out accuracy (search score: {report['evaluator']['describe']})", _pct(base["val_accuracy"]), _pct(best["val_accuracy"])),
        ("MACs", f"{base['macs']:,}", f"{best['macs']:,} ({_pct(best['macs'] / base['macs'])})"),
        ("parameters", f"{base['params']:,}", f"{best['params']:,} ({_pct(best['params'] / base['params'])})"),
        ("size (bytes)", f"{base['size_bytes']:,}", f"{best['size_bytes']:,}"),
        (f"CPU latency, batch {latency['batch_size']}, {latency['threads']} threads (ms)",
         f"{base['latency_ms']:.1f}", f"{best['latency_ms']:.1f} ({base['latency_ms'] / best['latency_ms']:.2f}x faster)"),
    ]
    lines = [
        f"# autocomp report: {report['model']} on {report['data']}",
        "",
        "Constraints (the compressed model is measured, never only predicted):",
        *[_constraint_line(constraint) for constraint in report["constraints"]],
        "",
        f"Agent `{report['agent']}`, {report['trials']} trials ({report['failed_trials']} failed, "
        f"{report['pruned_trials']} stopped early, {report['cached_trials']} from the cache, "
        f"{report.get('probe_trials', 0)} probes outside the budget), "
        f"best is trial {best['trial']}; wall time {report['wall_seconds']:.0f} s.",
        f"Candidates scored by {report['evaluator']['describe']}, {report['evaluator']['seconds_per_evaluation']:.1f} s each.",
        "",
        "| | baseline | compressed |",
        "|---|---:|---:|",
        *[f"| {name} | {a} | {b} |" for name, a, b in rows],
        "",
        "Test accuracy is measured once, after the fine-tune; the search scored candidates on a held-out",
        "part of the training set. Files: `model.pt` (reload with `autocomp.load`), `policy.json`, `study.db`.",
        "",
        "## Accuracy against budget use",
        "",
        "The candidates no other beats on both (measured-feasible, held-out accuracy; budget use is the",
        "largest fraction of a limit the candidate's measured cost takes):",
        "",
        "| trial | held-out accuracy | budget use |",
        "|---:|---:|---:|",
        *[f"| {point['trial']} | {_pct(point['val_accuracy'])} | {_pct(point['usage'])} |" for point in report.get("pareto_front", [])],
        "",
        "## Channels kept per layer",
        "",
        "| layer | channels | keep |",
        "|---|---:|---:|",
        *[f"| `{name}` | {kept} / {total} | {kept / total:.2f} |" for name, (kept, total) in best["channels"].items()],
    ]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
