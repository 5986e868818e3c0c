"""The report's figures as PNG files: per-layer decisions (as in AMC's and HAQ's figures), accuracy against cost with
the Pareto front, and the best score so far. matplotlib is imported here only, with its file-only backend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autocomp.files import replacing

WIDTH_INCHES = 9.0
DPI = 110


@contextmanager
def _figure(path: Path, height: float, rows: int = 1) -> Iterator[Any]:
    """A figure of ``rows`` stacked axes, saved to ``path`` (parents created; the file whole or not at all) and closed
    when the block ends."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, 1, figsize=(WIDTH_INCHES, height), squeeze=False)
    try:
        yield [row[0] for row in axes]
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as file:
            figure.savefig(file, format=path.suffix.lstrip(".") or None, dpi=DPI)
    finally:
        plt.close(figure)


def layer_chart(
    path: str | Path, layers: Sequence[str], panels: Mapping[str, Mapping[str, Sequence[float]]], title: str
) -> Path:
    """Grouped bars per layer, one panel per quantity (e.g. "kept channels (fraction)", "weight bits"), one bar colour
    per policy: ``panels[ylabel][policy name]`` holds one value per layer, in the order of ``layers``."""
    path = Path(path)
    for ylabel, series in panels.items():
        for name, values in series.items():
            if len(values) != len(layers):
                raise ValueError(f"{name!r} has {len(values)} {ylabel} values for {len(layers)} layers")
    height = 1.0 + 2.6 * len(panels)
    with _figure(path, height, rows=len(panels)) as axes:
        for axis, (ylabel, series) in zip(axes, panels.items()):
            width = 0.8 / max(1, len(series))
            for index, (name, values) in enumerate(series.items()):
                offsets = [position + (index - (len(series) - 1) / 2) * width for position in range(len(layers))]
                axis.bar(offsets, values, width=width, label=name)
            axis.set_ylabel(ylabel)
            axis.set_ylim(
                0, 1.2 * max((max(values, default=0) for values in series.values()), default=1) or 1
            )  # legend room
            axis.set_xticks(range(len(layers)))
            axis.set_xticklabels(layers if axis is axes[-1] else [], rotation=60, ha="right", fontsize=7)
            axis.grid(axis="y", alpha=0.3)
            axis.legend(fontsize=8, ncol=max(1, len(series)))
        axes[0].set_title(title)
    return path


def pareto_chart(
    path: str | Path,
    points: Sequence[tuple[float, float]],
    front: Sequence[tuple[float, float]],
    marked: Mapping[str, tuple[float, float]],
    xlabel: str,
    title: str,
    limit: float | None = None,
    reference: tuple[str, float] | None = None,
) -> Path:
    """Accuracy (y) against cost (x) of every candidate, the Pareto front as a line, ``marked`` points (the chosen
    model, other agents' results) labelled, the budget's ``limit`` as a dashed vertical line and a ``reference``
    accuracy (the baseline's, whose cost would stretch the axis far beyond the candidates) as a dotted horizontal one."""
    path = Path(path)
    with _figure(path, 4.8) as (axis,):
        if limit is not None:
            axis.axvline(limit, linestyle="--", color="tab:red", alpha=0.6, label="limit")
        if reference is not None:
            label, accuracy = reference
            axis.axhline(accuracy, linestyle=":", color="tab:green", label=f"{label} {100 * accuracy:.2f}%")
        if points:
            axis.scatter(*zip(*points), s=14, alpha=0.5, color="tab:gray", label="candidates")
        if front:
            axis.plot(*zip(*sorted(front)), marker="o", color="tab:blue", label="Pareto front")
        for label, (x, y) in marked.items():
            axis.scatter([x], [y], s=60, marker="*", zorder=3)
            axis.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("accuracy")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return path


def best_so_far_chart(path: str | Path, values: Sequence[float | None], title: str) -> Path:
    """Each trial's score (None: failed or over the budget) and the best score up to it, by trial number."""
    path = Path(path)
    with _figure(path, 3.6) as (axis,):
        scored = [(number, value) for number, value in enumerate(values) if value is not None]
        best, running = [], None
        for number, value in scored:
            running = value if running is None else max(running, value)
            best.append((number, running))
        if scored:
            axis.scatter(*zip(*scored), s=12, alpha=0.5, color="tab:gray", label="trial")
            axis.step(*zip(*best), where="post", color="tab:blue", label="best so far")
        axis.set_xlabel("trial")
        axis.set_ylabel("held-out accuracy")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return path
