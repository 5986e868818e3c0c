"""Channel-importance criteria: callables that score the channels of a coupled group, registered by name.

A criterion takes a full Torch-Pruning group (every coupled layer with its channel indices)
and returns one score per channel of the group; `compress` removes the lowest-scoring
channels. Data-driven criteria (``needs_data``) first see a few training batches through
``prepare``, on the very model they then score.

* ``l1``, ``l2``: weight magnitude (Li et al. 2017), averaged over the coupled layers.
* ``fpgm``: distance to the other filters (He et al. 2019, filter pruning via geometric
  median): the filters nearest the geometric median are the most replaceable and go first.
* ``bn_scale``: |gamma| of the group's BatchNorms (Liu et al. 2017, Network Slimming);
  groups without a BatchNorm fall back to ``l1``.
* ``taylor``: |weight x gradient| of the cross-entropy, first-order Taylor (Molchanov et al.).
* ``apoz``: the share of non-positive activations (Hu et al. 2016): read from the group's
  BatchNorm outputs (the ReLU's input), else from its conv/linear outputs.
* ``random``: seeded, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

import torch
from torch import nn

from autocomp.errors import ConfigError
from autocomp.modes import evaluating

_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FACTORIES: dict[str, Callable[[], Criterion]] = {}


class Criterion(Protocol):
    """Scores every channel of a Torch-Pruning group; the lowest scores are removed first."""

    needs_data: bool = False
    name: str = ""  # set by `get_criterion`, for messages

    def prepare(self, model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """See a few (inputs, labels) batches on ``model`` before scoring it (weight criteria need none)."""
        return None

    def __call__(self, group) -> torch.Tensor:
        """One float score per channel of the group's root."""
        ...


def register_criterion(name: str) -> Callable[[Callable[[], Criterion]], Callable[[], Criterion]]:
    """Register a zero-argument factory returning a criterion under ``name``."""

    def decorate(factory: Callable[[], Criterion]) -> Callable[[], Criterion]:
        _FACTORIES[name] = factory
        return factory

    return decorate


def criterion_names() -> list[str]:
    """The registered criteria, sorted."""
    return sorted(_FACTORIES)


def get_criterion(name: str) -> Criterion:
    """A fresh criterion registered as ``name``."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown pruning criterion {name!r}; allowed: {', '.join(criterion_names())}.")
    criterion = _FACTORIES[name]()
    criterion.name = name
    return criterion


def _out_deps(group, types: tuple[type, ...]) -> list[tuple[nn.Module, list[int], list[int]]]:
    """(module, its channel indices, the matching root channel indices) of the group's output-side layers of ``types``."""
    from torch_pruning import function

    out_fns = (
        function.prune_conv_out_channels,
        function.prune_depthwise_conv_out_channels,
        function.prune_linear_out_channels,
        function.prune_batchnorm_out_channels,
    )
    found: list[tuple[nn.Module, list[int], list[int]]] = []
    for item in group:
        module: nn.Module = item.dep.target.module
        if isinstance(module, types) and item.dep.handler in out_fns:
            found.append((module, [int(i) for i in item.idxs], [int(i) for i in item.root_idxs]))
    return found


def _mean_over_layers(per_layer: list[tuple[torch.Tensor, list[int]]], channels: int) -> torch.Tensor:
    """Average per-layer scores (each scaled to mean 1, so no layer dominates) channel by root channel."""
    total, count = torch.zeros(channels), torch.zeros(channels)
    for scores, root_idxs in per_layer:
        scores = scores.detach().float().cpu()
        scale = scores.mean()
        total.index_add_(0, torch.tensor(root_idxs), scores / scale if scale > 0 else scores)
        count.index_add_(0, torch.tensor(root_idxs), torch.ones(len(root_idxs)))
    return total / count.clamp(min=1)


def _weight(module: nn.Module) -> torch.Tensor | None:
    """The weight of a conv, linear or norm layer (None for a norm without affine parameters)."""
    return cast("torch.Tensor | None", module.weight)


def _channels(group) -> int:
    return len(group[0].idxs)


class _TorchPruning(Criterion):
    """A Torch-Pruning importance, made to always answer one score per channel."""

    def __init__(self, importance) -> None:
        self.importance = importance

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        scores = self.importance(group)
        if scores is None:
            raise ConfigError(f"criterion {self.name!r} cannot score a group without conv/linear weights.")
        return scores.float().cpu()


@register_criterion("l1")
def _l1() -> Criterion:
    import torch_pruning as tp

    return _TorchPruning(tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None))


@register_criterion("l2")
def _l2() -> Criterion:
    import torch_pruning as tp

    return _TorchPruning(tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None))


