"""ModelGraph: the conv/linear layers of a model and the channel groups that must be pruned together.

Torch-Pruning's dependency graph finds the coupling (residual adds, depthwise convolutions,
concatenation); this module turns it into plain records (`LayerInfo`, `ChannelGroup`) that
the rest of autocomp reads, and prunes a model in place from per-group channel counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autocomp.cost.macs import COUNTED_TYPES, module_macs
from autocomp.errors import ConfigError
from autocomp.policy import Policy


@dataclass(frozen=True)
class LayerInfo:
    """One conv or linear layer as traced on the example input (shapes without the batch)."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    params: int
    group: int | None
    """Index of the `ChannelGroup` its output channels belong to; None when they cannot be pruned."""

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels


@dataclass(frozen=True)
class ChannelGroup:
    """Channels shared by ``layers`` (they produce them) and read by ``consumers``."""

    index: int
    channels: int
    layers: tuple[str, ...]
    consumers: tuple[str, ...]


@dataclass(frozen=True)
class _Share:
    """How many of a layer's input or output channels come from one group."""

    group: int
    count: int


def _trace_layers(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, dict]:
    """Run one forward pass and record every conv/linear call, in execution order."""
    names = {module: name for name, module in model.named_modules()}
    records: dict[str, dict] = {}
    batch = example_inputs.shape[0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        name = names[module]
        if name in records:
            raise ConfigError(f"layer {name!r} is called more than once in forward; shared layers cannot be pruned.")
        records[name] = {
            "input_shape": tuple(inputs[0].shape[1:]),
            "output_shape": tuple(output.shape[1:]),
            "macs": module_macs(module, output) // batch,
        }

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COUNTED_TYPES)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return records


