"""`autocomp` command line. User errors print one line and exit with code 2."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from autocomp.app.cli_errors import fail, stdout, user_errors
from autocomp.app.cli_models import cost, export, zoo
from autocomp.errors import AutocompError
from autocomp.logs import console, set_verbosity

if TYPE_CHECKING:
    from autocomp.app.report import Report

app = typer.Typer(add_completion=False, no_args_is_help=True, help="AutoML compression search for PyTorch.")


@app.callback()
def options(
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bars or log lines on stderr; results and errors still print."),
    ] = False,
) -> None:
    """AutoML compression search for PyTorch: smaller models within a MACs, size or latency budget."""
    set_verbosity(logging.ERROR if quiet else logging.INFO)  # quiet: no progress or warning lines
    console.quiet = quiet  # no progress bars


def _summary(report: Report) -> Table:
    """The report's comparison (`summary.comparison`) as a table, under its title and run sentence."""
    from autocomp.app.report.summary import COLUMNS, comparison, run_sentence, title

    table = Table(title=escape(title(report)), caption=escape(run_sentence(report)))
    for column in COLUMNS:
        table.add_column(column, justify="right" if column else "left")
    for row in comparison(report):
        table.add_row(*map(escape, row))
    return table


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML run config, e.g. configs/fmnist_resnet20.yaml.")
]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set search.trials=10.")]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where models train and are scored: auto (a GPU when there is one; LOCAL_RANK picks which), cpu, "
        "cuda or cuda:N. Same as --set device=...",
    ),
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage", help="Shared Optuna study: postgresql://user@host/db, sqlite:///file.db or a journal file path."
    ),
]


def _runner_overrides(
    runner: str | None, address: str | None, storage: str | None, device: str | None = None
) -> list[str]:
    given = {"runner.kind": runner, "runner.address": address, "runner.storage": storage, "device": device}
    return [f"{key}={value}" for key, value in given.items() if value is not None]


@app.command()
def search(
    config: ConfigOption,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<config name>).")] = None,
    overrides: SetOption = None,
    runner: Annotated[str | None, typer.Option("--runner", help="local (default) or ray.")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster to join (default: a local one).")
    ] = None,
    storage: StorageOption = None,
    device: DeviceOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check the config and print the space, its size, the "
            "baseline's cost and the smallest reachable; write nothing.",
        ),
    ] = False,
) -> None:
    """Search per-layer pruning ratios under the config's budget, fine-tune the best, write the report.

    Example: autocomp search --config configs/fmnist_resnet20.yaml --out runs/demo --set search.trials=20

    On a Ray cluster: --runner ray --address HOST:6379. With --storage URL, `autocomp worker` processes
    anywhere can share the search; this command waits for all trials, then fine-tunes the best.
    """
    from autocomp.app.config import load_config
    from autocomp.app.search_loop import search as run_search

    with user_errors():
        run_config = load_config(config, [*(overrides or []), *_runner_overrides(runner, address, storage, device)])
        if dry_run:
            from autocomp.app.inspection import preview_search

            stdout.print(_preview_table(preview_search(run_config)))
            return
        result = run_search(run_config, out if out is not None else Path("runs") / config.stem)
    stdout.print(_summary(result.report))
    stdout.print(f"run folder: {result.run_dir}  (report.md, model.pt, policy.json, study.db)")


