"""Save and load compressed models without pickling code.

The file holds plain data only: the zoo factory that built the original model and its
arguments, the example input shape, every conv/linear layer's channel counts and the state
dict. Loading rebuilds the factory model, removes channels until the layers match, then loads
the weights with ``torch.load(weights_only=True)``: no class code in the file, nothing
arbitrary unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from autocomp import models
from autocomp.errors import ConfigError
from autocomp.graph import ModelGraph

MODEL_FORMAT = "autocomp.model"
MODEL_VERSION = 1


def save(model: nn.Module, path: str | os.PathLike, example_inputs: torch.Tensor) -> None:
    """Write ``model`` (built by ``autocomp.zoo.create``, pruned or not) to ``path``."""
    record = models.factory_record(model)
    if record is None:
        raise ConfigError("this model was not built by autocomp.zoo.create, so save() cannot record how to rebuild it.")
    channels = {
        name: [module.weight.shape[0], module.weight.shape[1]]
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    }
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "factory": record,
        "input_shape": list(example_inputs.shape[1:]),
        "channels": channels,
        "state_dict": model.state_dict(),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _keep_first(group) -> torch.Tensor:
    """A criterion that keeps the lowest-indexed channels (the weights are overwritten after)."""
    count = len(group[0].idxs)
    return -torch.arange(count, dtype=torch.float32)


def load(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved at ``path`` (in eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: torch raises many kinds
        raise ConfigError(f"model file {path} cannot be read as an autocomp model ({type(err).__name__}).") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ConfigError(f"model file {path} is not an autocomp model file (no \"format\": \"{MODEL_FORMAT}\").")
    if payload.get("version") != MODEL_VERSION:
        raise ConfigError(f"model file {path} has version {payload.get('version')!r}; this autocomp reads {MODEL_VERSION}.")
    factory = payload["factory"]
    model = models.create(factory["name"], **factory["kwargs"])
    example = torch.zeros(1, *payload["input_shape"])
    graph = ModelGraph(model, example)
    channels = payload["channels"]
    kept = [channels[group.layers[0]][0] for group in graph.groups]
    graph.prune(kept, _keep_first)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ConfigError(f"model file {path} does not match the architecture it names ({first}).") from None
    return model.eval()
