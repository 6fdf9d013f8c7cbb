"""Rectifiers and the other activations, in every spelling.

A rule attached to ``nn.ReLU`` alone misses ``F.relu``, ``torch.relu`` and ``x.relu_()``
(Captum's known trap), so rectifiers are caught at the function level, where every form
passes. ReLU — also written ``Threshold(0, 0)``, ``x.clamp(min=0)``, ``torch.clamp_min(x,
0)``, ``torch.maximum(x, zeros)`` or ``torch.where(x > 0, x, 0)`` — and ReLU6 (``F.relu6``,
``hardtanh(0, 6)``, ``clamp(0, 6)``) follow the rule of :mod:`~deconvnet.engine.rules`
(ReLU6 by its rectifying part: the cap at 6 bounds forward activations, the reverse signal
has no such scale); LeakyReLU, PReLU and eval-mode RReLU get the leaky analogue; the smooth
rectifiers (:mod:`~deconvnet.engine.ops.smooth`) get the ReLU analogue under
``activations="relu-like"``. Activations with no deconvnet or guided analogue (tanh, erf,
shrinkage, softmin …) are refused when the signal reaches them, never passed as their
gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import (
    ATEN,
    aten,
    in_place,
    is_in_place,
    is_zero,
    methods,
    spellings,
)
from deconvnet.engine.ops.refusal import refuse
from deconvnet.engine.rules import (
    LeakyGuided,
    PassThrough,
    Reapply,
    Rectifier,
    Rectify,
    ReversePolicy,
    ReverseRule,
    apply_rule,
)
from deconvnet.engine.window import Window, crop

RELU6_RANGE = (0.0, 6.0)
RRELU_SLOPES = (1 / 8, 1 / 3)
"""``F.rrelu``'s default ``lower`` and ``upper``."""
SMOOTH_ANALOGUE = "the ReLU rule (relu of the signal; guided: times max(f'(x), 0))"


@dataclass(frozen=True)
class RectifierCall:
    """A rectifier's input and in-place flag; ``defined`` is False for a variant with no
    rule (a threshold other than 0, a clamp other than ReLU or ReLU6); ``cap`` is 6 for
    ReLU6; ``options`` are a smooth rectifier's parameters (GELU's approximation, ELU's
    alpha …). ``input`` is None for a call that is not a rectifier at all (``torch.where``
    choosing between two branches): it runs as written."""

    input: Any
    inplace: bool = False
    defined: bool = True
    cap: float | None = None
    options: tuple[Any, ...] = ()


class _Rectifier(op.Op[RectifierCall]):
    """A rectifier under the rule: ``rule.rectify(signal, mask)`` with the mask
    ``rule.local(f'(x))`` recorded when the rule masks.

    ``analogue``: a smooth rectifier, defined only under ``activations="relu-like"``."""

    analogue: ClassVar[bool] = False

    def function(self, call: RectifierCall, x: Tensor) -> Tensor:
        """The rectifier's forward value (out of place)."""
        return torch.relu(x) if call.cap is None else F.relu6(x)

    def derivative(self, call: RectifierCall, x: Tensor) -> Tensor:
        """Its local derivative ``f'(x)``, in ``x``'s dtype."""
        inside = x > 0
        if call.cap is not None:
            inside = inside & (x < call.cap)
        return inside.to(x.dtype)

    def defined(self, call: RectifierCall, policy: ReversePolicy) -> bool:
        """The call has a rule under the policy."""
        return call.defined and (not self.analogue or policy.activation_mode.analogues)

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: RectifierCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        if call.input is None:
            return raw.run()
        if not self.defined(call, mode.policy):
            analogue = SMOOTH_ANALOGUE if self.analogue and call.defined else ""
            return refuse(raw, mode, call.inplace, analogue=analogue)
        rule = mode.policy.reverse_rule
        # the rule keeps the call's settings, not its input: after an in-place op the
        # input's history holds the rule, a cycle through autograd's graph that Python's
        # collector cannot see (it kept every saved tensor of the forward pass alive)
        settings = replace(call, input=None)
        rectify = Rectify(
            rule,
            partial(self.function, settings),
            lambda x: rule.local(self.derivative(settings, x)),
        )
        return in_place(call.input, apply_rule(call.input, rectify), call.inplace)

    def before(self, call: RectifierCall, policy: ReversePolicy) -> Tensor | None:
        rule = policy.reverse_rule
        if call.input is None or not (
            call.defined and (rule.is_gradient or self.defined(call, policy))
        ):
            raise op.Opaque
        x = call.input
        if not (isinstance(x, Tensor) and rule.masks):
            return None
        return rule.local(self.derivative(call, x.detach()))

    def node(self, call: RectifierCall, recording: op.Recording, before: Any) -> op.Node:
        return RectifyNode((recording.source(call.input),), mask=before)


def _inplace(raw: op.TorchCall, position: int) -> bool:
    return is_in_place(raw.func) or bool(raw.argument(position, "inplace", False))


