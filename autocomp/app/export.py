"""`autocomp export`: a run's compressed model for deployment, checked to compute what the saved model computes."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from autocomp import io
from autocomp.app.run_folder import check_creatable
from autocomp.errors import AutocompError, ConfigError

TOLERANCE = 1e-4
"""The largest difference allowed between the exported program's outputs and the model's."""
CHECK_BATCH = 8


class ExportError(AutocompError):
    """The exported program does not reproduce the model's outputs."""


@dataclass(frozen=True)
class Exported:
    files: list[Path]
    max_difference: float
    """The largest absolute difference of the program's outputs from the model's on a random batch."""


def export_run(run_dir: Path, out: Path, trust_factory: str | None = None) -> Exported:
    """Write ``run_dir``'s model (``model.pt``), its policy and a ``torch.export`` program (``model.pt2``, batch size
    free) to ``out``; refuse to overwrite any of them. A model built by a user's factory is checked against its saved
    program unless ``trust_factory`` (its import path) lets it be rebuilt (see `autocomp.io.load`)."""
    model_file, policy_file = run_dir / "model.pt", run_dir / "policy.json"
    if not model_file.is_file():
        raise ConfigError(f"{run_dir} holds no model.pt; give the folder of a finished `autocomp search`.")
    check_creatable(out, "export folder")
    targets = [out / "model.pt", out / "model.pt2"] + ([out / "policy.json"] if policy_file.is_file() else [])
    present = [str(path) for path in targets if path.exists()]
    if present:
        raise ConfigError(f"{present[0]} exists already; choose another --out (export never overwrites a file).")
    model, example = io.load(model_file, trust_factory=trust_factory), io.example_input(model_file)
    if isinstance(model, torch.fx.GraphModule):  # loaded from the file's own program: export that one
        program = io.load_program(model_file)
    else:
        program = io.export_program(model, example)
    batch = torch.randn(CHECK_BATCH, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((program.module()(batch) - model(batch)).abs().max())
    if not difference <= TOLERANCE:
        raise ExportError(
            f"the exported program's outputs differ from the model's by {difference:.3g} (allowed: "
            f"{TOLERANCE}); nothing was written."
        )
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out / "model.pt2")
    shutil.copyfile(model_file, out / "model.pt")
    if policy_file.is_file():
        shutil.copyfile(policy_file, out / "policy.json")
    return Exported(targets, difference)
