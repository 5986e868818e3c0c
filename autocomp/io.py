"""Save and load compressed models without pickling code.

A file holds plain data only, read back with ``torch.load(weights_only=True)``:

* models built by ``autocomp.zoo.create`` (pruned, factorized, resized or not) are stored as
  a recipe: the zoo factory and its arguments, every layer's channel counts, the low-rank
  factorizations, the input resize, and the state dict. Loading replays the recipe on a
  fresh zoo model and loads the weights: a trainable ``nn.Module`` again.
* any other model is stored as a ``torch.export`` program (graph and weights, batch size
  dynamic). Loading needs none of its class code and gives an inference-only module.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn

from autocomp import models
from autocomp.compress.resize import InputResize
from autocomp.errors import ConfigError
from autocomp.graph import ModelGraph

MODEL_FORMAT = "autocomp.model"
MODEL_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def export_program(model: nn.Module, example_inputs: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` in eval mode as a ``torch.export`` program whose batch size may vary."""
    batch = torch.export.Dim("batch", min=1)
    sample = example_inputs[:1].expand(2, *example_inputs.shape[1:])  # a batch of 1 would be specialized to 1
    with torch.no_grad():
        try:
            return torch.export.export(model.eval(), (sample,), dynamic_shapes=({0: batch},))
        except Exception as err:  # the exporter raises many kinds, all meaning "cannot capture this model"
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"the model cannot be exported with torch.export ({first}).") from None


def _recipe(model: nn.Module) -> dict | None:
    """How to rebuild ``model`` from the zoo, or None when it was not built there."""
    from autocomp.compress.lowrank import LowRank

    resize, inner = (list(model.size), model.model) if isinstance(model, InputResize) else (None, model)
    factory = models.factory_record(inner)
    if factory is None:
        return None
    channels, lowrank = {}, {}
    factorized = [name for name, module in inner.named_modules() if isinstance(module, LowRank)]
    for name, module in inner.named_modules():
        if isinstance(module, LowRank):
            channels[name] = [module.out_channels, module.in_channels]
            lowrank[name] = {"rank": module.rank, "scheme": module.scheme}
        elif isinstance(module, _LAYER_TYPES) and not any(name.startswith(f + ".") for f in factorized):
            channels[name] = [module.weight.shape[0], module.weight.shape[1]]
    return {"factory": factory, "channels": channels, "lowrank": lowrank, "resize": resize}


def save(model: nn.Module, path: str | os.PathLike, example_inputs: torch.Tensor) -> None:
    """Write ``model`` to ``path``; ``example_inputs`` is an input it accepts (any batch size)."""
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "input_shape": list(example_inputs.shape[1:])}
    recipe = _recipe(model)
    if recipe is not None:
        payload.update(recipe, state_dict=model.state_dict())
    else:
        buffer = io.BytesIO()
        torch.export.save(export_program(model, example_inputs), buffer)
        payload["program"] = buffer.getvalue()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


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
    if payload.get("version") not in _READABLE_VERSIONS:
        raise ConfigError(f"model file {path} has version {payload.get('version')!r}; this autocomp reads 1 and {MODEL_VERSION}.")
    if "program" in payload:
        return torch.export.load(io.BytesIO(payload["program"])).module()
    model = _rebuild(payload)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ConfigError(f"model file {path} does not match the architecture it names ({first}).") from None
    return model.eval()


def _rebuild(payload: dict) -> nn.Module:
    """The architecture a recipe describes, with placeholder weights."""
    from autocomp.compress.lowrank import factorized_shell

    factory = payload["factory"]
    model = models.create(factory["name"], **factory["kwargs"])
    graph = ModelGraph(model, torch.zeros(1, *payload["input_shape"]))
    channels = payload["channels"]
    kept = [channels[group.layers[0]][0] for group in graph.groups]
    graph.prune(kept, [-torch.arange(group.channels, dtype=torch.float32) for group in graph.groups])
    for name, spec in payload.get("lowrank", {}).items():
        model.set_submodule(name, factorized_shell(model.get_submodule(name), spec["rank"], spec["scheme"]))
    resize = payload.get("resize")
    return InputResize(model, tuple(resize)) if resize else model
