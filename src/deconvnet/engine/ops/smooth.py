"""Smooth and piecewise rectifiers: SiLU/Swish, GELU (erf and tanh), Mish, Hardswish, ELU,
CELU, SELU and Softplus, in every spelling (module, functional, in-place, ATen).

The paper defines the deconvnet at a ReLU only. Under ``activations="relu-like"`` each of
these rectifiers ``f`` gets the ReLU rule's analogue: the deconvnet passes ``relu(signal)``
(it rectifies the reconstruction; the forward input plays no part, exactly as at a ReLU),
guided backpropagation ``relu(signal)·max(f'(x), 0)`` (``relu(signal)·[x > 0]`` at a ReLU),
the gradient ``signal·f'(x)``. ``f'`` is autograd's own derivative formula (ATen's backward
op with an upstream of ones), so the gradient rule's windowed path is exact too. Under
``activations="strict"`` they are refused under the rectifying rules. Swish and QuickGELU
written by hand (``x * torch.sigmoid(1.702 * x)``) are recognised by the product entry
(:mod:`~deconvnet.engine.ops.gates`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import ATEN, aten, is_in_place, spellings
from deconvnet.engine.ops.rectifiers import RectifierCall, _Rectifier

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SOFTPLUS_DEFAULTS = (1.0, 20.0)


def derivative_of(backward: op.TorchFunction, x: Tensor, *options: Any, **named: Any) -> Tensor:
    """``f'(x)``: autograd's own backward op for ``f`` with an upstream of ones."""
    result: Tensor = backward(torch.ones_like(x), x, *options, **named)
    return result


def aten_value(function: op.TorchFunction, x: Tensor, *options: Any) -> Tensor:
    result: Tensor = function(x, *options)
    return result


class _Smooth(_Rectifier):
    """A smooth rectifier: defined under ``activations="relu-like"``."""

    analogue: ClassVar[bool] = True
    inplace_position: ClassVar[int] = 1

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        inplace = is_in_place(raw.func) or bool(
            raw.func in self.functional and raw.argument(self.inplace_position, "inplace", False)
        )
        return RectifierCall(raw.input, inplace, options=self.options(raw))

    @property
    def functional(self) -> frozenset[op.TorchFunction]:
        """The ``torch.nn.functional`` spellings (the ones with an ``inplace`` argument)."""
        return frozenset(f for f in self.functions if getattr(f, "__module__", "") == F.__name__)

    def options(self, raw: op.TorchCall) -> tuple[Any, ...]:
        """The call's parameters, as :meth:`function` and :meth:`derivative` take them."""
        return ()


class SiLU(_Smooth):
    """SiLU/Swish ``x·σ(x)`` (``nn.SiLU``, ``F.silu``, timm's ``swish``)."""

    functions = spellings("silu", "silu_") | aten("silu", "silu_")

    def function(self, call: RectifierCall, x: Tensor) -> Tensor:
        return F.silu(x)

    def derivative(self, call: RectifierCall, x: Tensor) -> Tensor:
        return derivative_of(ATEN.silu_backward.default, x)


class GELU(_Smooth):
    """GELU, exact (erf) or ``approximate="tanh"``."""

    functions = spellings("gelu") | aten("gelu", "gelu_")

    def options(self, raw: op.TorchCall) -> tuple[Any, ...]:
        return (str(raw.kwargs.get("approximate", "none")),)

    def function(self, call: RectifierCall, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=call.options[0])

    def derivative(self, call: RectifierCall, x: Tensor) -> Tensor:
        return derivative_of(ATEN.gelu_backward.default, x, approximate=call.options[0])


class Mish(_Smooth):
    """Mish ``x·tanh(softplus(x))``."""

    functions = spellings("mish", "mish_") | aten("mish", "mish_")

    def function(self, call: RectifierCall, x: Tensor) -> Tensor:
        return F.mish(x)

    def derivative(self, call: RectifierCall, x: Tensor) -> Tensor:
        return derivative_of(ATEN.mish_backward.default, x)


class Hardswish(_Smooth):
    """Hardswish ``x·relu6(x + 3)/6`` (MobileNetV3)."""

    functions = spellings("hardswish", "hardswish_") | aten("hardswish", "hardswish_")

    def function(self, call: RectifierCall, x: Tensor) -> Tensor:
        return F.hardswish(x)

    def derivative(self, call: RectifierCall, x: Tensor) -> Tensor:
        return derivative_of(ATEN.hardswish_backward.default, x)


class ELU(_Smooth):
    """The exponential linear units: ELU (α), CELU (α, the input scaled by 1/α) and SELU
    (fixed α and scale), one formula ``scale·elu(input_scale·x, α)``."""

    functions = spellings("elu", "elu_", "celu", "celu_", "selu", "selu_") | aten(
        "elu", "elu_", "celu", "celu_", "selu", "selu_"
    )

    def options(self, raw: op.TorchCall) -> tuple[Any, ...]:
        """``(alpha, scale, input_scale, the input scale of the derivative)``: autograd
        differentiates CELU with ``1/α`` rounded to float32 (its forward uses ``1/α``), and
        the gradient rule is autograd's."""
        name = str(getattr(raw.func, "__name__", "")).split(".")[0].rstrip("_")
        if name == "selu":
            return (SELU_ALPHA, SELU_SCALE, 1.0, 1.0)
        alpha = float(raw.argument(1, "alpha", 1.0))
        if name == "celu":
            rounded = float(torch.tensor(alpha, dtype=torch.float32))
            return (alpha, 1.0, 1.0 / alpha, 1.0 / rounded)
        if raw.func in self.functional:  # F.elu(input, alpha, inplace)
            return (alpha, 1.0, 1.0, 1.0)
        scale = float(raw.argument(2, "scale", 1.0))
        input_scale = float(raw.argument(3, "input_scale", 1.0))
        return (alpha, scale, input_scale, input_scale)

    def parse(self, raw: op.TorchCall) -> RectifierCall:
        """``F.elu(input, alpha, inplace)``, ``F.celu`` alike, ``F.selu(input, inplace)``."""
        position = 1 if raw.func is F.selu else 2
        inplace = is_in_place(raw.func) or bool(
            raw.func in self.functional and raw.argument(position, "inplace", False)
        )
        return RectifierCall(raw.input, inplace, options=self.options(raw))

    def function(self, call: RectifierCall, x: Tensor) -> Tensor:
        alpha, scale, input_scale, _ = call.options
        return aten_value(ATEN.elu.default, x, alpha, scale, input_scale)

    def derivative(self, call: RectifierCall, x: Tensor) -> Tensor:
        alpha, scale, _, derivative_scale = call.options
        ones = torch.ones_like(x)
        result: Tensor = ATEN.elu_backward.default(ones, alpha, scale, derivative_scale, False, x)
        return result


class Softplus(_Smooth):
    """Softplus ``log(1 + exp(βx))/β`` (linear above its threshold)."""

    functions = spellings("softplus") | aten("softplus")

    def options(self, raw: op.TorchCall) -> tuple[Any, ...]:
        beta, threshold = SOFTPLUS_DEFAULTS
        return (
            float(raw.argument(1, "beta", beta)),
            float(raw.argument(2, "threshold", threshold)),
        )

    def function(self, call: RectifierCall, x: Tensor) -> Tensor:
        return F.softplus(x, *call.options)

    def derivative(self, call: RectifierCall, x: Tensor) -> Tensor:
        return derivative_of(ATEN.softplus_backward.default, x, *call.options)


FAMILIES: tuple[op.Op[Any], ...] = (SiLU(), GELU(), Mish(), Hardswish(), ELU(), Softplus())
