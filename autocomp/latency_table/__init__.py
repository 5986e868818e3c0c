"""Per-layer latency lookup table: a policy's latency predicted from single-layer timings cached on disk.

Every conv/linear layer is timed alone (a fresh ``nn.Conv*d`` / ``nn.Linear`` with its kernel,
stride, padding, dilation, groups, bias and input size, on the target's batch, warm-up and
median) on a grid of channel counts: ``steps`` evenly spaced counts between the fewest channels
pruning can leave and all of them, for its inputs and its outputs. A policy's layer takes the
bilinear interpolation of the four grid points around its (in, out) channels (linear in the
channels for depthwise convolutions, whose groups follow them); a factorized layer is its two
factor layers, with the rank as their shared channel count. Grid points are measured the first
time a prediction needs them, or all at once by `LatencyTable.build`; each is timed
``ENTRY_ROUNDS`` times (by `build` in separate passes over all the missing ones) and keeps its
fastest timing, since load on a shared machine only ever slows a timing down.

What the layers do not cover (BatchNorm, activations, residual adds, pooling, the input resize,
attention's products, which shrink with the q, k and v outputs, Python overhead) is calibrated
once per model and resolution: the whole model is measured
uniformly pruned to each of ``CALIBRATION_KEEPS``, and the time the layer entries do not explain
is fitted as ``fixed + per_element x (elements of the conv/linear outputs)``.

Entries and calibrations live in one JSON file per target (`LatencyTarget.key`), merged with
what is on disk and replaced atomically at every save, so processes can share it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from torch import nn

from autocomp.cache import cache_root
from autocomp.compress import Compressor
from autocomp.cost.latency import (
    LatencyTarget,
    measure_latency_ms,
    median_ms,
    random_batch,
)
from autocomp.errors import ConfigError
from autocomp.geometry import as_pair, full_rank_of, rank_of
from autocomp.graph import LayerInfo, ModelGraph
from autocomp.latency_table.entries import (
    Geometry,
    Grid,
    bracket,
    counts,
    factor_geometries,
    line_fit,
    spatial,
    tuple_or_str,
)
from autocomp.policy import Policy
from autocomp.progress import progress_bar

TABLE_FORMAT = "autocomp.latency_table"
TABLE_VERSION = 1
CALIBRATION_KEEPS = (1.0, 0.75, 0.5, 0.3)
"""Uniform keep ratios of the whole-model measurements that calibrate the time outside conv/linear layers."""
ENTRY_ROUNDS = 3
"""Timings of each entry and calibration model; the least loaded one is kept (load on a shared machine only slows)."""

Channels = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Calibration:
    """Milliseconds the layer entries do not explain: ``fixed_ms + per_element_ms x output elements``."""

    fixed_ms: float
    per_element_ms: float

    def rest_ms(self, elements: int) -> float:
        return self.fixed_ms + self.per_element_ms * elements


class LatencyTable:
    """Predicts the latency of ``graph.model`` compressed by a policy on ``target``, from cached per-layer timings.

    ``cache_dir`` defaults to ``<autocomp cache>/latency``; ``steps`` is the number of grid
    intervals per channel dimension. ``measurements`` counts the timings this table ran
    (layer entries and calibration models): zero when everything came from the cache. A
    prediction is not a measurement: measure the final model with `measure_latency_ms`.
    """

    def __init__(self, graph: ModelGraph, target: LatencyTarget, cache_dir: Path | None = None, steps: int = 8) -> None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"latency table steps={steps!r} is not allowed; allowed: a whole number >= 1.")
        self.graph = graph
        self.target = target
        self.steps = steps
        self.path = Path(cache_dir if cache_dir is not None else _default_cache_dir()) / f"{target.key()}.json"
        self.measurements = 0
        stored = _read(self.path)
        self._entries: dict[str, float] = stored["entries"]
        self._calibrations: dict[str, dict] = stored["calibrations"]
        self._unsaved = False
        self._layers = {layer.name: layer for layer in graph.layers}
        self._modules = {layer.name: graph.model.get_submodule(layer.name) for layer in graph.layers}
        self._fewest = graph.layer_channels([min(group.blocks, group.channels) for group in graph.groups])
        self._architecture = _architecture_key(graph, self._modules)
        self._grids: dict[tuple, tuple[Grid, ...]] = {}

    def predict_ms(self, policy: Policy) -> float:
        """Predicted milliseconds of a forward pass of the model ``compress(graph.model, policy, ...)`` returns.

        Refuses policies with bits: simulated quantization's time is not a deployment latency.
        """
        channels = self._channels(policy)
        layers_ms = sum(self._layer_ms(policy, channels).values())
        rest_ms = self.calibration(policy.resolution).rest_ms(self._elements(policy.resolution, channels))
        self._save()
        return layers_ms + rest_ms

    def layer_ms(self, policy: Policy) -> dict[str, float]:
        """Predicted milliseconds of every conv/linear layer (both factors of a factorized one together) under ``policy``."""
        result = self._layer_ms(policy, self._channels(policy))
        self._save()
        return result

    def build(self, resolutions: tuple[float, ...] = (1.0,), rank_schemes: tuple[str, ...] = ()) -> None:
        """Measure every entry a search at ``resolutions`` (with low-rank ``rank_schemes``) may need, and calibrate.

        Afterwards `predict_ms` measures nothing for such policies: it is arithmetic on the table.
        The missing entries are timed in ENTRY_ROUNDS passes over all of them, so that a burst of
        load on a shared machine meets each entry in one round at most.
        """
        for resolution in resolutions:
            self.graph.check(Policy(resolution=resolution))
        missing: dict[str, tuple[Geometry, int, int]] = {}
        for resolution in resolutions:
            for layer in self.graph.layers:
                for scheme in (None, *(s for s in rank_schemes if layer.factorizable)):
                    for grid in self._layer_grids(layer, resolution, scheme):
                        for cin, cout in grid.points():
                            key = grid.geometry.key(cin, cout)
                            if key not in self._entries:
                                missing[key] = (grid.geometry, cin, cout)
        uncalibrated = [r for r in resolutions if self._calibration_key(r) not in self._calibrations]
        times: dict[str, list[float]] = {key: [] for key in missing}
        try:
            with progress_bar() as bar:
                task = bar.add_task(
                    "latency table", total=ENTRY_ROUNDS * len(missing) + len(uncalibrated), info=self.target.describe()
                )
                for _ in range(ENTRY_ROUNDS):
                    for key, (geometry, cin, cout) in missing.items():
                        times[key].append(self._time(geometry, cin, cout))
                        bar.advance(task)
                for key, entry_times in times.items():
                    self._store(key, min(entry_times))
                for resolution in uncalibrated:
                    self.calibration(resolution)
                    bar.advance(task)
        finally:
            self._save()

    def calibration(self, resolution: float) -> Calibration:
        """The fit of the time outside conv/linear layers at ``resolution`` (measured once, then cached)."""
        key = self._calibration_key(resolution)
        if key not in self._calibrations:
            self._calibrations[key] = self._calibrate(resolution)
            self._unsaved = True
        stored = self._calibrations[key]
        return Calibration(stored["fixed_ms"], stored["per_element_ms"])

    def _calibrate(self, resolution: float) -> dict:
        """Measure the model uniformly pruned to each of CALIBRATION_KEEPS; fit what the layers leave unexplained.

        The models take turns for ENTRY_ROUNDS rounds and each keeps its least loaded round.
        """
        compressor = Compressor(self.graph.model, self.graph.example_inputs)
        policies = [Policy.uniform(self.graph.prunable, keep, resolution=resolution) for keep in CALIBRATION_KEEPS]
        models = [compressor(policy) for policy in policies]
        rounds: list[list[float]] = [[] for _ in models]
        for _ in range(ENTRY_ROUNDS):
            for model, times in zip(models, rounds):
                times.append(measure_latency_ms(model, self.graph.example_inputs, self.target))
                self.measurements += 1
        points = []
        for keep, policy, times in zip(CALIBRATION_KEEPS, policies, rounds):
            channels = self.graph.layer_channels(self.graph.kept_channels(policy))
            points.append(
                {
                    "keep": keep,
                    "elements": self._elements(resolution, channels),
                    "measured_ms": min(times),
                    "layers_ms": sum(self._layer_ms(policy, channels).values()),
                }
            )
        fixed, per_element = line_fit(
            [p["elements"] for p in points], [p["measured_ms"] - p["layers_ms"] for p in points]
        )
        return {"fixed_ms": fixed, "per_element_ms": per_element, "points": points}

    def _channels(self, policy: Policy) -> Channels:
        """(in, out) channels of every layer under ``policy``, once the policy is known to apply and to be floating point."""
        _refuse_bits(policy)
        self.graph.check(policy)
        return self.graph.layer_channels(self.graph.kept_channels(policy))

    def _calibration_key(self, resolution: float) -> str:
        """The calibration's name: it fits what this table's grid leaves unexplained, so the grid is part of it."""
        return f"{self._architecture}@{resolution}/steps{self.steps}"

    def _layer_ms(self, policy: Policy, channels: Channels) -> dict[str, float]:
        """Interpolated milliseconds of every layer with these channels, measuring the grid points it reads first."""
        result = {}
        for layer in self.graph.layers:
            cin, cout = channels[layer.name]
            decision = policy.decision(layer.name)
            grids = self._layer_grids(layer, policy.resolution, None if decision.rank is None else decision.rank_scheme)
            if decision.rank is None:  # one grid
                result[layer.name] = self._interpolate(grids[0], cin, cout)
            else:
                rank = rank_of(decision.rank, cin, cout, as_pair(layer.kernel), decision.rank_scheme)
                result[layer.name] = self._interpolate(grids[0], cin, rank) + self._interpolate(grids[1], rank, cout)
        return result

    def _elements(self, resolution: float, channels: Channels) -> int:
        """Elements of the conv/linear layers' outputs (one example) with these channels at ``resolution``."""
        shapes = self.graph.shapes_at(resolution)
        return sum(
            channels[name][1] * math.prod(spatial(layer, shapes[name][2])) for name, layer in self._layers.items()
        )

    def _layer_grids(self, layer: LayerInfo, resolution: float, scheme: str | None) -> tuple[Grid, ...]:
        """The grid of ``layer`` at ``resolution``, or the grids of its two factors under low-rank ``scheme``."""
        key = (layer.name, resolution, scheme)
        if key not in self._grids:
            self._grids[key] = self._make_grids(layer, self.graph.shapes_at(resolution)[layer.name], scheme)
        return self._grids[key]

    def _make_grids(
        self, layer: LayerInfo, shapes: tuple[int, tuple[int, ...], tuple[int, ...]], scheme: str | None
    ) -> tuple[Grid, ...]:
        _, input_shape, output_shape = shapes
        module = self._modules[layer.name]
        fewest_in, fewest_out = self._fewest[layer.name]
        depthwise = layer.depthwise and layer.in_channels == layer.out_channels  # with a multiplier, it is never pruned
        multiple = 1 if depthwise else layer.groups
        outs = counts(fewest_out, layer.out_channels, self.steps, multiple)
        ins = outs if depthwise else counts(fewest_in, layer.in_channels, self.steps, multiple)
        bias = module.bias is not None
        if layer.kind == "linear":
            whole = Geometry("linear", bias=bias, size=tuple(input_shape[:-1]))
        else:
            conv = cast("nn.Conv1d | nn.Conv2d | nn.Conv3d", module)
            whole = Geometry(
                "conv",
                tuple(layer.kernel_size),
                tuple(layer.stride),
                tuple_or_str(conv.padding),
                tuple(conv.dilation),
                conv.padding_mode,
                0 if depthwise else layer.groups,
                bias,
                tuple(input_shape[1:]),
            )
        if scheme is None:
            return (Grid(whole, ins, outs),)
        ranks = counts(
            1, full_rank_of(layer.in_channels, layer.out_channels, as_pair(layer.kernel), scheme), self.steps, 1
        )
        first, second = factor_geometries(whole, scheme, tuple(output_shape[1:]))
        return Grid(first, ins, ranks), Grid(second, ranks, outs)

    def _interpolate(self, grid: Grid, cin: int, cout: int) -> float:
        """Bilinear interpolation of the grid's entries at (cin, cout); linear along the diagonal when depthwise.

        Corners of weight zero are not read, so a grid point is exactly its entry and measures nothing else.
        """
        o0, o1, wo = bracket(grid.outs, cout)
        if grid.depthwise:  # its groups follow its output channels, and its inputs match them
            corners = [((grid.outs[o0], grid.outs[o0]), 1 - wo), ((grid.outs[o1], grid.outs[o1]), wo)]
        else:
            i0, i1, wi = bracket(grid.ins, cin)
            corners = [
                ((grid.ins[i], grid.outs[o]), a * b)
                for i, a in ((i0, 1 - wi), (i1, wi))
                for o, b in ((o0, 1 - wo), (o1, wo))
            ]
        return sum(weight * self._entry_ms(grid.geometry, *point) for point, weight in corners if weight > 0)

    def _entry_ms(self, geometry: Geometry, cin: int, cout: int) -> float:
        """The entry for one layer size; measured now (the least loaded of ENTRY_ROUNDS timings) if the table lacks it."""
        key = geometry.key(cin, cout)
        if key not in self._entries:
            self._store(key, min(self._time(geometry, cin, cout) for _ in range(ENTRY_ROUNDS)))
        return self._entries[key]

    def _time(self, geometry: Geometry, cin: int, cout: int) -> float:
        """One timing of a fresh layer of this geometry and size on the target (`measure_latency_ms`'s code)."""
        self.measurements += 1
        layer = geometry.layer(cin, cout)
        return median_ms(layer, random_batch(geometry.example(cin), self.target.batch_size), self.target)

    def _store(self, key: str, milliseconds: float) -> None:
        self._entries[key] = milliseconds
        self._unsaved = True

    def _save(self) -> None:
        """Merge this table's entries into the file on disk, replacing it atomically."""
        if not self._unsaved:
            return
        stored = _read(self.path)
        stored["entries"].update(self._entries)
        stored["calibrations"].update(self._calibrations)
        self._entries, self._calibrations = stored["entries"], stored["calibrations"]
        document = {"format": TABLE_FORMAT, "version": TABLE_VERSION, "target": self.target.describe(), **stored}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.path.name}.", delete=False) as file:
            json.dump(document, file, indent=0, sort_keys=True)
        os.replace(file.name, self.path)
        self._unsaved = False


