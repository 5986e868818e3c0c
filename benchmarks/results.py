"""Shared by the benchmark scripts: the machine's description and appending a table to RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from autocomp.app.baseline import prepare_baseline
from autocomp.app.config import RunConfig, load_config
from autocomp.data import DataBundle

RESULTS = Path(__file__).with_name("RESULTS.md")


def trained_baseline(config_path: str, overrides: Sequence[str] = ()) -> tuple[RunConfig, DataBundle, torch.nn.Module]:
    """The config at ``config_path`` (with ``--set``-style ``overrides``), its data and its trained baseline (cached;
    trained first if need be), in eval mode."""
    config = load_config(config_path, list(overrides))
    data = config.data.load()
    return config, data, prepare_baseline(config, data).model.eval()


def machine() -> str:
    """CPU, cores, torch version and threads (and the GPU, when there is one), for the record."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{platform.machine()} {platform.processor() or 'cpu'}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads{gpu}"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines of a markdown table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows],
    ]


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print right-aligned columns to the terminal."""
    cells = [list(map(str, header)), *[list(map(str, row)) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))


def append_section(title: str, command: str, body: Sequence[str]) -> None:
    """Append ``## title (date)`` with the command and the machine, then ``body`` lines, to RESULTS.md."""
    lines = [
        f"\n## {title} ({datetime.date.today().isoformat()})",
        "",
        f"Command: `{command}`.",
        f"Machine: {machine()}.",
        "",
        *body,
    ]
    with RESULTS.open("a") as results:
        results.write("\n".join(lines) + "\n")
