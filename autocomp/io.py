"""Save and load compressed models without pickling code.

A file holds plain data only, read back with ``torch.load(weights_only=True)``:

* models built by ``autocomp.zoo.create`` (pruned, factorized, quantized, resized or not) are
  stored as a recipe: the zoo factory and its arguments, every layer's channel counts, the
  low-rank factorizations, each quantized layer's bits and schemes, the input resize, and
  the state dict (which holds the activation quantizers' learned steps). Loading replays the recipe on a
  fresh zoo model and loads the weights: a trainable ``nn.Module`` again.
* models built by a user's factory (``model.factory: package.module:function``) are stored as the
  same kind of recipe, naming that import path, and also as a ``torch.export`` program when they
  can be exported. Importing the module runs its code, so the recipe is replayed only when the
  caller trusts that path (``load(path, trust_factory="package.module:function")``); otherwise
  loading gives the program.
* any other model is stored as a ``torch.export`` program (graph and weights, batch size
  dynamic). Loading needs none of its class code and gives an inference-only module.

A model file is written whole or not at all (`autocomp.files.save_state`).
"""

from __future__ import annotations

import io
import json
import os
import types
import zipfile
from pathlib import Path, PurePosixPath
from typing import cast

import torch
from torch import nn

from autocomp import models
from autocomp.compress.lowrank import LowRank, factorized_shell
from autocomp.compress.quantize import QUANTIZED_TYPES, quantized_layer
from autocomp.compress.resize import InputResize
from autocomp.cost.macs import COUNTED_TYPES
from autocomp.errors import ConfigError
from autocomp.files import save_state
from autocomp.graph import ModelGraph
from autocomp.models.user import build_user_model, read_weights
from autocomp.modes import evaluating

MODEL_FORMAT = "autocomp.model"
MODEL_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)