def _preview_table(preview) -> Table:
    table = Table(title="autocomp search --dry-run: nothing was trained or written", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    kinds = ", ".join(f"{count} {kind}" for kind, count in preview.kinds.items())
    base = preview.baseline
    table.add_row("space", f"{preview.decisions} decisions ({kinds}); {preview.size}")
    table.add_row("budget", "; ".join(preview.constraints))
    table.add_row("baseline", f"{base.macs:,} MACs, {base.params:,} params, {base.size_bytes:,} bytes")
    table.add_row("largest policy", preview.largest)
    table.add_row("smallest policy", f"{preview.smallest} ({preview.smallest_usage:.0%} of the budget)")
    return table


@app.command()
def worker(
    config: ConfigOption, storage: StorageOption = None, overrides: SetOption = None, device: DeviceOption = None
) -> None:
    """Evaluate trials of a search shared through an Optuna storage, until none is left.

    Start the search with `autocomp search --config F --storage URL` (it plans the trials, works
    too, and fine-tunes the best at the end), then any number of workers with the same config,
    one per GPU with --device cuda:N (or --device auto under a launcher that sets LOCAL_RANK):

    Example: autocomp worker --config configs/fmnist_resnet20.yaml --storage postgresql://autocomp@db-host/autocomp --device cuda:1
    """
    from autocomp.app.config import load_config
    from autocomp.app.runners.workers import work

    with user_errors("this worker's trial is retried by another worker after the grace period."):
        evaluated = work(load_config(config, [*(overrides or []), *_runner_overrides(None, None, storage, device)]))
    stdout.print(f"worker done: {evaluated} trials evaluated here.")


@app.command()
def tune(
    tune_file: Annotated[
        Path, typer.Argument(help="YAML tune file: the run config, the keys to tune and their ranges.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Tune folder (default: runs/tune-<file name>).")
    ] = None,
    storage: StorageOption = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a tune file key: --set trials=40.")
    ] = None,
) -> None:
    """Tune the search's own settings: an Optuna study whose trials are small searches (or fine-tunes of one policy),
    scored by the fine-tuned model's accuracy on held-out training data (never the test set).

    Example: autocomp tune configs/tune/fmnist_resnet20.yaml --out runs/tune

    Several processes, on any machines, can share one tuning: give each the same --storage URL.
    """
    from autocomp.app.config.tune import load_tune_config
    from autocomp.app.tuning import tune as run_tune

    with user_errors():
        result = run_tune(
            load_tune_config(tune_file, overrides or []),
            out if out is not None else Path("runs") / f"tune-{tune_file.stem}",
            storage,
        )
    stdout.print(_tune_table(result.summary))
    best = result.summary["best"]
    if best is not None:
        stdout.print(f"best: trial {best['trial']}; search with: " + " ".join(f"--set {item}" for item in best["set"]))
    stdout.print(f"tune folder: {result.out}  (tune.json, tune.db, trials/)")


def _tune_table(summary: dict) -> Table:
    rows = sorted(summary["all"], key=lambda row: (row["value"] is None, -(row["value"] or 0.0)))
    keys = list(rows[0]["params"]) if rows else []
    table = Table(
        title=f"autocomp tune: {summary['complete']} of {summary['trials']} trials complete",
        caption=f"score: {summary['objective']}",
    )
    for column in ("trial", "held-out accuracy", *keys, "state"):
        table.add_column(column, justify="left" if column == "state" else "right")
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:.2%}"
        table.add_row(str(row["trial"]), value, *(_param_text(row["params"].get(k)) for k in keys), row["state"])
    return table


def _param_text(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


@app.command()
def dashboard(
    run: Annotated[Path, typer.Argument(help="A run folder (its study.db, or the storage its config names).")],
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8080,
    storage: StorageOption = None,
) -> None:
    """Serve optuna-dashboard for a run's study on 127.0.0.1 (every agent's trials, AMC's included).

    Example: autocomp dashboard runs/demo --port 8080, then open http://127.0.0.1:8080
    """
    from autocomp.app.runners.dashboard import serve

    try:
        serve(run, port, storage)
    except AutocompError as err:
        fail(err)
    except KeyboardInterrupt:
        raise typer.Exit(code=0) from None


@app.command()
def evaluate(
    config: ConfigOption,
    policy: Annotated[Path, typer.Option("--policy", "-p", help="A policy.json (a run's, or written by hand).")],
    overrides: SetOption = None,
    device: DeviceOption = None,
) -> None:
    """Score one policy as the search scores a candidate (compress, recalibrate, proxy fine-tune, held-out accuracy).

    Example: autocomp evaluate --config configs/fmnist_resnet20.yaml --policy runs/demo/policy.json
    """
    from autocomp.app.config import load_config
    from autocomp.app.inspection import score_policy
    from autocomp.policy import Policy

    with user_errors("nothing was written."):
        scored = score_policy(
            load_config(config, [*(overrides or []), *_runner_overrides(None, None, None, device)]), Policy.load(policy)
        )
    result, cost = scored.result, scored.result.measured_cost
    stdout.print(f"held-out accuracy {result.accuracy:.2%} (loss {result.loss:.3f}) in {result.seconds:.1f} s")
    stdout.print(f"MACs {cost.macs:,}  params {cost.params:,}  size {cost.size_bytes:,} bytes")
    stdout.print(f"budget: {scored.budget}: {'within' if scored.within_budget else 'OVER'} the budget")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="A finished run folder (its report.json).")]) -> None:
    """Write a run's report.md and its figures (PNG) again from its report.json.

    Example: autocomp report runs/demo
    """
    from autocomp.app.report import load_report, write_report

    with user_errors("the report may be incomplete; run the command again."):
        write_report(run, load_report(run))
    stdout.print(f"report: {run / 'report.md'} (pareto.png, progress.png, layers.png)")


for command in (cost, export, zoo):
    app.command()(command)


def main() -> None:
    app(prog_name="autocomp")


if __name__ == "__main__":
    main()
