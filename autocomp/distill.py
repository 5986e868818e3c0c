"""Knowledge distillation losses: softened logits (Hinton et al.) and attention transfer (Zagoruyko & Komodakis).

Attention transfer compares where two networks look, not what their channels hold, so a
pruned student with fewer channels can still match its teacher's feature maps: each map
(N, C, H, W) becomes the spatial map mean_c(A^2), flattened and L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autocomp.modes import evaluating


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def attention_map(features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The (N, H, W) attention map of (N, C, H, W) ``features``: mean_c(A^2), resized to ``size``, L2-normalised."""
    energy = features.pow(2).mean(dim=1, keepdim=True)
    if size is not None and tuple(energy.shape[-2:]) != tuple(size):
        energy = F.interpolate(energy, size=size, mode="bilinear", align_corners=False)
    return F.normalize(energy.flatten(1), dim=1).view(energy.shape[0], *energy.shape[-2:])


def attention_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over points of the mean squared difference of attention maps (the reference code's ``at_loss``).

    ``teacher_maps`` are attention maps already; ``student_maps`` are raw feature maps, resized
    to the teacher's spatial size (a student at a lower input resolution has smaller maps).
    """
    losses = [
        (attention_map(features, (target.shape[-2], target.shape[-1])) - target).pow(2).mean()
        for features, target in zip(student_maps, teacher_maps, strict=True)
    ]
    return torch.stack(losses).sum()


def attention_points(model: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """Where attention is compared: for each spatial size above 1x1, the module that finishes last at it.

    A parent module finishes after its children, so for a ResNet these are the stages
    (``layer1``, ``layer2``, ``layer3``), for a MobileNet the last block of each resolution.
    """
    finished: dict[tuple[int, int], str] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
                size = (output.shape[-2], output.shape[-1])
                finished.pop(size, None)
                finished[size] = name

        handles.append(module.register_forward_hook(record))
    try:
        with evaluating(model), torch.no_grad():
            model(example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return list(finished.values())


class FeatureTaps:
    """Captures the outputs of named submodules during forward passes; a context manager that removes its hooks."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self._outputs: dict[int, torch.Tensor] = {}
        self._count = len(names)
        self._handles = [
            model.get_submodule(name).register_forward_hook(self._recorder(index)) for index, name in enumerate(names)
        ]

    def _recorder(self, index: int):
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self._outputs[index] = output

        return record

    def take(self) -> list[torch.Tensor]:
        """The last forward pass's outputs, in the order of ``names``; forgotten afterwards."""
        outputs = [self._outputs[index] for index in range(self._count)]
        self._outputs.clear()
        return outputs

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._outputs.clear()