class GeometricMedian(Criterion):
    """FPGM: a filter's summed Euclidean distance to the layer's other filters."""

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        per_layer = []
        for module, idxs, root_idxs in _out_deps(group, _PRODUCERS):
            filters = cast(torch.Tensor, module.weight)[idxs].flatten(1).double()
            per_layer.append((torch.cdist(filters, filters).sum(dim=1), root_idxs))
        if not per_layer:
            raise ConfigError(
                "criterion 'fpgm' cannot score a group without conv/linear layers producing its channels."
            )
        return _mean_over_layers(per_layer, _channels(group))


@register_criterion("fpgm")
def _fpgm() -> Criterion:
    return GeometricMedian()


class BatchNormScale(Criterion):
    """Network Slimming: |gamma| of the BatchNorms normalising the channels (``l1`` without one)."""

    def __init__(self) -> None:
        self._fallback = _l1()

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        per_layer = [
            (weight[idxs].abs(), root_idxs)
            for module, idxs, root_idxs in _out_deps(group, _NORMS)
            if (weight := _weight(module)) is not None
        ]
        if not per_layer:
            return self._fallback(group)
        return _mean_over_layers(per_layer, _channels(group))


@register_criterion("bn_scale")
def _bn_scale() -> Criterion:
    return BatchNormScale()


class _DataCriterion(Criterion):
    needs_data = True

    def _require_prepared(self, prepared: bool) -> None:
        if not prepared:
            raise ConfigError(
                f"criterion {self.name!r} needs data: pass a few (inputs, labels) training batches as data."
            )


class Taylor(_DataCriterion):
    """First-order Taylor: |sum of weight x gradient| over each output channel's weights, gradients of cross-entropy."""

    def __init__(self) -> None:
        self._prepared = False

    def prepare(self, model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not batches:
            return
        model.zero_grad(set_to_none=True)
        with evaluating(model), torch.enable_grad():
            for inputs, labels in batches:
                nn.functional.cross_entropy(model(inputs), labels).backward()
        self._prepared = True

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        self._require_prepared(self._prepared)
        per_layer = []
        for module, idxs, root_idxs in _out_deps(group, _PRODUCERS + _NORMS):
            weight = _weight(module)
            if weight is None or weight.grad is None:
                continue
            product = (weight * weight.grad)[idxs]
            per_layer.append((product.flatten(1).sum(dim=1).abs() if product.dim() > 1 else product.abs(), root_idxs))
        if not per_layer:
            raise ConfigError(
                "criterion 'taylor' found no gradients for a group; did the model's forward use its layers?"
            )
        return _mean_over_layers(per_layer, _channels(group))


@register_criterion("taylor")
def _taylor() -> Criterion:
    return Taylor()


class ActivationsPositive(_DataCriterion):
    """APoZ: one minus the average percentage of zeros after the ReLU, per channel."""

    def __init__(self) -> None:
        self._positive: dict[nn.Module, torch.Tensor] = {}

    def prepare(self, model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not batches:
            return
        sums: dict[nn.Module, torch.Tensor] = {}
        counts: dict[nn.Module, int] = {}

        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            channels_first = not isinstance(module, nn.Linear)
            values = output.transpose(0, 1) if channels_first else output.movedim(-1, 0)
            values = (values.flatten(1) > 0).double()
            sums[module] = sums.get(module, 0) + values.sum(dim=1)
            counts[module] = counts.get(module, 0) + values.shape[1]

        watched = [m for m in model.modules() if isinstance(m, _PRODUCERS + _NORMS)]
        handles = [m.register_forward_hook(record) for m in watched]
        try:
            with evaluating(model), torch.no_grad():
                for inputs, _ in batches:
                    model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        self._positive = {module: sums[module] / counts[module] for module in sums}

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        self._require_prepared(bool(self._positive))
        deps = [d for d in _out_deps(group, _NORMS) if d[0] in self._positive] or [
            d for d in _out_deps(group, _PRODUCERS) if d[0] in self._positive
        ]
        if not deps:
            raise ConfigError("criterion 'apoz' saw no activations of a group; did the model's forward use its layers?")
        per_layer = [(self._positive[module][idxs] + 1e-6, root_idxs) for module, idxs, root_idxs in deps]
        return _mean_over_layers(per_layer, _channels(group))


@register_criterion("apoz")
def _apoz() -> Criterion:
    return ActivationsPositive()


class SeededRandom(Criterion):
    """Uniform random scores from a generator seeded once, so the same calls give the same scores."""

    def __init__(self, seed: int = 0) -> None:
        self._generator = torch.Generator().manual_seed(seed)

    def __call__(self, group) -> torch.Tensor:
        return torch.rand(_channels(group), generator=self._generator)


@register_criterion("random")
def _random() -> Criterion:
    return SeededRandom()
