"""`autocomp export`: a run's compressed model for deployment, checked to compute what the saved model computes.

Two formats: ``torch`` (a ``torch.export`` program, ``model.pt2``) and ``onnx`` (``model.onnx``, quantized layers in
QDQ form, checked in ONNX Runtime); both beside ``model.pt`` and ``policy.json``, both with a free batch size. With
``int8``, ``model.onnx`` is the fast int8 form instead (`autocomp.deploy.int8_onnx`), calibrated on the first
training images of the run's own data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch

from autocomp import io
from autocomp.app.run_folder import CONFIG_NAME, check_creatable
from autocomp.errors import AutocompError, ConfigError
from autocomp.files import replacing
from autocomp.settings import OneOf, check

TOLERANCE = 1e-4
"""The largest difference allowed between the exported program's outputs and the model's."""
CHECK_BATCH = 8
ONNX_CHECK_BATCH = 64
"""Inputs an ONNX export runs on in ONNX Runtime beside the model: enough for its top-1 agreement to mean something."""
FORMATS = ("torch", "onnx")
CALIBRATION_BATCHES, CALIBRATION_BATCH = 4, 32
"""The int8 form's calibration: this many batches of the run's first training images (the next batch checks it)."""
PROGRAM_FILES = {"torch": "model.pt2", "onnx": "model.onnx"}


class ExportError(AutocompError):
    """The exported program does not reproduce the model's outputs."""


@dataclass(frozen=True)
class ExportSettings:
    """What `export_run` writes: the program's format (``torch``: torch.export, ``onnx``: ONNX, QDQ when quantized),
    and with ``int8`` (``onnx`` only) ONNX Runtime's fast int8 form."""

    format: Annotated[str, OneOf(FORMATS)] = "torch"
    int8: bool = False

    def __post_init__(self) -> None:
        check(self, "export")
        if self.int8 and self.format != "onnx":
            raise ConfigError(f"export int8 needs format 'onnx' (ONNX Runtime's int8 form), not {self.format!r}.")


@dataclass(frozen=True)
class Exported:
    files: list[Path]
    max_difference: float
    """The largest absolute difference of the program's outputs from the model's on a random batch."""
    top1: float | None = None
    """ONNX: the share of the check batch on which ONNX Runtime and PyTorch pick the same class."""


def export_run(
    run_dir: Path, out: Path, trust_factory: str | None = None, settings: ExportSettings = ExportSettings()
) -> Exported:
    """Write ``run_dir``'s model (``model.pt``), its policy and its program (``model.pt2``: torch.export, or
    ``model.onnx``; batch size free) to ``out``; refuse to overwrite any of them. A model built by a user's factory is
    checked against its saved program unless ``trust_factory`` (its import path) lets it be rebuilt (see
    `autocomp.io.load`)."""
    model_file, policy_file = run_dir / "model.pt", run_dir / "policy.json"
    if not model_file.is_file():
        raise ConfigError(f"{run_dir} holds no model.pt; give the folder of a finished `autocomp search`.")
    if settings.int8 and not (run_dir / CONFIG_NAME).is_file():
        raise ConfigError(
            f"{run_dir} holds no {CONFIG_NAME}, whose data calibrates the int8 form; give the folder of a finished "
            "`autocomp search`."
        )
    check_creatable(out, "export folder")
    program_file = out / PROGRAM_FILES[settings.format]
    targets = [out / "model.pt", program_file] + ([out / "policy.json"] if policy_file.is_file() else [])
    present = [str(path) for path in targets if path.exists()]
    if present:
        raise ConfigError(f"{present[0]} exists already; choose another --out (export never overwrites a file).")
    model, example = io.load(model_file, trust_factory=trust_factory), io.example_input(model_file)
    if settings.format == "onnx":
        calibration = _training_batches(run_dir / CONFIG_NAME) if settings.int8 else None
        exported = _onnx(model, example, program_file, targets, calibration)
    else:
        exported = _torch_export(model, example, model_file, program_file, targets)
    shutil.copyfile(model_file, out / "model.pt")
    if policy_file.is_file():
        shutil.copyfile(policy_file, out / "policy.json")
    return exported


def _torch_export(
    model: torch.nn.Module, example: torch.Tensor, model_file: Path, program_file: Path, targets: list[Path]
) -> Exported:
    """Check the torch.export program of ``model`` and write it to ``program_file``."""
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
    program_file.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, program_file)
    return Exported(targets, difference)


def _training_batches(config_file: Path) -> list[torch.Tensor]:
    """The first CALIBRATION_BATCHES + 1 batches of training images of the run config's data."""
    from autocomp.app.config import load_config
    from autocomp.data.batching import iterate_batches

    train = load_config(config_file).data.load().train
    batches = iterate_batches(train, CALIBRATION_BATCH)
    return [images for (images, _), _ in zip(batches, range(CALIBRATION_BATCHES + 1))]


def _onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    program_file: Path,
    targets: list[Path],
    calibration: list[torch.Tensor] | None,
) -> Exported:
    """Check the ONNX export of ``model`` (the int8 form, calibrated on all ``calibration`` batches but the last, which
    checks it) in ONNX Runtime and write it to ``program_file``."""
    from autocomp.deploy import OnnxMismatchError, check_onnx, checked_onnx, int8_onnx
    from autocomp.deploy.ort import QDQ_TOLERANCE

    if isinstance(model, torch.fx.GraphModule):
        raise ConfigError(
            "this model loads as its torch.export program, which the ONNX export does not take; pass --trust-factory "
            "to rebuild it, or use --format torch."
        )
    batch = torch.randn(ONNX_CHECK_BATCH, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    try:
        if calibration is None:
            model_bytes, agreement = checked_onnx(model, example, batch)
        else:  # calibrated on real images, so checked on them: random inputs would leave its ranges
            model_bytes = int8_onnx(model, example, calibration[:-1])
            agreement = check_onnx(model, model_bytes, calibration[-1], QDQ_TOLERANCE)
    except OnnxMismatchError as err:
        raise ExportError(str(err)) from None
    program_file.parent.mkdir(parents=True, exist_ok=True)
    with replacing(program_file) as file:
        file.write(model_bytes)
    return Exported(targets, agreement.max_difference, agreement.top1)