class ModelGraph:
    """Prunable structure of ``model`` traced on ``example_inputs``; `prune` edits ``model`` in place."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        import torch_pruning as tp

        self.model = model
        self.example_inputs = example_inputs
        traced = _trace_layers(model, example_inputs)
        modules = dict(model.named_modules())
        names = {module: name for name, module in modules.items()}
        with torch.enable_grad():  # Torch-Pruning traces through autograd, also when called under no_grad
            self._dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)

        order = {name: i for i, name in enumerate(traced)}
        raw_groups = []
        self._in_shares: dict[str, list[_Share]] = {name: [] for name in traced}
        self._out_shares: dict[str, list[_Share]] = {name: [] for name in traced}
        for group in self._dg.get_all_groups(root_module_types=COUNTED_TYPES):
            producers, consumers = {}, {}
            for dep, idxs in group:
                name = names.get(dep.target.module)
                if name not in traced:
                    continue
                if self._dg.is_out_channel_pruning_fn(dep.handler):
                    producers[name] = len(idxs)
                elif self._dg.is_in_channel_pruning_fn(dep.handler):
                    consumers[name] = len(idxs)
            if not consumers:  # nothing reads these channels: they are the model's output
                continue
            root = group[0].dep
            raw_groups.append((min(order[n] for n in producers), root, producers, consumers))

        raw_groups.sort(key=lambda item: item[0])
        self.groups: list[ChannelGroup] = []
        self._roots: list[tuple[nn.Module, object]] = []
        group_of: dict[str, int] = {}
        for index, (_, root, producers, consumers) in enumerate(raw_groups):
            channels = self._dg.get_out_channels(root.target.module)
            self.groups.append(
                ChannelGroup(
                    index=index,
                    channels=channels,
                    layers=tuple(sorted(producers, key=order.get)),
                    consumers=tuple(sorted(consumers, key=order.get)),
                )
            )
            self._roots.append((root.target.module, root.handler))
            for name, count in producers.items():
                group_of[name] = index
                self._out_shares[name].append(_Share(index, count))
            for name, count in consumers.items():
                self._in_shares[name].append(_Share(index, count))

        self.layers: list[LayerInfo] = []
        for name, record in traced.items():
            module = modules[name]
            is_conv = not isinstance(module, nn.Linear)
            self.layers.append(
                LayerInfo(
                    name=name,
                    kind="conv" if is_conv else "linear",
                    in_channels=module.in_channels if is_conv else module.in_features,
                    out_channels=module.out_channels if is_conv else module.out_features,
                    groups=module.groups if is_conv else 1,
                    kernel_size=tuple(module.kernel_size) if is_conv else (1,),
                    stride=tuple(module.stride) if is_conv else (1,),
                    input_shape=record["input_shape"],
                    output_shape=record["output_shape"],
                    macs=record["macs"],
                    params=sum(p.numel() for p in module.parameters()),
                    group=group_of.get(name),
                )
            )

    @property
    def prunable(self) -> list[LayerInfo]:
        """Layers whose output channels can be pruned, in execution order."""
        return [layer for layer in self.layers if layer.group is not None]

    def group_keep(self, policy: Policy) -> list[float]:
        """The keep ratio of each channel group; coupled layers must agree."""
        known = {layer.name for layer in self.prunable}
        unknown = sorted(set(policy.layers) - known)
        if unknown:
            allowed = ", ".join(sorted(known)[:8]) + (", ..." if len(known) > 8 else "")
            raise ConfigError(f"policy names layer {unknown[0]!r}, which is not a prunable layer of this model (prunable: {allowed}).")
        ratios = []
        for group in self.groups:
            keeps = {name: policy.keep(name) for name in group.layers}
            distinct = sorted(set(keeps.values()))
            if len(distinct) > 1:
                a = next(n for n, k in keeps.items() if k == distinct[0])
                b = next(n for n, k in keeps.items() if k == distinct[-1])
                raise ConfigError(
                    f"layers {a!r} and {b!r} share their output channels and must have the same keep ratio, "
                    f"got {distinct[0]} and {distinct[-1]}."
                )
            ratios.append(distinct[0])
        return ratios

    def kept_channels(self, policy: Policy) -> list[int]:
        """Channels each group keeps under ``policy``: round(keep x channels), at least one."""
        return [max(1, round(keep * group.channels)) for keep, group in zip(self.group_keep(policy), self.groups)]

    def layer_channels(self, kept: list[int]) -> dict[str, tuple[int, int]]:
        """(in, out) channels of every layer once each group keeps ``kept[i]`` channels."""

        def remaining(total: int, shares: list[_Share]) -> int:
            groups = self.groups
            return total - sum(s.count * (groups[s.group].channels - kept[s.group]) // groups[s.group].channels for s in shares)

        return {
            layer.name: (remaining(layer.in_channels, self._in_shares[layer.name]),
                         remaining(layer.out_channels, self._out_shares[layer.name]))
            for layer in self.layers
        }

    def predict_macs(self, policy: Policy) -> int:
        """MACs of the model ``compress`` would return for ``policy``, without building it."""
        channels = self.layer_channels(self.kept_channels(policy))
        total = 0
        for layer in self.layers:
            new_in, new_out = channels[layer.name]
            in_per_group = 1 if layer.depthwise else new_in // layer.groups
            old_in_per_group = layer.in_channels // layer.groups
            total += layer.macs * new_out * in_per_group // (layer.out_channels * old_in_per_group)
        return total

    def prune(self, kept: list[int], criterion) -> None:
        """Remove channels from ``self.model`` in place so that group i keeps ``kept[i]`` channels.

        ``criterion(group)`` scores the channels of a Torch-Pruning group; the lowest go.
        """
        for (module, handler), group, n_keep in zip(self._roots, self.groups, kept):
            if n_keep >= group.channels:
                continue
            full = self._dg.get_pruning_group(module, handler, list(range(group.channels)))
            scores = criterion(full)
            drop = torch.argsort(scores)[: group.channels - n_keep].tolist()
            self._dg.get_pruning_group(module, handler, sorted(drop)).prune()
