"""The baseline model: trained once, cached on disk by a hash of everything that defines it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autocomp import io
from autocomp.app.config import RunConfig
from autocomp.cache import cache_root
from autocomp.data import DataBundle
from autocomp.evaluate import accuracy
from autocomp.evaluate.memory import release_free_memory
from autocomp.files import write_text
from autocomp.imports import source_digest
from autocomp.locking import file_lock
from autocomp.logs import logger
from autocomp.models.user import file_digest, load_checkpoint
from autocomp.runtime import CPU, Runtime
from autocomp.train import train

log = logger(__name__)

BASELINE_FORMAT_VERSION = 1


@dataclass
class Baseline:
    model: nn.Module
    val_accuracy: float
    test_accuracy: float
    folder: Path


def baseline_key(config: RunConfig) -> str:
    """Hash of what defines the baseline: model (a user's: also its source file and checkpoint's bytes), data set and
    split, training settings and a reduced precision (not the data folder's path, the device or the data workers: a
    baseline is trained once whichever GPU or worker gets there first)."""
    data = config.data.model_dump(mode="json", exclude={"dir", "workers"}, exclude_none=True)  # added unset: old keys
    defining = {
        "version": BASELINE_FORMAT_VERSION,
        "model": config.model.model_dump(mode="json", exclude_none=True),
        "data": data,
        "train": config.baseline.defining(),
    }
    if config.precision != "fp32":
        defining["precision"] = config.precision
    if config.model.factory is not None:
        defining["source"] = source_digest(config.model.factory)
    data_files = config.data.fingerprint()
    if data_files:
        defining["data_files"] = data_files
    if config.model.checkpoint is not None:
        defining["checkpoint"] = file_digest(config.model.checkpoint)
        del defining["train"]  # nothing is trained
    return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


def prepare_baseline(config: RunConfig, data: DataBundle, runtime: Runtime = CPU) -> Baseline:
    """Load the cached baseline for ``config``, or build it on ``runtime``: from the user's checkpoint, else by training
    (resuming an interrupted training); another process preparing the same baseline is waited for. The model comes
    back on the CPU."""
    label = config.model.label.rpartition(":")[2]
    folder = cache_root() / "baselines" / f"{label}-{data.name}-{baseline_key(config)}"
    with file_lock(folder / ".lock"):  # processes sharing the cache (workers, GPUs of one machine) prepare it once
        return _load_or_build(config, data, folder, runtime)


def _load_or_build(config: RunConfig, data: DataBundle, folder: Path, runtime: Runtime) -> Baseline:
    model_path, meta_path = folder / "model.pt", folder / "meta.json"
    if model_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        log.info(f"baseline: cached at {folder}")
        return Baseline(
            io.load(model_path, trust_factory=config.model.factory), meta["val_accuracy"], meta["test_accuracy"], folder
        )

    settings = config.baseline
    torch.manual_seed(settings.seed)
    model = config.model.build(data.num_classes, data.in_channels)
    checkpoint = folder / "train.ckpt"
    if config.model.checkpoint is not None:
        load_checkpoint(model, config.model.checkpoint)
        log.info(f"baseline: weights from {config.model.checkpoint} (not trained)")
    else:
        train(model, data.train, settings, checkpoint=checkpoint, label="baseline", runtime=runtime)
        release_free_memory()  # the training's freed activations back to the system before the scoring passes
    model.to(runtime.device)
    batch = config.evaluator.batch_size  # the scoring batch the user sized for the device's memory
    val_accuracy, test_accuracy = accuracy(model, data.val, batch, runtime), accuracy(model, data.test, batch, runtime)
    model.cpu()
    io.save(model, model_path, data.example_input())
    meta = {"val_accuracy": val_accuracy, "test_accuracy": test_accuracy, "config": config.to_dict()}
    write_text(meta_path, json.dumps(meta, indent=2))  # last: with model.pt, the mark of a finished baseline
    checkpoint.unlink(missing_ok=True)
    return Baseline(model, val_accuracy, test_accuracy, folder)
