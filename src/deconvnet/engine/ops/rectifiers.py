"""Rectifiers and the other activations, in every spelling.

A rule attached to ``nn.ReLU`` alone misses ``F.relu``, ``torch.relu`` and ``x.relu_()``
(Captum's known trap), so rectifiers are caught at the function level, where every form
passes. ReLU, ``Threshold(0, 0)`` and ReLU6 follow the rule of :mod:`~deconvnet.engine.rules`
(ReLU6 by its rectifying part: the cap at 6 bounds forward activations, the reverse signal
has no such scale); LeakyReLU and PReLU get the leaky analogue; activations with no
deconvnet or guided analogue are refused under those rules, never passed as their gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import ATEN, in_place
from deconvnet.engine.rules import (
    GRADIENT_RULE,
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
from deconvnet.errors import UnsupportedLayerError

RELU6_RANGE = (0.0, 6.0)


@dataclass(frozen=True)
class RectifierCall:
    """A rectifier's input and in-place flag; ``defined`` is False for a variant with no
    rule (a threshold other than 0, a hardtanh other than ReLU6)."""

    input: Any
    inplace: bool
    defined: bool = True


class _Rectifier(op.Op[RectifierCall]):
    """A rectifier under the rule: ``rule.rectify(signal, mask)``, with the mask of
    :meth:`mask` recorded when the rule masks."""

    def function(self, x: Tensor) -> Tensor:
        """The rectifier's forward value."""
        return torch.relu(x)

    def mask(self, x: Tensor) -> Tensor:
        """Where its local gradient is 1 (0 elsewhere)."""
        return x > 0

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: RectifierCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        if not call.defined:
            unsupported(raw.func, mode)
        rule = Rectify(mode.policy.reverse_rule, self.function, self.mask)
        return in_place(call.input, apply_rule(call.input, rule), call.inplace)

    def before(self, call: RectifierCall, policy: ReversePolicy) -> Tensor | None:
        if not call.defined:
            raise op.Opaque
        x = call.input
        if not (isinstance(x, Tensor) and policy.reverse_rule.masks):
            return None
        return self.mask(x.detach()).to(x.dtype)

    def node(self, call: RectifierCall, recording: op.Recording, before: Any) -> op.Node:
        return RectifyNode((recording.source(call.input),), mask=before)


class ReLU(_Rectifier):
    """``F.relu``, ``torch.relu``, ``x.relu()``, their in-place forms, ATen's."""

    functions = frozenset(
        {
            F.relu,
            torch.relu,
            torch.relu_,
            torch.Tensor.relu,
            torch.Tensor.relu_,
            ATEN.relu.default,
            ATEN.relu_.default,
        }
    )
    _INPLACE = frozenset({torch.relu_, torch.Tensor.relu_, ATEN.relu_.default})

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        inplace = raw.func in self._INPLACE or bool(raw.argument(1, "inplace", False))
        return RectifierCall(raw.input, inplace)


class Threshold(_Rectifier):
    """``F.threshold``: a ReLU when it is ``Threshold(0, 0)``."""

    functions = frozenset({F.threshold, torch.threshold})

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        threshold = raw.argument(1, "threshold")
        value = raw.argument(2, "value")
        return RectifierCall(
            raw.input,
            bool(raw.argument(3, "inplace", False)),
            defined=(threshold, value) == (0, 0),
        )


class ReLU6(_Rectifier):
    """``F.relu6`` and ``F.hardtanh(0, 6)`` (``nn.ReLU6``): rectified, capped at 6."""

    functions = frozenset({F.hardtanh, F.relu6, ATEN.hardtanh.default})

    def function(self, x: Tensor) -> Tensor:
        return F.relu6(x)

    def mask(self, x: Tensor) -> Tensor:
        return (x > RELU6_RANGE[0]) & (x < RELU6_RANGE[1])

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        if raw.func is F.relu6:
            return RectifierCall(raw.input, bool(raw.argument(1, "inplace", False)))
        low = raw.argument(1, "min_val", -1.0)
        high = raw.argument(2, "max_val", 1.0)
        return RectifierCall(
            raw.input, bool(raw.argument(3, "inplace", False)), (low, high) == RELU6_RANGE
        )


@dataclass(eq=False)
class RectifyNode(op.Node):
    """A ReLU or ReLU6: the rule's rectification, with the forward mask when it masks."""

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


class _Leaky(op.Op[LeakyCall]):
    """The deconvnet passes the signal through the same leaky rectifier (as ``relu`` for
    ReLU); guided backprop takes the local gradient, then ``relu`` of the product."""

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: LeakyCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
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
    functions = frozenset({F.leaky_relu, ATEN.leaky_relu.default})

    def parse(self, raw: op.TorchCall) -> LeakyCall:
        slope = raw.argument(1, "negative_slope", 0.01)
        return LeakyCall(
            raw.input,
            partial(F.leaky_relu, negative_slope=slope),
            slope,
            bool(raw.argument(2, "inplace", False)),
        )


class PReLU(_Leaky):
    functions = frozenset({F.prelu, torch.prelu, ATEN.prelu.default})

    def parse(self, raw: op.TorchCall) -> LeakyCall:
        weight = raw.argument(1, "weight", None)
        return LeakyCall(raw.input, partial(F.prelu, weight=weight), weight, inplace=False)


# -- activations without a deconvnet or guided analogue ----------------------------------------


class Undefined(op.Op[None]):
    """Activations with no deconvnet or guided rule: an error under those rules (never a
    silent fallback to the gradient); the gradient rule passes them as autograd does."""

    functions = frozenset(
        {
            F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.softplus, F.hardswish,
            F.hardsigmoid, F.logsigmoid, F.softsign, F.tanhshrink, F.glu, F.softmax,
            F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax,
            torch.Tensor.log_softmax, torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid,
            torch.tanh, torch.Tensor.tanh, F.tanh, ATEN.sigmoid.default, ATEN.tanh.default,
            ATEN.gelu.default, ATEN.silu.default, ATEN.elu.default, ATEN.softplus.default,
            ATEN.hardswish.default, ATEN.hardsigmoid.default, ATEN.mish.default,
        }
    )  # fmt: skip

    def parse(self, raw: op.TorchCall) -> None:
        return None

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return not policy.reverse_rule.is_gradient

    def rewire(self, call: None, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        unsupported(raw.func, mode)


def unsupported(func: op.TorchFunction, mode: op.Rewiring) -> Any:
    """Refuse ``func`` under the mode's rule, naming the module it runs in."""
    name = getattr(func, "__name__", repr(func)).lstrip("_")
    raise UnsupportedLayerError(
        f"rule {mode.policy.rule!r} has no definition for {name}{mode.where()}; "
        f"use rule={GRADIENT_RULE!r} for this model"
    )


FAMILIES: tuple[op.Op[Any], ...] = (ReLU(), Threshold(), ReLU6(), LeakyReLU(), PReLU(), Undefined())