def _default_cache_dir() -> Path:
    return cache_root() / "latency"


def _read(path: Path) -> dict:
    """Entries and calibrations stored at ``path``; none when the file is missing or not a table of this version."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        document = None
    if (
        not isinstance(document, dict)
        or document.get("format") != TABLE_FORMAT
        or document.get("version") != TABLE_VERSION
        or not all(isinstance(document.get(part), dict) for part in ("entries", "calibrations"))
    ):
        return {"entries": {}, "calibrations": {}}
    return {"entries": document["entries"], "calibrations": document["calibrations"]}


def _refuse_bits(policy: Policy) -> None:
    for name, decision in policy.layers.items():
        if decision.quantized:
            raise ConfigError(
                f"policy gives layer {name!r} {decision.weight_bits}-bit weights, but the latency table predicts "
                "floating-point models only (simulated quantization's time is not a deployment latency)."
            )


def _architecture_key(graph: ModelGraph, modules: dict[str, nn.Module]) -> str:
    """A hash of what the model's time depends on: its layers' geometry, channel groups and leaf module types."""
    layers = [
        [
            layer.name,
            layer.kind,
            layer.in_channels,
            layer.out_channels,
            layer.groups,
            layer.kernel_size,
            layer.stride,
            layer.input_shape,
            layer.output_shape,
            str(getattr(modules[layer.name], "padding", "")),
            str(getattr(modules[layer.name], "dilation", "")),
            modules[layer.name].bias is not None,
        ]
        for layer in graph.layers
    ]
    groups = [[group.channels, group.layers, group.consumers, group.blocks] for group in graph.groups]
    leaves = [type(module).__name__ for module in graph.model.modules() if not list(module.children())]
    described = json.dumps([list(graph.example_inputs.shape[1:]), layers, groups, leaves])
    return hashlib.sha256(described.encode()).hexdigest()[:16]
