"""Channel pruning by reconstruction (ThiNet, AMC): refit the layers that read pruned channels.

After channels are removed, each conv/linear layer whose input lost channels gets new weights,
solved by least squares so that, on sampled activations, its output matches the original
model's output of that layer (bias excluded, only the output channels it kept). Layers are
refitted in execution order and each sees the pruned model's own input, already refitted
upstream, so errors do not pile up (He et al. 2017).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

_RIDGE = 1e-6
"""Relative ridge on the normal equations: keeps the solve stable when sampled inputs are collinear."""


class _Stop(Exception):
    """Raised by a hook once it has what it needs, so the rest of the forward pass is skipped."""


def _execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    names = {module: name for name, module in model.named_modules()}
    order: list[str] = []
    handles = [m.register_forward_hook(lambda m, i, o: order.append(names[m]))
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


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


def _rows(module: nn.Module, layer_input: torch.Tensor, output: torch.Tensor, positions: torch.Tensor | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input rows, output rows) of a layer: im2col patches and output pixels at ``positions`` for a conv."""
    if isinstance(module, nn.Linear):
        x, y = layer_input.reshape(-1, layer_input.shape[-1]), output.reshape(-1, output.shape[-1])
        return (x, y) if positions is None else (x[positions], y[positions])
    patches = F.unfold(layer_input, module.kernel_size, module.dilation, module.padding, module.stride)
    pixels = output.flatten(2)
    gather = positions[:, None, :]
    x = patches.gather(2, gather.expand(-1, patches.shape[1], -1)).transpose(1, 2).reshape(-1, patches.shape[1])
    y = pixels.gather(2, gather.expand(-1, pixels.shape[1], -1)).transpose(1, 2).reshape(-1, pixels.shape[1])
    return x, y


def _positions(module: nn.Module, output: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor | None:
    if isinstance(module, nn.Linear):
        rows = output.numel() // output.shape[-1]
        limit = samples * output.shape[0]
        return None if rows <= limit else torch.randperm(rows, generator=generator)[:limit]
    pixels = output.shape[2] * output.shape[3]
    return torch.randint(pixels, (output.shape[0], min(samples, pixels)), generator=generator)


def _solve(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W minimising |x W^T - y|^2 (plus a tiny ridge), in float64."""
    x, y = x.double(), y.double()
    gram = x.T @ x
    gram += _RIDGE * gram.diagonal().mean().clamp(min=1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(gram, x.T @ y).T


@torch.no_grad()
def reconstruct(original: nn.Module, pruned: nn.Module, kept_outputs: Mapping[str, torch.Tensor],
                batches: Sequence[torch.Tensor], samples_per_image: int = 16, seed: int = 0) -> list[str]:
    """Refit in place the weights of ``pruned``'s layers whose input channels were reduced; returns their names.

    ``kept_outputs[name]``: the original output channels that layer ``name`` of ``pruned``
    kept. ``batches``: input tensors (no labels needed). Grouped convolutions are left alone.
    """
    modes = original.training, pruned.training
    original.eval(), pruned.eval()
    try:
        refitted = []
        for name in _execution_order(pruned, batches[0][:1]):
            module, reference = pruned.get_submodule(name), original.get_submodule(name)
            if getattr(module, "groups", 1) != 1 or module.weight.shape[1] == reference.weight.shape[1]:
                continue
            generator = torch.Generator().manual_seed(seed + len(refitted))
            xs, ys = [], []
            for inputs in batches:
                target = _layer_io(original, name, inputs, want_output=True)
                channel_dim = 1 if isinstance(module, nn.Conv2d) else target.dim() - 1
                if reference.bias is not None:
                    shape = [1] * target.dim()
                    shape[channel_dim] = -1
                    target = target - reference.bias.view(shape)
                target = target.index_select(channel_dim, kept_outputs[name])
                positions = _positions(module, target, samples_per_image, generator)
                x, y = _rows(module, _layer_io(pruned, name, inputs, want_output=False), target, positions)
                xs.append(x)
                ys.append(y)
            weight = _solve(torch.cat(xs), torch.cat(ys))
            module.weight.copy_(weight.reshape(module.weight.shape).to(module.weight.dtype))
            refitted.append(name)
        return refitted
    finally:
        original.train(modes[0])
        pruned.train(modes[1])
