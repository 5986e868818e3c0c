"""A finished run's report files: report.md and its figures, then report.json (last: its presence marks a finished run)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autocomp.app.report.record import Report, save_report
from autocomp.app.report.summary import COLUMNS, comparison, percent, run_sentence, title
from autocomp.errors import ConfigError
from autocomp.files import write_text
from autocomp.imports import require
from autocomp.logs import logger

log = logger(__name__)


def _markdown_table(header: tuple[str, ...], align: str, rows: Sequence[tuple[str, ...]]) -> list[str]:
    """``rows`` under ``header`` as markdown; ``align`` has a letter per column: l (left) or r (right)."""
    return [
        f"| {' | '.join(header)} |",
        f"|{'|'.join('---' if side == 'l' else '---:' for side in align)}|",
        *[f"| {' | '.join(row)} |" for row in rows],
    ]


def _scoring_lines(report: Report) -> list[str]:
    """How candidates were scored and, when several finalists were fine-tuned, each one's search score and held-out
    accuracy after."""
    lines = [f"Candidates scored by {report.evaluator.describe}, {report.evaluator.seconds_per_evaluation:.1f} s each."]
    if report.evaluator.rungs:
        lines.append(
            "Candidates scored at each rung: "
            + ", ".join(f"{count} at {steps} steps" for steps, count in report.evaluator.rungs)
            + "."
        )
    if len(report.finalists) > 1:
        each = "; ".join(
            f"trial {f.trial}: {percent(f.val_accuracy)} -> {percent(f.finetuned_val_accuracy)}"
            for f in report.finalists
        )
        lines.append(
            f"The {len(report.finalists)} best candidates were each fine-tuned and the most accurate on the held-out "
            f"data afterwards was kept (search score -> after the fine-tune): {each}."
        )
    return lines


def _sensitivity_lines(report: Report) -> list[str]:
    """The sensitivity profile as a table: each decision's probed values and the held-out drop at each ([] without)."""
    profile = report.sensitivity
    if profile is None:
        return []
    drops = profile.drops()
    return [
        "",
        "## Sensitivity profile",
        "",
        f"Each decision lowered alone (others at their highest), scored after BN recalibration; the largest policy "
        f"scores {percent(profile.reference)}. Drop in points at each probed value:",
        "",
        *_markdown_table(
            ("decision", *(f"point {index + 1}" for index in range(max(map(len, drops.values()), default=0)))),
            "l" + "r" * max(map(len, drops.values()), default=0),
            [
                (f"`{name}`", *(f"{value:g}: {100 * drop:+.2f}" for (value, _), drop in zip(pairs, drops[name])))
                for name, pairs in profile.probes.items()
            ],
        ),
    ]


def write_report(run_dir: Path, report: Report) -> None:
    """Write a short ``report.md``, its figures and ``report.json`` (the full record) into ``run_dir``, each file whole
    or not at all; ``report.json`` comes last, so its presence means the report is complete."""
    lines = [
        f"# {title(report)}",
        "",
        run_sentence(report),
        *_scoring_lines(report),
        "",
        *_markdown_table(COLUMNS, "lrrr", comparison(report)),
        "",
        "Test accuracy is measured once, after the fine-tune; the search scored candidates on a held-out",
        "part of the training set. The compressed model is measured against the budget, never only predicted.",
        "Files: `model.pt` (reload with `autocomp.load`), `policy.json`, `study.db`.",
        "",
        "## Accuracy against budget use",
        "",
        "The candidates no other beats on both (measured-feasible, held-out accuracy; budget use is the",
        "largest fraction of a limit the candidate's measured cost takes):",
        "",
        *_markdown_table(
            ("trial", "held-out accuracy", "budget use"),
            "rrr",
            [(str(p.trial), percent(p.val_accuracy), percent(p.usage)) for p in report.pareto_front],
        ),
        "",
        "## Channels kept per layer",
        "",
        *_markdown_table(
            ("layer", "channels", "keep"),
            "lrr",
            [
                (f"`{name}`", f"{kept} / {total}", f"{kept / total:.2f}")
                for name, (kept, total) in report.best.channels.items()
            ],
        ),
    ]
    lines += _sensitivity_lines(report)
    try:
        figures = [f"![{caption}]({name})" for name, caption in write_figures(run_dir, report).items()]
    except ConfigError as missing:  # no matplotlib: the report without its figures, and why
        log.warning(f"[yellow]warning:[/] report.md without figures: {missing}")
        figures = [f"(no figures: {missing})"]
    lines += ["", "## Figures", "", *figures]
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    save_report(run_dir, report)


def write_figures(run_dir: Path, report: Report) -> dict[str, str]:
    """The report's PNG files in ``run_dir``: accuracy against budget use with the front, best so far, per-layer
    decisions; their names and titles. `ConfigError` without matplotlib (the ``plots`` extra)."""
    require("matplotlib", "plots", "the report's figures")
    from autocomp.app.report import plots

    best = report.best
    name = f"{report.model} on {report.data}, agent {report.agent}"
    plots.pareto_chart(
        run_dir / "pareto.png",
        [(h.usage, h.val_accuracy) for h in report.history],
        [(p.usage, p.val_accuracy) for p in report.pareto_front],
        {f"chosen (trial {best.trial})": (max(c.used for c in report.constraints), best.val_accuracy)},
        "budget use (largest fraction of a limit, measured)",
        f"Candidates: {name}",
        limit=1.0,
        reference=("baseline", report.baseline.val_accuracy),
    )
    scores = {h.trial: h.val_accuracy if h.feasible else None for h in report.history}
    plots.best_so_far_chart(
        run_dir / "progress.png",
        [scores.get(n) for n in range(max(scores) + 1)],
        f"Best feasible candidate so far: {name}",
    )
    channels, bits = best.channels, best.bits
    layers = list(dict.fromkeys([*channels, *bits]))
    panels = {
        "kept channels (fraction)": {
            "chosen": [channels[layer][0] / channels[layer][1] if layer in channels else 1.0 for layer in layers]
        }
    }
    if bits:
        panels["bits (0: floating point)"] = {
            kind: [bits.get(layer, (None, None))[index] or 0 for layer in layers]
            for index, kind in enumerate(("weights", "activations"))
        }
    plots.layer_chart(run_dir / "layers.png", layers, panels, f"Per-layer decisions of the chosen model: {name}")
    figures = {
        "pareto.png": "Held-out accuracy against budget use, with the Pareto front",
        "progress.png": "Held-out accuracy of each trial and the best so far",
        "layers.png": "Per-layer kept channels" + (" and bits" if bits else ""),
    }
    if report.sensitivity is not None:
        drops = report.sensitivity.drops()
        points = max(map(len, drops.values()), default=0)
        plots.layer_chart(
            run_dir / "sensitivity.png",
            list(drops),
            {"held-out drop (pt)": {f"point {i + 1}": [100 * d[i] for d in drops.values()] for i in range(points)}},
            f"Sensitivity profile: each decision lowered alone ({name})",
        )
        figures["sensitivity.png"] = "Held-out drop with each decision lowered alone (sensitivity profile)"
    return figures
