"""Gates and products: squeeze-excitation and its kin, swish written by hand, constant factors.

A sigmoid, hard-sigmoid or softmax whose output multiplies another tensor is a *gate*
(squeeze-excitation, ECA, CBAM, gather-excite, selective-kernel and split attention). Under
``activations="relu-like"`` the rectifying rules take the gate as a constant factor, as
eval-mode BatchNorm's scale is one: the signal reaches the gated tensor multiplied by the
gate's value, and nothing flows into the gate's branch (whatever computed the gate from the
gate's input). A gate's output may be reshaped, expanded or combined with numbers on the
way (``y.view(b, c, 1, 1).expand_as(x)``, ``1 - g``): anything computed from a gate alone is
its branch. A sigmoid whose output reaches the layer any other way (on the main path) is
refused, as is any gate under ``activations="strict"``.

A gate of the very tensor it multiplies is not a gate but an activation: ``x * x.sigmoid()``
is SiLU/Swish, ``x * torch.sigmoid(1.702 * x)`` QuickGELU, ``x * F.hardsigmoid(x)``
Hardswish, and they get the rectifier rule of :mod:`~deconvnet.engine.ops.smooth`.

The product entry also gives constant factors (LayerScale's ``x * gamma``, ``x * 2``) a
windowed rule: the signal times the factor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import (
    ATEN,
    aten,
    constant,
    in_place,
    is_in_place,
    methods,
    spellings,
    tensors,
)
from deconvnet.engine.ops.rectifiers import RectifyNode
from deconvnet.engine.ops.refusal import refuse
from deconvnet.engine.ops.smooth import derivative_of
from deconvnet.engine.rules import Rectify, ReversePolicy, apply_rule

GATE_ANALOGUE = "the gate rule where its output multiplies another tensor (a constant factor)"
MAIN_PATH = "on the main path (a gate is a sigmoid, hard-sigmoid or softmax whose output multiplies another tensor)"  # noqa: E501
SHAPE_ONLY: frozenset[op.TorchFunction] = methods("expand_as", "view_as", "reshape_as", "type_as")
"""Calls whose other tensor gives only a shape or type: a gate stays a gate through them."""


@dataclass(frozen=True)
class Gated:
    """A tensor computed from a gate alone: a constant factor where it multiplies.

    ``source`` is the tensor the gate was computed from, when the gate is an elementwise
    ``σ(beta·source)`` (or hard-sigmoid): multiplying ``source`` itself by it is an
    activation, not gating."""

    elementwise: Callable[[Tensor], Tensor] | None = None
    derivative: Callable[[Tensor], Tensor] | None = None
    source: Tensor | None = None
    version: int = 0


@dataclass(frozen=True)
class Scaled:
    """``factor · source`` (how QuickGELU writes the sigmoid's argument, ``1.702 * x``)."""

    source: Tensor
    version: int
    factor: float


@dataclass(frozen=True)
class GateCall:
    input: Any
    inplace: bool
    elementwise: bool


def _swish(gate: Callable[[Tensor], Tensor], beta: float, x: Tensor) -> Tensor:
    return x * gate(x if beta == 1 else beta * x)


def _sigmoid_swish_derivative(beta: float, x: Tensor) -> Tensor:
    """``d/dx [x·σ(βx)] = silu'(βx)``."""
    return derivative_of(ATEN.silu_backward.default, x if beta == 1 else beta * x)


def _hard_swish_derivative(beta: float, x: Tensor) -> Tensor:
    """``d/dx [x·hardsigmoid(βx)] = hardswish'(βx)``."""
    return derivative_of(ATEN.hardswish_backward.default, x if beta == 1 else beta * x)


_SIGMOID = (
    spellings("sigmoid", "sigmoid_", "expit")
    | methods("sigmoid", "sigmoid_")
    | frozenset({torch.special.expit})
    | aten("sigmoid", "sigmoid_")
)
_HARD_SIGMOID = spellings("hardsigmoid", "hardsigmoid_") | aten("hardsigmoid", "hardsigmoid_")
_SOFTMAX = (
    spellings("softmax")
    | methods("softmax")
    | frozenset({torch.special.softmax, ATEN._softmax.default, ATEN.softmax.int})
)


class Gate(op.Op[GateCall]):
    """Sigmoid, hard-sigmoid and softmax: gates under ``activations="relu-like"``
    (refused on the main path), refused under ``"strict"``."""

    functions = _SIGMOID | _HARD_SIGMOID | _SOFTMAX

    def parse(self, raw: op.TorchCall) -> GateCall:
        inplace = is_in_place(raw.func) or (
            raw.func is F.hardsigmoid and bool(raw.argument(1, "inplace", False))
        )
        return GateCall(raw.input, inplace, elementwise=raw.func not in _SOFTMAX)

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: GateCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        if not mode.policy.analogues:
            return refuse(raw, mode, call.inplace, analogue=GATE_ANALOGUE)
        x = call.input
        before = mode.recall(x) if isinstance(x, Tensor) else None
        out = refuse(raw, mode, call.inplace, reason=MAIN_PATH)
        if not isinstance(out, Tensor):
            return out
        fact = Gated()
        if call.elementwise and isinstance(x, Tensor) and not call.inplace:
            source, beta = x, 1.0
            if isinstance(before, Scaled):
                source, beta = before.source, before.factor
            hard = raw.func in _HARD_SIGMOID
            gate = F.hardsigmoid if hard else torch.sigmoid
            derivative = _hard_swish_derivative if hard else _sigmoid_swish_derivative
            fact = Gated(
                partial(_swish, gate, beta), partial(derivative, beta), source, source._version
            )
        mode.remember(out, fact)
        return out


@dataclass(frozen=True)
class ProductCall:
    left: Any
    right: Any
    inplace: bool


class Product(op.Op[ProductCall]):
    """``a * b`` in every spelling: a gate product, a hand-written swish, or a product by a
    constant (which has a windowed rule)."""

    functions = (
        frozenset[op.TorchFunction]({torch.mul, torch.multiply})
        | methods("mul", "mul_", "multiply", "multiply_", "__mul__", "__rmul__", "__imul__")
        | frozenset[op.TorchFunction]({ATEN.mul.Tensor, ATEN.mul.Scalar, ATEN.mul_.Tensor})
    )

    def parse(self, raw: op.TorchCall) -> ProductCall:
        inplace = is_in_place(raw.func) or raw.func is Tensor.__imul__
        return ProductCall(raw.input, raw.argument(1, "other"), inplace)

    def factors(self, call: ProductCall) -> tuple[Any, ...]:
        return (call.left, call.right)

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return policy.analogues

    def rewire(self, call: ProductCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        left, right = call.left, call.right
        facts = (mode.recall(left), mode.recall(right))
        swish = _swish_of(left, right, *facts)
        if swish is not None:
            value, gate = swish
            rule = mode.policy.reverse_rule
            assert gate.elementwise is not None and gate.derivative is not None
            derivative = gate.derivative
            rectify = Rectify(rule, gate.elementwise, lambda x: rule.local(derivative(x)))
            return in_place(left, apply_rule(value, rectify), call.inplace)
        gated = [isinstance(fact, Gated) for fact in facts]
        branch = [g or constant(v) for g, v in zip(gated, (left, right), strict=True)]
        if any(gated) and all(branch):  # a gate times a gate or a number: still its branch
            out = raw.run()
            mode.remember(out, Gated())
            return out
        if gated[1]:
            return in_place(left, left * right.detach(), call.inplace)
        if gated[0]:
            return in_place(left, left.detach() * right, call.inplace)
        out = raw.run()
        if not call.inplace and isinstance(out, Tensor):
            for tensor, number in ((left, right), (right, left)):
                if isinstance(tensor, Tensor) and isinstance(number, int | float):
                    mode.remember(out, Scaled(tensor, tensor._version, float(number)))
        return out

    def node(self, call: ProductCall, recording: op.Recording, before: Any) -> op.Node:
        left, right = call.left, call.right
        shape = tuple(recording.outputs[0].shape)
        if recording.policy.analogues:
            left_fact, right_fact = recording.recall(left), recording.recall(right)
            swish = _swish_of(left, right, left_fact, right_fact)
            if swish is not None:
                return _swish_node(swish[0], swish[1], recording, call.inplace)
            left_gated, right_gated = isinstance(left_fact, Gated), isinstance(right_fact, Gated)
            if call.inplace and (left_gated or right_gated or left_fact or right_fact):
                raise op.Opaque  # ``x.mul_(x.sigmoid())``: x has changed, the general path knows
            if right_gated and not left_gated:
                return op.factor_node(recording.source(left), right, shape)
            if left_gated and not right_gated:
                return op.factor_node(recording.source(right), left, shape)
        for value, other in ((left, right), (right, left)):
            if isinstance(value, Tensor) and recording.lookup(value) is not None:
                if isinstance(other, int | float):
                    other = torch.tensor(float(other), dtype=value.dtype, device=value.device)
                if isinstance(other, Tensor) and recording.lookup(other) is None:
                    return op.factor_node(recording.source(value), other, shape)
        raise op.Opaque


def _swish_of(
    left: Any, right: Any, left_fact: Any, right_fact: Any
) -> tuple[Tensor, Gated] | None:
    """``(x, its gate)`` when one side is an elementwise gate of the other side itself."""
    for value, fact in ((left, right_fact), (right, left_fact)):
        if (
            isinstance(fact, Gated)
            and fact.source is not None
            and fact.source is value
            and value._version == fact.version
        ):
            return value, fact
    return None


def _swish_node(x: Tensor, gate: Gated, recording: op.Recording, inplace: bool) -> op.Node:
    """A hand-written swish on the windowed path: a rectifier with its derivative's mask."""
    if inplace or gate.derivative is None:
        raise op.Opaque
    rule = recording.policy.reverse_rule
    mask = rule.local(gate.derivative(x.detach())) if rule.masks else None
    return RectifyNode((recording.source(x),), mask=mask)


def keeps_gate(call: op.TorchCall, recall: Callable[[Any], Any]) -> bool:
    """``call`` computes a gate's branch: its first argument is gated and every other
    tensor is gated, constant, or read only for its shape."""
    if not isinstance(recall(call.input), Gated):
        return False
    if call.func in SHAPE_ONLY:
        return True
    others = list(tensors((call.args[1:], call.kwargs)))
    return all(constant(t) or isinstance(recall(t), Gated) for t in others)


FAMILIES: tuple[op.Op[Any], ...] = (Gate(), Product())
