"""Check a finished run independently and append it to benchmarks/RESULTS.md.

Re-measures the saved model.pt (MACs, test accuracy) instead of trusting report.json, prints
a table and appends it with the command, the machine and the date.

    python benchmarks/record_run.py runs/demo --command "make demo" --wall-seconds 640
"""

from __future__ import annotations

import argparse
from pathlib import Path

from results import append_section

import autocomp
from autocomp.app.config import RunConfig
from autocomp.app.report import load_report
from autocomp.evaluate import accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", default="make demo", help="the command that produced the run")
    parser.add_argument(
        "--wall-seconds", type=float, default=None, help="wall time of the whole command, installs included"
    )
    args = parser.parse_args()

    report = load_report(args.run_dir)
    config = RunConfig.model_validate(report.config)
    data = config.data.load()
    model = autocomp.load(args.run_dir / "model.pt")
    macs = autocomp.measure(model, data.example_input()).macs
    test_accuracy = accuracy(model, data.test)
    base, best = report.baseline, report.best
    rows = [
        ("baseline test accuracy", f"{base.test_accuracy:.2%}"),
        ("compressed test accuracy (model.pt re-evaluated)", f"{test_accuracy:.2%}"),
        ("accuracy change", f"{100 * (test_accuracy - base.test_accuracy):+.2f} pt"),
        ("MACs, baseline -> model.pt re-measured", f"{base.macs:,} -> {macs:,} ({macs / base.macs:.1%})"),
        ("budget", "; ".join(f"{c.metric} <= {c.limit:,.0f}" for c in report.constraints)),
        ("params", f"{base.params:,} -> {best.params:,}"),
        (
            f"CPU latency, batch {report.latency.batch_size}",
            f"{base.latency_ms:.1f} ms -> {best.latency_ms:.1f} ms ({base.latency_ms / best.latency_ms:.2f}x)",
        ),
        ("trials", f"{report.trials} ({report.agent})"),
        ("autocomp search wall time (baseline training included unless cached)", f"{report.wall_seconds:.0f} s"),
    ]
    if args.wall_seconds is not None:
        rows.append(("whole command wall time", f"{args.wall_seconds:.0f} s ({args.wall_seconds / 60:.1f} min)"))
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))

    budget = ", ".join(f"{c.metric} <= {c.max:.0%}" for c in report.constraints)
    title = f"{report.model} on {report.data}, {budget}"
    command = f"{args.command}`; checked with `python benchmarks/record_run.py {args.run_dir}"
    append_section(title, command, ["| | |", "|---|---|", *[f"| {name} | {value} |" for name, value in rows]])


if __name__ == "__main__":
    main()
