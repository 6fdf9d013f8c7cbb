"""Policies: which rule each operation gets, decided once from (rule, lrn, collisions).

A :class:`ReversePolicy` is validated at construction. During the forward pass its
:class:`RuleMode` (a ``TorchFunctionMode``) sees every torch call, whatever its form —
module, functional, method, in-place — and swaps the ones with a rule for their rewired
version. Everything else (convolution, linear, average pooling, concatenation, addition,
BatchNorm in eval mode, reshapes) keeps autograd's exact transpose: transposed filters
with no bias, summed copies, scaled signals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from deconvnet.engine import layer_types as types
from deconvnet.engine import rules
from deconvnet.errors import UnsupportedLayerError

Handler = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class ReversePolicy:
    """The reverse-pass semantics.

    Parameters
    ----------
    rule : ``"zeiler"`` (deconvnet), ``"guided"``, ``"gradient"`` or ``"none"`` (no
        rectification, the old Caffe demo).
    lrn : ``"skip"`` (identity; the paper is silent), ``"gradient"`` (exact gradient) or
        ``"reapply"`` (apply the forward LRN to the signal, as the old Caffe demo did).
    collisions : ``"sum"`` (exact transpose of max pooling) or ``"overwrite"`` (later
        pooling windows overwrite earlier ones, as the old Caffe InvPooling layer did).
    """

    rule: str = "zeiler"
    lrn: str = "skip"
    collisions: str = "sum"
    handlers: dict[Any, Handler] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("rule", self.rule, rules.RULES),
            ("lrn", self.lrn, rules.LRN_MODES),
            ("collisions", self.collisions, rules.COLLISION_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        object.__setattr__(self, "handlers", self._build_handlers())

    def _build_handlers(self) -> dict[Any, Handler]:
        table: dict[Any, Handler] = {}
        if self.rule != "gradient":
            table.update(dict.fromkeys(types.RELU, self._relu))
            table.update(dict.fromkeys(types.LEAKY_RELU, self._leaky_relu))
            table.update(dict.fromkeys(types.PRELU, self._prelu))
            table.update(dict.fromkeys(types.HARDTANH, self._hardtanh))
            table.update(dict.fromkeys(types.THRESHOLD, self._threshold))
            table.update(dict.fromkeys(types.SMOOTH_ACTIVATIONS, self._unsupported))
        if self.lrn != "gradient":
            table.update(dict.fromkeys(types.LOCAL_RESPONSE_NORM, self._lrn))
        if self.collisions == "overwrite":
            table.update(dict.fromkeys(types.MAX_POOL, self._max_pool))
        return table

    # -- rectifiers ---------------------------------------------------------------------

    def _rectifier(self, function: Callable[[Tensor], Tensor]) -> rules.ReverseRule:
        if self.rule == "none":
            return rules.PassThrough(function)
        return rules.ReLUDeconv() if self.rule == "zeiler" else rules.ReLUGuided()

    def _relu(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x = args[0]
        inplace = func in types.RELU_INPLACE or _flag(args, kwargs, 1, "inplace")
        return _maybe_inplace(x, rules.apply_rule(x, self._rectifier(torch.relu)), inplace)

    def _leaky_relu(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x = args[0]
        slope = _arg(args, kwargs, 1, "negative_slope", 0.01)
        function = partial(torch.nn.functional.leaky_relu, negative_slope=slope)
        rule = self._leaky_rule(function, slope)
        return _maybe_inplace(x, rules.apply_rule(x, rule), _flag(args, kwargs, 2, "inplace"))

    def _prelu(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x, weight = args[0], _arg(args, kwargs, 1, "weight", None)
        function = partial(torch.nn.functional.prelu, weight=weight)
        return rules.apply_rule(x, self._leaky_rule(function, weight))

    def _leaky_rule(self, function: Callable[[Tensor], Tensor], slope: Any) -> rules.ReverseRule:
        if self.rule == "none":
            return rules.PassThrough(function)
        if self.rule == "zeiler":
            return rules.Reapply(function)
        return rules.LeakyGuided(function, slope)

    def _hardtanh(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x = args[0]
        if func is torch.nn.functional.relu6:
            low, high, inplace = 0.0, 6.0, _flag(args, kwargs, 1, "inplace")
        else:
            low = _arg(args, kwargs, 1, "min_val", -1.0)
            high = _arg(args, kwargs, 2, "max_val", 1.0)
            inplace = _flag(args, kwargs, 3, "inplace")
        if (low, high) != (0.0, 6.0):
            self._unsupported(func, args, kwargs)
        if self.rule == "none":
            rule: rules.ReverseRule = rules.PassThrough(torch.nn.functional.relu6)
        else:
            rule = rules.ReLU6Deconv() if self.rule == "zeiler" else rules.ReLU6Guided()
        return _maybe_inplace(x, rules.apply_rule(x, rule), inplace)

    def _threshold(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x = args[0]
        threshold = _arg(args, kwargs, 1, "threshold", None)
        value = _arg(args, kwargs, 2, "value", None)
        if (threshold, value) != (0, 0):  # only Threshold(0, 0) is a ReLU
            self._unsupported(func, args, kwargs)
        inplace = _flag(args, kwargs, 3, "inplace")
        return _maybe_inplace(x, rules.apply_rule(x, self._rectifier(torch.relu)), inplace)

    def _unsupported(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise UnsupportedLayerError(
            f"rule {self.rule!r} has no definition for {_name(func)}{_where()}; "
            "use rule='gradient' for this model"
        )

    # -- normalisation and pooling --------------------------------------------------------

    def _lrn(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        x = args[0]
        function = _bind_rest(func, args, kwargs)
        rule = rules.PassThrough(function) if self.lrn == "skip" else rules.Reapply(function)
        return rules.apply_rule(x, rule)

    def lrn_module_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        """Forward hook for LRN modules that do not go through ``F.local_response_norm``."""
        if self.lrn == "gradient":
            return None
        rule = (
            rules.PassThrough(module.forward)
            if self.lrn == "skip"
            else rules.Reapply(module.forward)
        )
        return rules.apply_rule(inputs[0], rule)

    def _max_pool(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wants_indices = func in types.MAX_POOL_ALWAYS_INDICES or kwargs.get("return_indices", False)
        kwargs = {key: value for key, value in kwargs.items() if key != "return_indices"}
        if len(args) > 2 and isinstance(args[2], (list, tuple)) and not args[2]:
            args = (*args[:2], None, *args[3:])  # torch.max_pool2d's "stride=[]" means kernel
        pooled, indices = types.MAX_POOL[func](*args, **kwargs)
        pooled = rules.overwrite_collisions(pooled, indices, args[0].shape)
        return (pooled, indices) if wants_indices else pooled


class RuleMode(TorchFunctionMode):
    """Swap every torch call that has a rule under ``policy`` for its rewired version.

    ``switches`` maps max-pool module names to argmax indices recorded elsewhere (e.g. Caffe's
    mask blobs): those modules then unpool through the given switches instead of their own,
    which is how another framework's near-tie choices are reproduced exactly.
    """

    def __init__(self, policy: ReversePolicy, switches: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.switches = dict(switches or {})

    def __torch_function__(
        self,
        func: Any,
        types_: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self.switches and func in types.MAX_POOL and _CURRENT_MODULES:
            indices = self.switches.get(_CURRENT_MODULES[-1][0])
            if indices is not None:
                return self._pool_through(func, args, kwargs, indices)
        handler = self.policy.handlers.get(func)
        if func in types.LOCAL_RESPONSE_NORM and _needs_upcast(args[0] if args else None):
            func = partial(_upcast, func)
        if handler is None:
            return func(*args, **kwargs)
        return handler(func, args, kwargs)

    def _pool_through(
        self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], indices: Tensor
    ) -> Any:
        x = args[0]
        indices = indices.to(device=x.device, dtype=torch.long)
        pooled = x.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)
        if self.policy.collisions == "overwrite":
            pooled = rules.overwrite_collisions(pooled, indices, x.shape)
        wants_indices = func in types.MAX_POOL_ALWAYS_INDICES or kwargs.get("return_indices", False)
        return (pooled, indices) if wants_indices else pooled


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _needs_upcast(x: Any) -> bool:
    """CPU has no float16/bfloat16 kernel for the 3-D average pooling inside
    ``F.local_response_norm``."""
    return isinstance(x, Tensor) and x.dtype in LOW_PRECISION and x.device.type == "cpu"


def _upcast(func: Any, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """``func`` computed in float32 and rounded back to ``x``'s dtype (differentiable)."""
    result: Tensor = func(x.float(), *args, **kwargs)
    return result.to(x.dtype)


