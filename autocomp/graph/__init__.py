"""ModelGraph: the conv/linear layers of a model and the channel groups that must be pruned together.

Torch-Pruning's dependency graph finds the coupling (residual adds, depthwise convolutions,
concatenation); this package turns it into plain records (`LayerInfo`, `ChannelGroup`) that
the rest of autocomp reads, predicts the exact MACs, BOPs, parameters and storage bits of
any policy (`policy_costs`), and prunes a model in place from per-group channel counts.
`layers` holds the records; `trace` records the layers of one forward pass; `dependency`
builds the Torch-Pruning graph and says which groups are safe to prune.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autocomp.cost.macs import COUNTED_TYPES, float_bits
from autocomp.errors import ConfigError
from autocomp.graph.dependency import Verdict, dependency_graph, group_verdict
from autocomp.graph.heads import HeadGroup, HeadParts, keep_head_parameters, probe_heads, set_head_count
from autocomp.graph.layers import ChannelGroup, LayerInfo, Share, rounded_channels
from autocomp.graph.policy_costs import PolicyCosts
from autocomp.graph.standard import standard_form
from autocomp.graph.trace import Trace, trace_layers
from autocomp.graph.widths import HIDDEN_WIDTHS, lower_attributes, owner_of


class ModelGraph(PolicyCosts):
    """Prunable structure of ``model`` traced on ``example_inputs``; `prune` edits ``model`` in place.

    ``model`` is first put in its standard form, in place (graph.standard: nn.MultiheadAttention unpacked into
    prunable layers, Hugging Face's Conv1D as nn.Linear), so a graph's layer names are those of that form.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        model = self.model = standard_form(model)
        self.example_inputs = example_inputs
        self._pruned = False
        trace = trace_layers(model, example_inputs)
        traced = trace.layers
        self._traces: dict[float, Trace] = {1.0: trace}
        self._shapes: dict[float, dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]] = {}
        modules = dict(model.named_modules())
        names = {module: name for name, module in modules.items()}
        self._dg = dependency_graph(model, example_inputs)

        order = {name: i for i, name in enumerate(traced)}
        raw_groups = []
        self.whole: dict[str, str] = {}
        """Layers whose output channels are kept whole though other layers read them -> why, said of the channels
        ("pass through ..."; `whole_lines` words it for a user)."""
        self._in_shares: dict[str, list[Share]] = {name: [] for name in traced}
        self._out_shares: dict[str, list[Share]] = {name: [] for name in traced}
        per_head_of: dict[HeadGroup, frozenset] = {}
        for first, group in self._dg.followed_groups(COUNTED_TYPES):
            if isinstance(group, Exception):
                if names.get(first) in traced:
                    self.whole[names[first]] = (
                        f"cannot be followed through the model by Torch-Pruning "
                        f"({type(group).__name__}: {_first_line(group)})"
                    )
                continue
            root = group[0].dep
            verdict = group_verdict(self._dg, group, self._dg.get_out_channels(root.target.module))
            producers: dict[str, int] = {}
            consumers: dict[str, int] = {}
            carriers: dict[nn.Module, tuple[object, set[int]]] = {}
            for dep, idxs in group:
                if dep.target.module in verdict.per_head:  # one entry per head: the attention's keep_heads cuts it
                    continue
                name = names.get(dep.target.module)
                if name not in traced:
                    if _has_parameters(dep.target.module):  # a norm, a PReLU, a free parameter: pruned with the group
                        carriers.setdefault(dep.target.module, (dep, set()))[1].update(
                            int(getattr(i, "idx", i)) for i in idxs
                        )
                    continue
                if self._dg.is_out_channel_pruning_fn(dep.handler):
                    producers[name] = len(idxs)
                elif self._dg.is_in_channel_pruning_fn(dep.handler):
                    consumers[name] = len(idxs)
            if not consumers:  # nothing reads these channels: they are the model's output
                continue
            if any(_depthwise_multiplier(modules[name]) for name in (*producers, *consumers)):
                verdict = Verdict(reason="feed a depthwise convolution that makes several channels of each")
            if verdict.reason is not None:  # see graph.dependency: never pruned
                self.whole.update((name, verdict.reason) for name in producers)
                continue
            heads = None
            if verdict.head_size > 1:
                blocks = verdict.blocks
                heads = HeadGroup(
                    tuple(sorted(producers, key=order.__getitem__)),
                    tuple(sorted(consumers, key=order.__getitem__)),
                    self._dg.get_out_channels(root.target.module) // (blocks * verdict.head_size),
                    verdict.head_size,
                    blocks,
                )
                per_head_of[heads] = verdict.per_head
            else:
                blocks = math.lcm(*(_conv_groups(modules[name]) for name in (*producers, *consumers)))
            raw_groups.append((min(order[n] for n in producers), root, producers, consumers, blocks, carriers, heads))

        raw_groups.sort(key=lambda item: item[0])
        raw_groups, head_macs, head_parts = self._probed(raw_groups, trace)
        self.groups: list[ChannelGroup] = []
        self._roots: list[tuple[nn.Module, object]] = []
        group_of: dict[str, int] = {}
        self._head_groups: dict[int, HeadGroup] = {}
        self._carriers: list[tuple[object, Share]] = []
        """(Torch-Pruning dependency on a module or parameter outside the layers, its share of a group's channels)."""
        self._head_parameters: list[tuple[nn.Parameter, Share]] = []
        """(Parameter outside the layers that holds one entry per head, its share of a head group: heads, elements)."""
        self._per_head: dict[int, frozenset] = {}
        """Head group index -> the targets of its Torch-Pruning group that hold one entry per head (left to
        keep_heads)."""
        self._head_parts: dict[int, HeadParts] = {}
        """Head group index -> what one of its heads holds outside its layers (graph.heads)."""
        for index, (_, root, producers, consumers, blocks, carriers, heads) in enumerate(raw_groups):
            channels = self._dg.get_out_channels(root.target.module)
            self.groups.append(
                ChannelGroup(
                    index=index,
                    channels=channels,
                    layers=tuple(sorted(producers, key=order.__getitem__)),
                    consumers=tuple(sorted(consumers, key=order.__getitem__)),
                    blocks=blocks,
                    head_size=1 if heads is None else heads.head_size,
                )
            )
            self._roots.append((root.target.module, root.handler))
            if heads is not None:
                self._head_groups[index] = heads
                self._per_head[index] = per_head_of[heads]
                self._head_parts[index] = parts = head_parts[heads]
                for name, (inputs, outputs) in parts.layers.items():
                    self._in_shares[name] += [Share(index, heads.heads * inputs)] if inputs else []
                    self._out_shares[name] += [Share(index, heads.heads * outputs)] if outputs else []
                self._head_parameters += [
                    (self.model.get_parameter(name), Share(index, heads.heads, elements))
                    for name, elements in parts.elements.items()
                ]
            for name, count in producers.items():
                group_of[name] = index
                self._out_shares[name].append(Share(index, count))
            for name, count in consumers.items():
                self._in_shares[name].append(Share(index, count))
            self._carriers += [(dep, Share(index, len(idxs))) for dep, idxs in carriers.values()]
        index_of = {heads: index for index, heads in self._head_groups.items()}
        self._head_macs = {
            name: {index_of[heads]: macs for heads, macs in per_head.items()} for name, per_head in head_macs.items()
        }
        """Module -> {head group index: MACs one of its heads computes there outside layers}."""

        self.layers: list[LayerInfo] = []
        self._float_bits: dict[str, tuple[int, int | None]] = {}
        """Bits of every layer's weight and bias (None: no bias) in floating point."""
        for name, record in traced.items():
            module = modules[name]
            self._float_bits[name] = (
                float_bits(module.weight),
                None if module.bias is None else float_bits(module.bias),
            )
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

    def _probed(
        self, raw_groups: list, trace: Trace
    ) -> tuple[list, dict[str, dict[HeadGroup, int]], dict[HeadGroup, HeadParts]]:
        """``raw_groups`` without the attention heads the model's code cannot lose (see graph.heads, each named in
        ``whole``), per module the MACs one head of each remaining group computes there outside layers, and what one
        head of each holds outside its layers."""
        heads = [raw[-1] for raw in raw_groups if raw[-1] is not None]
        if not heads:
            return raw_groups, {}, {}
        reasons, per_head, parts = probe_heads(self.model, self.example_inputs, heads, trace.other_macs)
        failed = {group for group, reason in zip(heads, reasons) if reason is not None}
        for group, reason in zip(heads, reasons):
            if reason is not None:
                self.whole.update((name, reason) for name in group.producers)
        return [raw for raw in raw_groups if raw[-1] not in failed], per_head, parts

    def whole_lines(self) -> list[str]:
        """One line per layer kept whole though other layers read it, saying why."""
        order = {layer.name: i for i, layer in enumerate(self.layers)}
        return [
            f"layer {name!r} is kept whole: its output channels {self.whole[name]}."
            for name in sorted(self.whole, key=order.__getitem__)
        ]

    @property
    def prunable(self) -> list[LayerInfo]:
        """Layers whose output channels can be pruned, in execution order."""
        return [layer for layer in self.layers if layer.group is not None]

    def channel_scores(self, criterion) -> list[torch.Tensor]:
        """One score per channel of every group (``criterion`` scores a full Torch-Pruning group)."""
        scores = []
        for group in self.groups:
            full = self._pruning_group(group.index, list(range(group.channels)))
            score = torch.as_tensor(criterion(full)).detach().float().cpu().flatten()
            if score.numel() != group.channels:
                name = getattr(criterion, "name", type(criterion).__name__)
                raise ConfigError(
                    f"criterion {name!r} gave {score.numel()} scores for a group of {group.channels} channels; "
                    "it must give one per channel."
                )
            scores.append(score)
        return scores

    def _pruning_group(self, index: int, channels: list[int]):
        """Torch-Pruning's group of ``channels`` of group ``index``, without what holds one entry per attention head
        (which its channel indices do not describe: the attention's ``keep_heads`` cuts it)."""
        module, handler = self._roots[index]
        group = self._dg.get_pruning_group(module, handler, channels)
        per_head = self._per_head.get(index, frozenset())
        group.items[:] = [item for item in group.items if item.dep.target.module not in per_head]
        return group

    def prune(self, kept: list[int], scores: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Remove channels from ``self.model`` in place so that group i keeps its ``kept[i]`` best-scored channels.

        Returns, for every conv/linear layer, the indices of the original output channels it kept.
        """
        names = {module: name for name, module in self.model.named_modules()}
        dropped: dict[str, set[int]] = {layer.name: set() for layer in self.layers}
        for group, n_keep, score in zip(self.groups, kept, scores):
            if n_keep >= group.channels:
                continue
            drop = _lowest(score, group.channels - n_keep, group.blocks, group.head_size)
            pruning_group = self._pruning_group(group.index, sorted(drop))
            for dep, idxs in pruning_group:
                name = names.get(dep.target.module)
                if name in dropped and self._dg.is_out_channel_pruning_fn(dep.handler):
                    dropped[name].update(int(getattr(i, "idx", i)) for i in idxs)
            pruning_group.prune()
            if group.index in self._head_groups:
                heads = self._head_groups[group.index]
                lost = {channel // group.head_size % group.heads for channel in drop}
                set_head_count(self.model, heads, n_keep // group.unit)
                keep_head_parameters(self.model, heads, [h for h in range(group.heads) if h not in lost])
                for name, (_, outputs) in self._head_parts[group.index].layers.items():
                    dropped[name].update(h * outputs + i for h in lost for i in range(outputs))
            else:
                lower_attributes(
                    self.model, owner_of((*group.layers, *group.consumers)), [(HIDDEN_WIDTHS, group.channels, n_keep)]
                )
        self._pruned = True
        return {
            layer.name: torch.tensor(sorted(set(range(layer.out_channels)) - dropped[layer.name]), dtype=torch.long)
            for layer in self.layers
        }


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def _depthwise_multiplier(module: nn.Module) -> bool:
    """A depthwise convolution producing several channels per input channel."""
    return (
        isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups == module.in_channels != module.out_channels
    )


def _conv_groups(module: nn.Module) -> int:
    """The groups of a grouped convolution; 1 for other layers, plain and depthwise convolutions."""
    groups = getattr(module, "groups", 1)
    return groups if isinstance(module, nn.modules.conv._ConvNd) and groups < module.in_channels else 1


def _has_parameters(target: object) -> bool:
    """Whether a Torch-Pruning node's target is a parameter or a module holding parameters."""
    if isinstance(target, nn.Parameter):
        return True
    return isinstance(target, nn.Module) and next(target.parameters(), None) is not None


def _lowest(scores: torch.Tensor, count: int, blocks: int, head_size: int = 1) -> list[int]:
    """The ``count`` lowest-scored channels; with blocks, the same positions in every block (summed scores); with
    heads, the channels of the lowest-scored heads (summed over each head and block) in every block."""
    if head_size > 1:
        per_head = scores.view(blocks, -1, head_size).sum(dim=(0, 2))
        heads = torch.argsort(per_head, stable=True)[: count // (blocks * head_size)].tolist()
        width = per_head.numel() * head_size
        return sorted(
            block * width + head * head_size + position
            for block in range(blocks)
            for head in heads
            for position in range(head_size)
        )
    if blocks == 1:
        return torch.argsort(scores, stable=True)[:count].tolist()
    size = scores.numel() // blocks
    positions = torch.argsort(scores.view(blocks, size).sum(dim=0), stable=True)[: count // blocks].tolist()
    return sorted(block * size + position for block in range(blocks) for position in positions)


__all__ = ["ChannelGroup", "LayerInfo", "ModelGraph", "rounded_channels"]