def export_program(model: nn.Module, example_inputs: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` in eval mode as a ``torch.export`` program whose batch size may vary."""
    batch = torch.export.Dim("batch", min=1)
    sample = example_inputs[:1].expand(2, *example_inputs.shape[1:])  # a batch of 1 would be specialized to 1
    try:
        with evaluating(model), torch.no_grad():
            return torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    except Exception as err:  # the exporter raises many kinds, all meaning "cannot capture this model"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"the model cannot be exported with torch.export ({first}).") from None


_PROGRAM_ENTRIES = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")


def _uses_pickle(config: object) -> bool:
    """Whether a weights/constants config asks for any payload to be unpickled."""
    if isinstance(config, dict):
        return config.get("use_pickle") is True or any(_uses_pickle(value) for value in config.values())
    return isinstance(config, list) and any(_uses_pickle(value) for value in config)


def _check_program(data: bytes, path: Path) -> None:
    """Refuse a ``torch.export`` archive holding anything ``torch.export.load`` would unpickle.

    Our programs hold a graph (JSON), raw weight bytes and sample inputs readable with
    ``weights_only=True``; pickled weights or constants, custom or opaque objects and compiled
    code are what a crafted file would use to run code, so they are refused before loading.
    """

    def refuse(what: str) -> ConfigError:
        return ConfigError(f"model file {path} holds {what}, which autocomp does not load (it could run code).")

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ConfigError(f"model file {path} holds a program that is not a torch.export archive.") from None
    for name in archive.namelist():
        entry = str(PurePosixPath(*PurePosixPath(name).parts[1:]))  # drop the archive's top folder
        if entry in _PROGRAM_ENTRIES or (entry.startswith("models/") and entry.endswith(".json")):
            continue
        if entry.startswith(("data/weights/", "data/constants/")):
            base = PurePosixPath(entry).name
            if base.endswith("_config.json"):
                try:
                    pickled = _uses_pickle(json.loads(archive.read(name)))
                except json.JSONDecodeError:
                    raise refuse(f"an unreadable {base!r}") from None
                if pickled:
                    raise refuse("pickled weights or constants")
            elif not base.startswith(("weight_", "tensor_")):
                raise refuse(f"the object {base!r}")
            continue
        if entry.startswith("data/sample_inputs/") and entry.endswith(".pt"):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception:  # anything but plain tensors
                raise refuse("sample inputs that are not plain tensors") from None
            continue
        raise refuse(f"the unexpected entry {entry!r}")


def _recipe(model: nn.Module) -> dict | None:
    """How to rebuild ``model`` from the zoo, or None when it was not built there."""
    resize, inner = (list(model.size), model.model) if isinstance(model, InputResize) else (None, model)
    factory = models.factory_record(inner)
    if factory is None:
        return None
    channels, lowrank = {}, {}
    quantized = {
        name: module.quantization_spec()
        for name, module in inner.named_modules()
        if isinstance(module, QUANTIZED_TYPES)
    }
    factorized = [name for name, module in inner.named_modules() if isinstance(module, LowRank)]
    for name, module in inner.named_modules():
        if isinstance(module, LowRank):
            channels[name] = [module.out_channels, module.in_channels]
            lowrank[name] = {"rank": module.rank, "scheme": module.scheme}
        elif isinstance(module, COUNTED_TYPES) and not any(name.startswith(f + ".") for f in factorized):
            channels[name] = [module.weight.shape[0], module.weight.shape[1]]
    return {"factory": factory, "channels": channels, "lowrank": lowrank, "quantized": quantized, "resize": resize}


def _channels(model: nn.Module) -> dict[str, list[int]]:
    return {
        name: [module.weight.shape[0], module.weight.shape[1]]
        for name, module in model.named_modules()
        if isinstance(module, COUNTED_TYPES)
    }


def save(model: nn.Module, path: str | os.PathLike, example_inputs: torch.Tensor) -> None:
    """Write ``model`` to ``path``; ``example_inputs`` is an input it accepts (any batch size)."""
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "input_shape": list(example_inputs.shape[1:])}
    recipe = _recipe(model)
    if recipe is not None:
        payload.update(recipe, state_dict=model.state_dict())
    if recipe is None or "import" in recipe["factory"]:
        try:
            payload["program"] = _program_bytes(model, example_inputs)
        except ConfigError:
            if recipe is None:  # nothing else could rebuild it (a user's model still has its recipe)
                raise
    save_state(payload, path)


def _program_bytes(model: nn.Module, example_inputs: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(export_program(model, example_inputs), buffer)
    return buffer.getvalue()


def _payload(path: Path) -> dict:
    """The checked contents of the model file ``path`` (``torch.load(weights_only=True)``)."""
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist.")
    payload = read_weights(path, f"model file {path}", "give a model.pt written by autocomp")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ConfigError(f'model file {path} is not an autocomp model file (no "format": "{MODEL_FORMAT}").')
    if payload.get("version") not in _READABLE_VERSIONS:
        raise ConfigError(
            f"model file {path} has version {payload.get('version')!r}; this autocomp reads 1 to {MODEL_VERSION}."
        )
    return payload


def factory_import(path: str | os.PathLike) -> str | None:
    """The import path of the user's factory that built the model saved at ``path``, or None (zoo or program only)."""
    factory = _payload(Path(path)).get("factory")
    return factory.get("import") if isinstance(factory, dict) else None


def example_input(path: str | os.PathLike) -> torch.Tensor:
    """A zero input of one example for the model saved at ``path`` (the shape it was saved with)."""
    return torch.zeros(1, *_payload(Path(path))["input_shape"])


def load_program(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """The ``torch.export`` program saved in the model file ``path`` (checked to unpickle nothing)."""
    path = Path(path)
    payload = _payload(path)
    if "program" not in payload:
        raise ConfigError(f"model file {path} holds no torch.export program (its model could not be exported).")
    _check_program(payload["program"], path)
    return torch.export.load(io.BytesIO(payload["program"]))


def inference_module(program: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A program's module (`torch.export.ExportedProgram.module`) that takes ``.eval()`` and ``.train(False)`` as the
    no-ops they are (it was exported in eval mode) where torch raises NotImplementedError, and refuses ``.train()`` in
    one sentence."""

    def train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
        if mode:
            raise ConfigError(
                "a model loaded as its torch.export program runs inference only and cannot be trained; "
                "load it with its factory (trust_factory=...) to train it."
            )
        return nn.Module.train(self, False)

    program.train = types.MethodType(train, program)  # type: ignore[method-assign]
    program.eval = types.MethodType(lambda self: self.train(False), program)  # type: ignore[method-assign]
    return program.eval()


def load(path: str | os.PathLike, trust_factory: str | None = None) -> nn.Module:
    """Rebuild the model saved at ``path`` (in eval mode).

    A model built by a user's factory is rebuilt (trainable) only when ``trust_factory`` is its import
    path, since importing it runs that module's code; otherwise its ``torch.export`` program is loaded.
    """
    path = Path(path)
    payload = _payload(path)
    recipe = payload.get("factory")
    imported = recipe.get("import") if isinstance(recipe, dict) else None
    if "program" in payload and (recipe is None or (imported is not None and imported != trust_factory)):
        return inference_module(load_program(path).module())
    if not {"factory", "channels", "state_dict"} <= set(payload):
        raise ConfigError(f"model file {path} has neither a program nor a recipe (factory, channels, state_dict).")
    if imported is not None and imported != trust_factory:
        raise ConfigError(
            f"model file {path} is rebuilt by importing {imported!r}, which runs that module's code; "
            f"pass trust_factory={imported!r} to autocomp.load to allow it."
        )
    model = _rebuild(payload)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ConfigError(f"model file {path} does not match the architecture it names ({first}).") from None
    return model.eval()


def _rebuild(payload: dict) -> nn.Module:
    """The architecture a recipe describes, with placeholder weights."""
    factory = payload["factory"]
    if "import" in factory:
        model = build_user_model(factory["import"], factory["num_classes"], factory["in_channels"], **factory["kwargs"])
    else:
        model = models.create(factory["name"], **factory["kwargs"])
    channels = payload["channels"]
    if channels != _channels(model):  # pruned: replay it (an unpruned model needs no trace)
        graph = ModelGraph(model, torch.zeros(1, *payload["input_shape"]))
        kept = [channels[group.layers[0]][0] for group in graph.groups]
        graph.prune(kept, [-torch.arange(group.channels, dtype=torch.float32) for group in graph.groups])
    for name, spec in payload.get("lowrank", {}).items():
        layer = cast("nn.Linear | nn.Conv2d", model.get_submodule(name))  # saved factorized; `lowrank` checks it
        model.set_submodule(name, factorized_shell(layer, spec["rank"], spec["scheme"]))
    for name, spec in payload.get("quantized", {}).items():
        model.set_submodule(name, quantized_layer(model.get_submodule(name), **spec))
    resize = payload.get("resize")
    return InputResize(model, tuple(resize)) if resize else model
