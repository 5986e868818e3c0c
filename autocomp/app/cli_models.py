"""The commands on model files: `autocomp cost`, `autocomp export` and `autocomp zoo` (registered by cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from autocomp.app.cli_errors import stdout, user_errors
from autocomp.errors import ConfigError

TrustFactory = Annotated[
    str | None,
    typer.Option(
        "--trust-factory",
        help="Rebuild a model made by your factory (package.module:function) by importing it; without it "
        "such a model loads as its torch.export program.",
    ),
]


def cost(
    model_file: Annotated[Path, typer.Argument(help="A model saved by autocomp (a run's model.pt).")],
    latency: Annotated[
        bool, typer.Option("--latency", help="Also time a forward pass at batch 1 on this CPU.")
    ] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="Threads for the latency timing.")] = None,
    trust_factory: TrustFactory = None,
) -> None:
    """A model's MACs, parameters, size and bit operations, and its layer table.

    Example: autocomp cost runs/demo/model.pt --latency
    """
    from autocomp import io
    from autocomp.app.inspection import layer_costs, model_cost
    from autocomp.cost.macs import COUNTED_TYPES

    with user_errors("nothing was written."):
        model, example = io.load(model_file, trust_factory=trust_factory), io.example_input(model_file)
        if not any(isinstance(module, COUNTED_TYPES) for module in model.modules()):
            factory = io.factory_import(model_file)
            hint = f"pass --trust-factory {factory} to rebuild it" if factory else "it was saved without a recipe"
            raise ConfigError(
                f"model file {model_file} loads as a torch.export program, whose layers autocomp cannot count; {hint}."
            )
        (rows, whole), total = layer_costs(model, example), model_cost(model, example, latency, threads)
    table = Table(title=f"{model_file}: input {'x'.join(map(str, example.shape[1:]))}")
    for column in ("layer", "kind", "channels", "kernel", "stride", "output", "MACs", "share"):
        table.add_column(column, justify="right" if column in ("MACs", "share") else "left")
    for row in rows:
        table.add_row(
            row.name,
            row.kind,
            row.channels,
            row.kernel,
            row.stride,
            row.output,
            f"{row.macs:,}",
            f"{row.macs / max(1, total.macs):.1%}",
        )
    stdout.print(table)
    for line in whole:
        stdout.print(line, markup=False)
    summary = f"MACs {total.macs:,}  params {total.params:,}  size {total.size_bytes:,} bytes  BOPs {total.bops:,}"
    if total.latency_ms is not None:
        summary += f"  latency {total.latency_ms:.2f} ms (batch 1)"
    stdout.print(summary)


def export(
    run: Annotated[Path, typer.Argument(help="A finished run folder (its model.pt and policy.json).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write (default: RUN/export).")] = None,
    trust_factory: TrustFactory = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="torch: model.pt2 (torch.export); onnx: model.onnx (quantized layers as QuantizeLinear/"
            "DequantizeLinear), checked in ONNX Runtime.",
        ),
    ] = "torch",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="With --format onnx: ONNX Runtime's fast int8 form (BatchNorm folded, uint8 between fused int8 "
            "kernels, a quantized model's learned steps kept), calibrated on the run's first training images.",
        ),
    ] = False,
) -> None:
    """Export a run's compressed model: model.pt (autocomp.load), policy.json and model.pt2 (torch.export) or
    model.onnx (--format onnx), any batch size, checked to reproduce the model's outputs.

    Example: autocomp export runs/demo --out deploy/   then in Python: torch.export.load("deploy/model.pt2").module()
    Example: autocomp export runs/demo --format onnx --out deploy/   then onnxruntime.InferenceSession("deploy/model.onnx")
    Example: autocomp export runs/demo --format onnx --int8 --out deploy/   (the fastest on a CPU)
    """
    from autocomp.app.export import ExportSettings, export_run

    with user_errors("nothing was written."):
        settings = ExportSettings(format, int8)
        exported = export_run(run, out if out is not None else run / "export", trust_factory, settings)
    for path in exported.files:
        stdout.print(f"wrote {path}")
    runtime = "ONNX Runtime's" if settings.format == "onnx" else "the program's"
    line = f"{runtime} outputs differ from the model's by at most {exported.max_difference:.2g} on a random batch"
    if exported.top1 is not None:
        line += f", same top-1 on {exported.top1:.0%} of it"
    stdout.print(line)


def zoo() -> None:
    """List the models of the built-in zoo."""
    from autocomp import models

    for name in models.names():
        stdout.print(name)
