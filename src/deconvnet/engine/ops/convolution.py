"""2-D convolution: its window on the input, and its transpose on a window of the signal.

The reverse is the convolution's transpose with the forward filters and no bias (Zeiler &
Fergus 2014, §2.1 "Filtering"), grouped, depthwise and dilated alike. On windows it runs in
the formulation measured fastest for the shape (:func:`transposed_conv`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import ATEN, conv_padding, pair, spatial
from deconvnet.engine.window import Window

CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
ATEN_CONVOLUTION_ARGS = (
    "input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding",
    "groups",
)  # fmt: skip


@dataclass(frozen=True)
class ConvCall:
    """``F.conv2d``'s arguments, padding resolved (``"same"``/``"valid"`` to numbers)."""

    input: Any
    weight: Tensor
    bias: Tensor | None
    stride: op.Pair
    padding: op.Pair
    dilation: op.Pair
    groups: int

    @property
    def window(self) -> op.Sliding:
        kernel = (int(self.weight.shape[-2]), int(self.weight.shape[-1]))
        return op.Sliding(kernel, self.stride, self.padding, self.dilation)


class Convolution(op.Op[ConvCall]):
    """``F.conv2d`` (= ``torch.conv2d``), which ``nn.Conv2d`` calls, and its ATen overloads
    in a ``.pt2`` program."""

    functions = frozenset({torch.conv2d, F.conv2d, ATEN.conv2d.default, ATEN.conv2d.padding})
    arguments: ClassVar[tuple[str, ...]] = CONV_ARGS

    def parse(self, raw: op.TorchCall) -> ConvCall:
        bound = raw.bind(self.arguments)
        weight = bound["weight"]
        kernel = (int(weight.shape[-2]), int(weight.shape[-1]))
        dilation = pair(bound.get("dilation"), 1)
        return ConvCall(
            input=bound.get("input"),
            weight=weight,
            bias=bound.get("bias"),
            stride=pair(bound.get("stride"), 1),
            padding=conv_padding(bound.get("padding", 0), kernel, dilation),
            dilation=dilation,
            groups=int(bound.get("groups", 1)),
        )

    def geometry(self, call: ConvCall, x: Tensor, out: Tensor) -> op.Sliding | None:
        return call.window

    def node(self, call: ConvCall, recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call.input)
        if not spatial(call.input):
            raise op.Opaque
        recording.constant(call.weight, call.bias)
        return ConvNode(
            (source,), window=call.window, weight=call.weight.detach(), groups=call.groups
        )


class AtenConvolution(Convolution):
    """``aten.convolution``, every convolution of a core-ATen ``.pt2`` program: a 2-D one
    is a convolution as above; a transposed one has no window on its input (its field is
    found as for any op that resizes the map) and no windowed rule."""

    functions = frozenset({ATEN.convolution.default})
    arguments = ATEN_CONVOLUTION_ARGS

    def geometry(self, call: ConvCall, x: Tensor, out: Tensor) -> op.Sliding | None:
        return None if _transposed(call) else call.window

    def node(self, call: ConvCall, recording: op.Recording, before: Any) -> op.Node:
        if _transposed(call):
            raise op.Opaque
        return super().node(call, recording, before)

    def parse(self, raw: op.TorchCall) -> ConvCall:
        call = super().parse(raw)
        transposed = bool(raw.bind(self.arguments).get("transposed", False))
        return TransposedConvCall(**vars(call)) if transposed else call


@dataclass(frozen=True)
class TransposedConvCall(ConvCall):
    """An ``aten.convolution`` call with ``transposed=True``."""


def _transposed(call: ConvCall) -> bool:
    return isinstance(call, TransposedConvCall)


@dataclass(eq=False, kw_only=True)
class ConvNode(op.SlidingNode):
    """A convolution: its filters (scaled in place when a BatchNorm folds into them)."""

    kind: ClassVar[str] = "conv"

    weight: Tensor
    groups: int

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        weight = self.weight.to(signal.data.dtype)
        window = self.window
        grown = transposed_conv(signal.data, weight, window.stride, self.groups, window.dilation)
        return self.grown(grown, signal, step)

    def scratch_per_seed(self, shapes: list[tuple[int, ...]]) -> int:
        if not _by_product(self.weight, self.groups):
            return 0
        out = shapes[self.outputs[0]]
        return math.prod(self.weight.shape[1:]) * out[-2] * out[-1]


FEW_CHANNELS = 16
"""At most this many output channels (the image's 3), ``F.conv_transpose2d`` runs at a
fraction of its usual speed on CPU; a matrix product and shifted sums do the same work."""
SMALL_MAP = 1024
"""Up to this many pixels per seed, the product runs once for all seeds in pixel order."""


def _by_product(weight: Tensor, groups: int) -> bool:
    return groups == 1 and (weight.shape[-2:] == (1, 1) or weight.shape[1] <= FEW_CHANNELS)


def transposed_conv(
    data: Tensor,
    weight: Tensor,
    stride: op.Pair,
    groups: int = 1,
    dilation: op.Pair = (1, 1),
) -> Tensor:
    """``F.conv_transpose2d`` without padding (the whole grown window), in the formulation
    measured fastest for the shape (``benchmarks/bench_graphs.py --kernels``): one matrix
    product and a shifted sum per filter tap for 1×1 filters and for few output channels
    (1.25–3.7× faster there: the first transposed convolution back to the image, strided
    1×1 shortcuts), the library's transposed convolution otherwise."""
    if _by_product(weight, groups):
        return _product_and_shifts(data, weight, stride, dilation)
    return F.conv_transpose2d(data, weight, None, stride, 0, 0, groups, dilation)


def _product_and_shifts(data: Tensor, weight: Tensor, stride: op.Pair, dilation: op.Pair) -> Tensor:
    """Each input pixel times each tap's (C_in, C_out) matrix in one product, then every
    tap's plane added into the output at its offset."""
    count, channels, height, width = data.shape
    outputs, rows, cols = int(weight.shape[1]), int(weight.shape[2]), int(weight.shape[3])
    matrix = weight.reshape(channels, -1)
    if height * width <= SMALL_MAP:  # one product for all seeds: the weights read once
        pixels = data.permute(0, 2, 3, 1).reshape(-1, channels)
        products = (pixels @ matrix).view(count, height, width, -1).permute(0, 3, 1, 2)
    else:  # one product per seed: no copy of a large signal into pixel order
        products = torch.matmul(matrix.t(), data.reshape(count, channels, height * width))
        products = products.view(count, -1, height, width)
    if (rows, cols) == (1, 1) and stride == (1, 1):
        return products
    taps = products.reshape(count, outputs, rows, cols, height, width)
    span_h, span_w = (height - 1) * stride[0] + 1, (width - 1) * stride[1] + 1
    grown = data.new_zeros(
        (count, outputs, span_h + dilation[0] * (rows - 1), span_w + dilation[1] * (cols - 1))
    )
    for i in range(rows):
        for j in range(cols):
            top, left = i * dilation[0], j * dilation[1]
            grown[:, :, top : top + span_h : stride[0], left : left + span_w : stride[1]] += taps[
                :, :, i, j
            ]
    return grown


FAMILIES: tuple[op.Op[Any], ...] = (Convolution(), AtenConvolution())