class ReLU(_Rectifier):
    """``F.relu``, ``torch.relu``, ``x.relu()``, their in-place forms, ATen's."""

    functions = (
        frozenset({F.relu, torch.relu, torch.relu_})
        | methods("relu", "relu_")
        | aten("relu", "relu_")
    )

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        return RectifierCall(raw.input, _inplace(raw, 1))


class Threshold(_Rectifier):
    """``F.threshold``: a ReLU when it is ``Threshold(0, 0)``."""

    functions = frozenset({F.threshold, torch.threshold})

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        threshold = raw.argument(1, "threshold")
        value = raw.argument(2, "value")
        return RectifierCall(raw.input, _inplace(raw, 3), (threshold, value) == (0, 0))


class ReLU6(_Rectifier):
    """``F.relu6`` and ``F.hardtanh(0, 6)`` (``nn.ReLU6``): rectified, capped at 6."""

    functions = frozenset[op.TorchFunction]({F.hardtanh, F.relu6}) | aten("hardtanh")

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        if raw.func is F.relu6:
            return RectifierCall(raw.input, _inplace(raw, 1), cap=RELU6_RANGE[1])
        low = raw.argument(1, "min_val", -1.0)
        high = raw.argument(2, "max_val", 1.0)
        return RectifierCall(
            raw.input, _inplace(raw, 3), (low, high) == RELU6_RANGE, cap=RELU6_RANGE[1]
        )


_CLAMP_MIN = spellings("clamp_min", "clamp_min_") | methods("clamp_min", "clamp_min_")
_CLAMP_MAX = spellings("clamp_max", "clamp_max_") | methods("clamp_max", "clamp_max_")


class Clamp(_Rectifier):
    """``x.clamp(min=0)``, ``torch.clamp_min(x, 0)`` (a ReLU) and ``clamp(0, 6)`` (ReLU6), in
    every spelling; any other clamp of the signal has no rule (like ``hardtanh(-1, 1)``)."""

    functions = (
        spellings("clamp", "clamp_", "clip", "clip_")
        | methods("clamp", "clamp_", "clip", "clip_")
        | _CLAMP_MIN
        | _CLAMP_MAX
        | aten("clamp", "clamp_", "clip", "clamp_min", "clamp_min_", "clamp_max")
    )

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        name = str(getattr(raw.func, "__name__", "")).split(".")[0]
        if raw.func in _CLAMP_MIN or name.startswith("clamp_min"):
            low, high = raw.argument(1, "min"), None
        elif raw.func in _CLAMP_MAX or name.startswith("clamp_max"):
            low, high = None, raw.argument(1, "max")
        else:
            low, high = raw.argument(1, "min"), raw.argument(2, "max")
        relu6 = _number(high) and high == RELU6_RANGE[1]
        defined = is_zero(low) and (high is None or relu6)
        cap = RELU6_RANGE[1] if relu6 else None
        return RectifierCall(raw.input, is_in_place(raw.func), defined, cap=cap)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Maximum(_Rectifier):
    """``torch.maximum(x, zeros)`` (either order, ``torch.max`` of two tensors too): a ReLU
    when one side is a constant zero; the maximum of two signals runs as written (its
    transpose routes the signal to the larger input, as unpooling does)."""

    functions = frozenset({torch.maximum, torch.max}) | methods("maximum", "max") | aten("maximum")

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        first, second = raw.input, raw.argument(1, "other")
        if not (isinstance(first, Tensor) and isinstance(second, Tensor)):
            return RectifierCall(None)  # a reduction: torch.max(x), torch.max(x, dim)
        if is_zero(second):
            return RectifierCall(first)
        if is_zero(first):
            return RectifierCall(second)
        return RectifierCall(None)


class Where(_Rectifier):
    """``torch.where(x > 0, x, 0)`` and ``torch.where(x < 0, 0, x)`` (``>=``/``<=`` alike):
    a ReLU, recognised by its values (the condition is ``x > 0`` wherever ``x ≠ 0``, the
    other branch a constant zero); any other choice runs as written."""

    functions = frozenset({torch.where}) | methods("where") | aten("where")

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        if raw.func is Tensor.where:  # x.where(condition, y) is where(condition, x, y)
            chosen, condition, other = (
                raw.input,
                raw.argument(1, "condition"),
                raw.argument(2, "other"),
            )
        else:
            condition, chosen, other = (
                raw.argument(0, "condition"),
                raw.argument(1, "input"),
                raw.argument(2, "other"),
            )
        for value, zero, positive in ((chosen, other, True), (other, chosen, False)):
            if _rectifies(condition, value, zero, positive):
                return RectifierCall(value)
        return RectifierCall(None)


