"""One traced forward pass: every conv/linear call's shapes and MACs, the other MACs by module, refusing what one trace cannot describe."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from autocomp.cost.macs import COUNTED_TYPES, MacCounter
from autocomp.errors import ConfigError
from autocomp.modes import evaluating


@dataclass(frozen=True)
class Trace:
    """What one forward pass computed, per example: every conv/linear call, in execution order, and the MACs of
    matrix products outside them (attention, functional calls, custom modules), by the module that computed them."""

    layers: dict[str, dict]
    """Layer name -> input_shape, output_shape (without the batch) and macs."""
    other_macs: dict[str, int]
    """Module name ('' for the model itself) -> MACs it computed outside any conv/linear layer."""


def trace_layers(model: nn.Module, example_inputs: torch.Tensor) -> Trace:
    """Run one forward pass and record every conv/linear call, in execution order, and the other MACs.

    Refuses (ConfigError naming the module) what one trace cannot describe: a layer with
    weights called more than once (shared), and control flow on the input's values.
    """
    names = {module: name for name, module in model.named_modules()}
    records: dict[str, dict] = {}
    batch = example_inputs.shape[0]
    calls: dict[nn.Module, int] = {}
    stack: list[nn.Module] = []

    def enter(module: nn.Module, inputs: tuple) -> None:
        stack.append(module)
        if _has_own_state(module):
            calls[module] = calls.get(module, 0) + 1
            if calls[module] > 1:
                what = f"layer {names[module]!r}"
                if not isinstance(module, COUNTED_TYPES):
                    what = f"module {names[module]!r} ({type(module).__name__})"
                raise ConfigError(f"{what} is called more than once in forward; shared layers cannot be pruned.")

    def leave(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if stack and stack[-1] is module:
            stack.pop()
        if isinstance(module, COUNTED_TYPES):
            records[names[module]] = {
                "input_shape": tuple(inputs[0].shape[1:]),
                "output_shape": tuple(output.shape[1:]),
            }

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with (
            evaluating(model),
            torch.no_grad(),
            MacCounter(model) as counter,
            _ValueReadGuard(example_inputs, lambda: stack[-1] if stack else model, names),
        ):
            model(example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    for name, record in records.items():
        record["macs"] = counter.own[modules[name]] // batch
    other = {
        names[module]: macs // batch
        for module, macs in counter.own.items()
        if macs and not isinstance(module, COUNTED_TYPES)
    }
    return Trace(records, other)


def _has_own_state(module: nn.Module) -> bool:
    """Whether ``module`` holds weights or buffers itself (calling it twice shares them)."""
    own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return bool(own)


# Tensor -> Python conversions: what an `if` on a tensor, `.item()` or `int(tensor)` calls.
_VALUE_READS = frozenset(
    {
        "__bool__",
        "item",
        "__int__",
        "__float__",
        "__index__",
        "__complex__",
        "__contains__",
        "tolist",
        "numpy",
        "equal",
        "allclose",
        "is_nonzero",
    }
)


def _token_ids(args: tuple) -> bool:
    """Whether a value read is of integer values (token ids, indices): language models check them (for padding)
    without steering which layers run."""
    return (
        bool(args)
        and isinstance(args[0], torch.Tensor)
        and not (args[0].is_floating_point() or args[0].dtype == torch.bool)
    )


class _ValueReadGuard(torch.overrides.TorchFunctionMode):
    """Refuse a forward pass that turns a tensor computed from the input into a Python value.

    Such a value can steer Python control flow (``if x.mean() > 0: ...``), so one trace does
    not describe the model and pruning by it could break the branches it did not take.
    Tensors derived from the input are followed op by op; shapes (``x.shape``) and integer values (token ids)
    are fine.
    """

    def __init__(self, source: torch.Tensor, current, names: Mapping[nn.Module, str]) -> None:
        super().__init__()
        self._derived: dict[int, weakref.ref[torch.Tensor]] = {}
        self._current = current
        self._names = names
        self._mark(source)

    def _mark(self, tensor: torch.Tensor) -> None:
        self._derived[id(tensor)] = weakref.ref(tensor)

    def _is_derived(self, value: object) -> bool:
        ref = self._derived.get(id(value)) if isinstance(value, torch.Tensor) else None
        return ref is not None and ref() is value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        derived = any(self._is_derived(leaf) for leaf in tree_leaves((args, kwargs)))
        if derived and getattr(func, "__name__", None) in _VALUE_READS and not _token_ids(args):
            module = self._current()
            name = self._names.get(module, "")
            where = f"module {name!r} ({type(module).__name__})" if name else f"the forward of {type(module).__name__}"
            raise ConfigError(
                f"{where} reads the value of a tensor computed from the input ({func.__name__}), so its control flow "
                "can depend on the data and one trace cannot describe the model; use tensor operations such as "
                "torch.where instead."
            )
        result = func(*args, **kwargs)
        if derived:
            for leaf in tree_leaves(result):
                if isinstance(leaf, torch.Tensor):
                    self._mark(leaf)
            name = getattr(func, "__name__", "")
            if args and isinstance(args[0], torch.Tensor) and (name.endswith("_") or name == "__setitem__"):
                self._mark(args[0])  # written in place with values from the input
        return result
