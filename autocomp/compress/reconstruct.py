"""Channel pruning by reconstruction (ThiNet, AMC): refit the layers that read pruned channels.

After channels are removed, each conv/linear layer whose input lost channels gets new weights,
solved by least squares so that, on sampled activations, its output matches the original
model's output of that layer (bias excluded, only the output channels it kept). Layers are
refitted in execution order and each sees the pruned model's own input, already refitted
upstream, so errors do not pile up (He et al. 2017).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from autocomp.errors import ConfigError
from autocomp.modes import evaluating

_RIDGE = 1e-6
"""Ridge weight, relative to the inputs' mean squared column norm."""


MIN_ROWS_PER_UNKNOWN = 4
"""A layer is refitted only with at least this many sampled rows per weight of one output channel."""


class _Stop(Exception):
    """Raised by a hook once it has what it needs, so the rest of the forward pass is skipped."""


def _execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The names of ``model``'s Conv2d and Linear layers, in the order its forward first calls them."""
    names = {module: name for name, module in model.named_modules()}
    order: dict[str, None] = {}
    handles = [
        m.register_forward_hook(lambda m, i, o: order.setdefault(names[m]))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    return list(order)


def _layer(model: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    """Layer ``name`` of ``model``, one `_execution_order` names (a Conv2d or Linear)."""
    return cast("nn.Conv2d | nn.Linear", model.get_submodule(name))


def _layer_io(model: nn.Module, name: str, inputs: torch.Tensor, want_output: bool) -> torch.Tensor:
    """The input (or the output) of layer ``name`` when ``model`` runs on ``inputs``."""
    captured = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured.append(output if want_output else args[0])
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        model(inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def _rows(
    module: nn.Conv2d | nn.Linear,
    layer_input: torch.Tensor,
    output: torch.Tensor,
    samples_per_image: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input rows, output rows) of a layer: for a conv, im2col patches and output pixels at
    ``samples_per_image`` distinct random positions per image; for a linear layer, every row (tokens flattened)."""
    if isinstance(module, nn.Linear):
        return layer_input.reshape(-1, layer_input.shape[-1]), output.reshape(-1, output.shape[-1])
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode  # any padding: 'same', reflect, ...
    padded = F.pad(layer_input, module._reversed_padding_repeated_twice, mode=mode)
    patches = F.unfold(padded, module.kernel_size, module.dilation, 0, module.stride)  # (N, C*kh*kw, pixels)
    pixels = output.flatten(2)  # (N, out, pixels)
    count = min(samples_per_image, pixels.shape[2])
    positions = torch.rand(pixels.shape[0], pixels.shape[2], generator=generator).argsort(dim=1)[:, None, :count]
    positions = positions.to(pixels.device)
    x = patches.gather(2, positions.expand(-1, patches.shape[1], -1))
    y = pixels.gather(2, positions.expand(-1, pixels.shape[1], -1))
    return x.transpose(1, 2).flatten(0, 1), y.transpose(1, 2).flatten(0, 1)


def _solve(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W minimising |x W^T - y|^2 + ridge |W|^2, by least squares in float64 on CPU."""
    x, y = x.double().cpu(), y.double().cpu()
    # A tiny ridge, appended as rows sqrt(ridge) * I, keeps the solution bounded and unique when
    # columns are collinear or zero (dead channels, zero padding).
    ridge = (_RIDGE * x.square().sum() / x.shape[1]).clamp(min=1e-12).sqrt()
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    solution = torch.linalg.lstsq(torch.cat([x, ridge * eye]), torch.cat([y, y.new_zeros(x.shape[1], y.shape[1])]))
    return solution.solution.T


@torch.no_grad()
def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    kept_outputs: Mapping[str, torch.Tensor],
    batches: Sequence[torch.Tensor],
    layers: Sequence[str] | None = None,
    samples_per_image: int = 16,
    seed: int = 0,
) -> list[str]:
    """Refit in place the weights of ``pruned``'s layers whose input channels were reduced; returns their names.

    ``kept_outputs[name]``: the original output channels that layer ``name`` of ``pruned`` kept.
    ``batches``: input tensors (no labels needed). ``layers``: refit only these (default: all).
    Grouped convolutions, and layers with fewer than ``MIN_ROWS_PER_UNKNOWN`` sampled rows per
    input weight (a Linear on (B, C) input gets one row per image), are left alone; biases are kept.
    """
    with evaluating(original, pruned):
        order = _execution_order(pruned, batches[0][:1])
        unknown = sorted(set(layers or ()) - set(order))
        if unknown:
            raise ConfigError(f"cannot reconstruct layer {unknown[0]!r}: allowed are the model's Conv2d/Linear layers.")
        generator = torch.Generator().manual_seed(seed)
        refitted = []
        for name in order:
            module, reference = _layer(pruned, name), _layer(original, name)
            if (
                (layers is not None and name not in layers)
                or getattr(module, "groups", 1) != 1
                or module.weight.shape[1] == reference.weight.shape[1]
            ):
                continue
            conv = isinstance(module, nn.Conv2d)
            xs, ys = [], []
            for inputs in batches:
                target = _layer_io(original, name, inputs, want_output=True)
                if reference.bias is not None:
                    target = target - (reference.bias.view(-1, 1, 1) if conv else reference.bias)
                target = target.index_select(1 if conv else -1, kept_outputs[name].to(target.device))
                x, y = _rows(
                    module, _layer_io(pruned, name, inputs, want_output=False), target, samples_per_image, generator
                )
                xs.append(x)
                ys.append(y)
            x, y = torch.cat(xs), torch.cat(ys)
            if x.shape[0] < MIN_ROWS_PER_UNKNOWN * x.shape[1]:
                continue  # too few samples for this many weights: a refit would fit noise, keep the pruned weights
            module.weight.copy_(_solve(x, y).reshape(module.weight.shape))
            refitted.append(name)
        return refitted