def _rectifies(condition: Any, value: Any, zero: Any, positive: bool) -> bool:
    """``where(condition, value, zero)`` (or ``where(condition, zero, value)``) is
    ``relu(value)`` here: the same shape, and the condition is ``value > 0`` (or ``value <
    0``) wherever the value is not 0."""
    if not (isinstance(condition, Tensor) and isinstance(value, Tensor) and is_zero(zero)):
        return False
    if condition.dtype != torch.bool or condition.shape != value.shape:
        return False
    value = value.detach()
    wanted = value > 0 if positive else value < 0
    return bool(torch.equal(condition.detach() & (value != 0), wanted))


@dataclass(eq=False)
class RectifyNode(op.Node):
    """A rectifier: the rule's rectification, with the forward mask when it masks."""

    kind: ClassVar[str] = "rectify"

    mask: Tensor | None

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        mask = self.mask
        if mask is not None:
            mask = crop(mask, step.index, signal.tops, signal.lefts, signal.size)
        return signal.with_data(step.policy.reverse_rule.rectify(signal.data, mask))


# -- leaky rectifiers --------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakyCall:
    input: Tensor
    function: Rectifier
    slope: Tensor | float
    inplace: bool
    defined: bool = True


class _Leaky(op.Op[LeakyCall]):
    """The deconvnet passes the signal through the same leaky rectifier (as ``relu`` for
    ReLU); guided backprop takes the local gradient, then ``relu`` of the product."""

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: LeakyCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        if not call.defined:
            if mode.policy.reverse_rule.is_gradient:
                return raw.run()
            return refuse(raw, mode, call.inplace, reason="in train mode (random slopes)")
        rule = mode.policy.reverse_rule
        leaky: ReverseRule
        if not (rule.rectifies or rule.masks):
            leaky = PassThrough(call.function)
        elif not rule.masks:
            leaky = Reapply(call.function)
        else:
            leaky = LeakyGuided(call.function, call.slope)
        return in_place(call.input, apply_rule(call.input, leaky), call.inplace)


class LeakyReLU(_Leaky):
    functions = spellings("leaky_relu", "leaky_relu_") | aten("leaky_relu", "leaky_relu_")

    def parse(self, raw: op.TorchCall) -> LeakyCall:
        slope = raw.argument(1, "negative_slope", 0.01)
        return LeakyCall(
            raw.input, partial(F.leaky_relu, negative_slope=slope), slope, _inplace(raw, 2)
        )


class PReLU(_Leaky):
    functions = frozenset({F.prelu, torch.prelu, ATEN.prelu.default})

    def parse(self, raw: op.TorchCall) -> LeakyCall:
        weight = raw.argument(1, "weight", None)
        return LeakyCall(raw.input, partial(F.prelu, weight=weight), weight, inplace=False)


class RReLU(_Leaky):
    """``nn.RReLU`` in eval mode: a leaky ReLU of the mean slope ``(lower + upper) / 2``; in
    train mode its slopes are random, and it has no rule."""

    functions = spellings("rrelu", "rrelu_") | aten("rrelu", "rrelu_")

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return True  # the gradient too: autograd's RReLU backward has no batching rule

    def rewire(self, call: LeakyCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        if call.defined and mode.policy.reverse_rule.is_gradient:  # autograd's leaky ReLU
            return F.leaky_relu(call.input, float(call.slope), call.inplace)
        return super().rewire(call, raw, mode)

    def parse(self, raw: op.TorchCall) -> LeakyCall:
        lower = raw.argument(1, "lower", RRELU_SLOPES[0])
        upper = raw.argument(2, "upper", RRELU_SLOPES[1])
        slope = (lower + upper) / 2
        return LeakyCall(
            raw.input,
            partial(F.leaky_relu, negative_slope=slope),
            slope,
            _inplace(raw, 4),
            defined=not raw.argument(3, "training", False),
        )


# -- activations without a deconvnet or guided analogue ----------------------------------------


class Undefined(op.Op[None]):
    """Activations with no deconvnet or guided rule, under any activation policy: refused
    when the signal reaches them (never a silent fallback to the gradient); the gradient
    rule passes them as autograd does."""

    functions = (
        spellings(
            "tanh", "tanh_", "erf", "erf_", "hardshrink", "softshrink", "softmin",
            "logsigmoid", "log_sigmoid", "softsign", "tanhshrink", "glu", "log_softmax",
        )
        | methods("tanh", "tanh_", "erf", "erf_", "hardshrink", "log_softmax")
        | aten("tanh", "tanh_", "erf", "erf_", "hardshrink", "softshrink", "glu")
        | frozenset({ATEN._log_softmax.default, ATEN.log_sigmoid_forward.default})
    )  # fmt: skip

    def parse(self, raw: op.TorchCall) -> None:
        return None

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: None, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        return refuse(raw, mode, is_in_place(raw.func))


FAMILIES: tuple[op.Op[Any], ...] = (
    ReLU(),
    Threshold(),
    ReLU6(),
    Clamp(),
    Maximum(),
    Where(),
    LeakyReLU(),
    PReLU(),
    RReLU(),
    Undefined(),
)