# (name, type name) of the modules being run, innermost last; set by ModuleTracker's hooks.
_CURRENT_MODULES: list[tuple[str, str]] = []


class ModuleTracker:
    """Forward pre/post hooks that keep the dotted name of the running module."""

    def __init__(self) -> None:
        _CURRENT_MODULES.clear()

    @staticmethod
    def push(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            _CURRENT_MODULES.append((name, type(module).__name__))

        return hook

    @staticmethod
    def pop(module: nn.Module, inputs: Any, output: Any) -> None:
        if _CURRENT_MODULES:
            _CURRENT_MODULES.pop()


def _where() -> str:
    if not _CURRENT_MODULES:
        return ""
    name, kind = _CURRENT_MODULES[-1]
    return f" in module {name} ({kind})"


def _name(func: Any) -> str:
    return getattr(func, "__name__", repr(func)).lstrip("_")


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, key: str, default: Any) -> Any:
    if key in kwargs:
        return kwargs[key]
    return args[index] if len(args) > index else default


def _flag(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, key: str) -> bool:
    return bool(_arg(args, kwargs, index, key, False))


def _bind_rest(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[Tensor], Tensor]:
    """``func`` with every argument but the first bound: ``f(t) = func(t, *args[1:], **kwargs)``."""
    rest = args[1:]

    def bound(tensor: Tensor) -> Tensor:
        return func(tensor, *rest, **kwargs)  # type: ignore[no-any-return]

    return bound


def _maybe_inplace(x: Tensor, result: Tensor, inplace: bool) -> Tensor:
    """Honour in-place activations: the caller may keep using ``x`` instead of the result."""
    if inplace:
        return x.copy_(result)
    return result
