"""report.json and report.md of a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autocomp.cost.format import format_number
from autocomp.errors import ConfigError
from autocomp.files import write_text
from autocomp.imports import require
from autocomp.logs import logger

log = logger(__name__)

REPORT_VERSION = 3


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _constraint_line(constraint: dict[str, Any]) -> str:
    """``- macs <= 15,510,976 (50.00% of the baseline): 15,400,000 (99.29% used)``."""
    relative = f" ({_pct(constraint['max'])} of the baseline)" if constraint["relative"] else ""
    return (
        f"- {constraint['metric']} <= {format_number(constraint['limit'])}{relative}: {format_number(constraint['best'])} "
        f"({_pct(constraint['best'] / constraint['limit'])} used)"
    )


def _finalists_lines(finalists: list[dict[str, Any]]) -> list[str]:
    """The sentence on the finalists, when there were several: each one's search score and held-out accuracy after."""
    if len(finalists) < 2:
        return []
    each = "; ".join(
        f"trial {f['trial']}: {_pct(f['val_accuracy'])} -> {_pct(f['finetuned_val_accuracy'])}" for f in finalists
    )
    return [
        f"The {len(finalists)} best candidates were each fine-tuned and the most accurate on the held-out data "
        f"afterwards was kept (search score -> after the fine-tune): {each}."
    ]


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write a short ``report.md``, its figures and ``report.json`` (the full record) into ``run_dir``, each file whole
    or not at all; ``report.json`` comes last, so its presence means the report is complete."""
    base, best, latency = report["baseline"], report["best"], report["latency"]
    rows = [
        ("test accuracy", _pct(base["test_accuracy"]), _pct(best["test_accuracy"])),
        (
            f"held-out accuracy (search score: {report['evaluator']['describe']})",
            _pct(base["val_accuracy"]),
            _pct(best["val_accuracy"]),
        ),
        *(
            [
                (
                    "held-out accuracy after the fine-tune",
                    _pct(base["val_accuracy"]),
                    _pct(best["finetuned_val_accuracy"]),
                )
            ]
            if "finetuned_val_accuracy" in best
            else []
        ),
        ("MACs", f"{base['macs']:,}", f"{best['macs']:,} ({_pct(best['macs'] / base['macs'])})"),
        ("parameters", f"{base['params']:,}", f"{best['params']:,} ({_pct(best['params'] / base['params'])})"),
        ("size (bytes)", f"{base['size_bytes']:,}", f"{best['size_bytes']:,}"),
        (
            f"CPU latency, batch {latency['batch_size']}, {latency['threads']} threads (ms)",
            f"{base['latency_ms']:.1f}",
            f"{best['latency_ms']:.1f} ({base['latency_ms'] / best['latency_ms']:.2f}x faster)",
        ),
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
        *_finalists_lines(report.get("finalists", [])),
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
        *[
            f"| {point['trial']} | {_pct(point['val_accuracy'])} | {_pct(point['usage'])} |"
            for point in report.get("pareto_front", [])
        ],
        "",
        "## Channels kept per layer",
        "",
        "| layer | channels | keep |",
        "|---|---:|---:|",
        *[f"| `{name}` | {kept} / {total} | {kept / total:.2f} |" for name, (kept, total) in best["channels"].items()],
    ]
    try:
        figures = [f"![{title}]({name})" for name, title in write_figures(run_dir, report).items()]
    except ConfigError as missing:  # no matplotlib: the report without its figures, and why
        log.warning(f"[yellow]warning:[/] report.md without figures: {missing}")
        figures = [f"(no figures: {missing})"]
    lines += ["", "## Figures", "", *figures]
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    write_text(run_dir / "report.json", json.dumps(report, indent=2) + "\n")


def write_figures(run_dir: Path, report: dict[str, Any]) -> dict[str, str]:
    """The report's PNG files in ``run_dir``: accuracy against budget use with the front, per-layer decisions, best so
    far (what a report without a candidate history lacks is left out); their names and titles. `ConfigError` without
    matplotlib (the ``plots`` extra)."""
    require("matplotlib", "plots", "the report's figures")
    from autocomp.app.report import plots

    figures: dict[str, str] = {}
    best, history = report["best"], report.get("history", [])
    name = f"{report['model']} on {report['data']}, agent {report['agent']}"
    if history:
        usage = max(c["best"] / c["limit"] for c in report["constraints"])
        points = [(h["usage"], h["val_accuracy"]) for h in history]
        front = [(p["usage"], p["val_accuracy"]) for p in report.get("pareto_front", [])]
        plots.pareto_chart(
            run_dir / "pareto.png",
            points,
            front,
            {f"chosen (trial {best['trial']})": (usage, best["val_accuracy"])},
            "budget use (largest fraction of a limit, measured)",
            f"Candidates: {name}",
            limit=1.0,
            reference=("baseline", report["baseline"]["val_accuracy"]),
        )
        figures["pareto.png"] = "Held-out accuracy against budget use, with the Pareto front"
        scores = {h["trial"]: h["val_accuracy"] if h["feasible"] else None for h in history}
        plots.best_so_far_chart(
            run_dir / "progress.png",
            [scores.get(n) for n in range(max(scores) + 1)],
            f"Best feasible candidate so far: {name}",
        )
        figures["progress.png"] = "Held-out accuracy of each trial and the best so far"
    channels, bits = best["channels"], best.get("bits", {})
    layers = list(dict.fromkeys([*channels, *bits]))
    panels = {
        "kept channels (fraction)": {
            "chosen": [channels[layer][0] / channels[layer][1] if layer in channels else 1.0 for layer in layers]
        }
    }
    if bits:
        panels["bits (0: floating point)"] = {
            kind: [(bits.get(layer) or [None, None])[index] or 0 for layer in layers]
            for index, kind in enumerate(("weights", "activations"))
        }
    plots.layer_chart(run_dir / "layers.png", layers, panels, f"Per-layer decisions of the chosen model: {name}")
    figures["layers.png"] = "Per-layer kept channels" + (" and bits" if bits else "")
    return figures
