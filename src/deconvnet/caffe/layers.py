"""Small modules for the Caffe operations torch has no exact module for.

Everything torch does model exactly is left to torch (``nn.Conv2d``, ``nn.MaxPool2d``,
``nn.AvgPool2d`` with ``ceil_mode``/``count_include_pad``, ``nn.LocalResponseNorm``,
``nn.ReLU``...), so a reverse-pass engine keyed on torch module types applies to Caffe nets
unchanged. The modules here follow Caffe's layer sources (``*_layer.cpp``) literally.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class InnerProduct(nn.Linear):
    """Caffe's InnerProduct: flatten every axis from ``axis`` on, then a linear map.

    A subclass of ``nn.Linear`` (same ``weight`` (O, I) and ``bias``), so Linear rules
    apply; the flatten is part of the layer as in Caffe.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, axis: int) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(self.axis))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axis={self.axis}"


class WithinChannelLRN(nn.Module):
    """Caffe's LRN with ``norm_region: WITHIN_CHANNEL``.

    ``y = x * (1 + alpha / n^2 * sum_{n x n window} x^2) ^ -beta``: Caffe builds it from an
    AVE pooling of ``x^2`` (kernel n, stride 1, pad (n-1)/2, padding counted in the
    divisor) and a Power layer with shift 1, so the ``k`` parameter is not used.
    """

    def __init__(self, size: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = F.avg_pool2d(
            x * x, self.size, stride=1, padding=(self.size - 1) // 2, count_include_pad=True
        )
        return x * (1.0 + self.alpha * mean_square).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"


ELTWISE_OPERATIONS = ("PROD", "SUM", "MAX")


class Eltwise(nn.Module):
    """Caffe's Eltwise over its bottoms: PROD, SUM (with per-bottom coefficients) or MAX."""

    def __init__(self, operation: str, coefficients: tuple[float, ...] | None = None) -> None:
        super().__init__()
        if operation not in ELTWISE_OPERATIONS:
            raise ValueError(f"operation must be one of {ELTWISE_OPERATIONS}, got {operation!r}")
        self.operation, self.coefficients = operation, coefficients

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            return math.prod(inputs[1:], start=inputs[0])
        if self.operation == "MAX":
            result = inputs[0]
            for other in inputs[1:]:
                result = torch.maximum(result, other)
            return result
        coefficients = self.coefficients or (1.0,) * len(inputs)
        result = inputs[0] * coefficients[0] if coefficients[0] != 1.0 else inputs[0]
        for weight, other in zip(coefficients[1:], inputs[1:], strict=True):
            result = result + (other * weight if weight != 1.0 else other)
        return result

    def extra_repr(self) -> str:
        return f"operation={self.operation}, coefficients={self.coefficients}"


class Concat(nn.Module):
    """Caffe's Concat: the bottoms joined along ``axis`` in bottom order."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Split(nn.Module):
    """Caffe's Split: the bottom handed unchanged to every top."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Reshape(nn.Module):
    """Caffe's Reshape of the axes ``[start, end)`` to ``shape`` (0 copies, -1 infers)."""

    def __init__(self, shape: tuple[int, ...], start: int, end: int | None) -> None:
        super().__init__()
        self.shape, self.start, self.end = shape, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = x.dim() if self.end is None else self.end
        middle = [x.shape[self.start + i] if d == 0 else d for i, d in enumerate(self.shape)]
        return x.reshape(*x.shape[: self.start], *middle, *x.shape[end:])

    def extra_repr(self) -> str:
        return f"shape={self.shape}, start={self.start}, end={self.end}"


class Scale(nn.Module):
    """Caffe's Scale with a learned factor (one bottom): ``x * weight (+ bias)``.

    ``weight`` has the shape of the input axes ``[axis, axis + num_axes)`` and broadcasts
    over the others, as in Caffe.
    """

    def __init__(self, shape: tuple[int, ...], axis: int, trailing: int, bias: bool) -> None:
        super().__init__()
        self.axis, self.trailing = axis, trailing
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    def _broadcast(self, p: torch.Tensor) -> torch.Tensor:
        return p.reshape(*p.shape, *([1] * self.trailing))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = x * self._broadcast(self.weight)
        if self.bias is not None:
            result = result + self._broadcast(self.bias)
        return result

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}, axis={self.axis}, bias={self.bias is not None}"


class ScaleByBlob(nn.Module):
    """Caffe's Scale with two bottoms: the first multiplied by the second, broadcast."""

    def __init__(self, trailing: int) -> None:
        super().__init__()
        self.trailing = trailing

    def forward(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        return x * factor.reshape(*factor.shape, *([1] * self.trailing))
