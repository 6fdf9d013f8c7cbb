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
        if not _by_product(self.weight, self.groups, self.window.stride, self.window.dilation):
            return 0
        out = shapes[self.outputs[0]]
        return math.prod(self.weight.shape[1:]) * out[-2] * out[-1]


FEW_CHANNELS = 16
"""At most this many output channels (the image's 3), ``F.conv_transpose2d`` runs at a
fraction of its usual speed on CPU; a matrix product and shifted sums do the same work."""
SMALL_MAP = 1024
"""Up to this many pixels per seed, a filter of several taps runs its product once for all
seeds in pixel order."""


def _few_outputs(weight: Tensor, groups: int) -> bool:
    return groups == 1 and int(weight.shape[1]) <= FEW_CHANNELS


def _by_phases(weight: Tensor, groups: int, stride: op.Pair, dilation: op.Pair) -> bool:
    """A strided filter of several taps back to few channels (the first layer)."""
    return (
        _few_outputs(weight, groups)
        and stride != (1, 1)
        and dilation == (1, 1)
        and weight.shape[-2:] != (1, 1)
    )


def _by_product(weight: Tensor, groups: int, stride: op.Pair, dilation: op.Pair) -> bool:
    return not _by_phases(weight, groups, stride, dilation) and (
        _few_outputs(weight, groups) or (groups == 1 and weight.shape[-2:] == (1, 1))
    )


def transposed_conv(
    data: Tensor,
    weight: Tensor,
    stride: op.Pair,
    groups: int = 1,
    dilation: op.Pair = (1, 1),
) -> Tensor:
    """``F.conv_transpose2d`` without padding (the whole grown window), in the formulation
    measured fastest for the shape (``benchmarks/bench_graphs.py --kernels``):

    - strided filters back to few channels (the first layer of ResNet, DenseNet, CaffeNet):
      one stride-1 convolution of the ``stride²`` phases of the output
      (:func:`_phase_convolution`; 1.5–3.2× faster than the product below, 2.2–2.8× than
      the library's, in float32 and bfloat16);
    - 1×1 filters and other filters back to few channels: one matrix product and a shifted
      sum per filter tap (1.25–3.7× faster than the library's: VGG's first layer, strided
      1×1 shortcuts; in a reduced type a 1×1 filter's product is the library's unstrided
      kernel);
    - the library's transposed convolution otherwise."""
    if _by_phases(weight, groups, stride, dilation):
        return _phase_convolution(data, weight, stride)
    if _by_product(weight, groups, stride, dilation):
        return _product_and_shifts(data, weight, stride, dilation)
    return F.conv_transpose2d(data, weight, None, stride, 0, 0, groups, dilation)


def _phase_convolution(data: Tensor, weight: Tensor, stride: op.Pair) -> Tensor:
    """A strided transposed convolution as one ordinary convolution.

    Output row ``m·s + p`` (phase ``p``) receives input row ``m − a`` through filter row
    ``a·s + p`` only, so each of the ``s_h × s_w`` phases is a stride-1 transposed
    convolution with the filter's taps of that phase; stacked on output channels they are
    one ``F.conv2d`` (flipped filters, full padding) of ``C_out · s_h · s_w`` channels, the
    shape the library's kernels are fast at, and the phases are interleaved once. Filters
    are padded with zero taps to a multiple of the stride (7×7/2: 8×8, 31 % more
    multiply–accumulates, still faster)."""
    count, _, height, width = data.shape
    channels, outputs, rows, cols = (int(size) for size in weight.shape)
    (step_h, step_w) = stride
    taps_h, taps_w = -(-rows // step_h), -(-cols // step_w)
    padded = F.pad(weight, (0, taps_w * step_w - cols, 0, taps_h * step_h - rows))
    # filter row a·s + p → phase p, tap a
    phases = padded.view(channels, outputs, taps_h, step_h, taps_w, step_w)
    phases = phases.permute(0, 1, 3, 5, 2, 4).reshape(channels, -1, taps_h, taps_w)
    kernel = phases.flip(-2, -1).transpose(0, 1)
    out = F.conv2d(data, kernel, padding=(taps_h - 1, taps_w - 1))
    rows_out, cols_out = out.shape[-2:]
    woven = out.view(count, outputs, step_h, step_w, rows_out, cols_out)
    woven = woven.permute(0, 1, 4, 2, 5, 3).reshape(
        count, outputs, rows_out * step_h, cols_out * step_w
    )
    return woven[:, :, : (height - 1) * step_h + rows, : (width - 1) * step_w + cols]


def _product_and_shifts(data: Tensor, weight: Tensor, stride: op.Pair, dilation: op.Pair) -> Tensor:
    """Each input pixel times each tap's (C_in, C_out) matrix in one product, then every
    tap's plane added into the output at its offset."""
    count, channels, height, width = data.shape
    outputs, rows, cols = int(weight.shape[1]), int(weight.shape[2]), int(weight.shape[3])
    matrix = weight.reshape(channels, -1)
    if (rows, cols) == (1, 1) and not _few_outputs(weight, 1) and data.element_size() < 4:
        # in a reduced type the library's unstrided 1×1 kernel (the product itself) is 3–10×
        # faster than torch.matmul with the filters transposed on ResNet-50's bottleneck
        # shapes (ResNet-50 layer4 in bfloat16: 1.7 → 1.2 s); in float32 the two measured
        # alike on those shapes and the product stays ahead on the benchmark's rows
        products = F.conv_transpose2d(data, weight)
    elif height * width <= SMALL_MAP and (rows, cols) != (1, 1):
        # one product for all seeds: the weights read once (1×1 filters take the product
        # below, whose maps come out in channel order: in pixel order every later step
        # reads them across, 9–11 % of DenseNet-121's denseblock4 call in bfloat16)
        pixels = data.permute(0, 2, 3, 1).reshape(-1, channels)
        products = (pixels @ matrix).view(count, height, width, -1).permute(0, 3, 1, 2)
    else:  # one product per seed: no copy of a large signal into pixel order
        products = torch.matmul(matrix.t(), data.reshape(count, channels, height * width))
        products = products.view(count, -1, height, width)
    if (rows, cols) == (1, 1):  # one tap: placed, nothing to sum
        if stride == (1, 1):
            return products
        span_h, span_w = (height - 1) * stride[0] + 1, (width - 1) * stride[1] + 1
        grown = products.new_zeros((count, outputs, span_h, span_w))
        grown[:, :, :: stride[0], :: stride[1]] = products
        return grown
    taps = products.reshape(count, outputs, rows, cols, height, width)
    return _shifted_sum(taps, stride, dilation).to(data.dtype)


def _shifted_sum(taps: Tensor, stride: op.Pair, dilation: op.Pair) -> Tensor:
    """Every tap's plane (N, C, rows, cols, h, w) added into the grown output at its offset,
    in float32 (as the library's kernels accumulate; a reduced type rounds the sum once).

    A strided output is held as its ``stride[0] × stride[1]`` phases — output row
    ``m·stride + p`` is row ``m`` of phase ``p`` — so that each tap adds into a contiguous
    block of one phase instead of every other element of the output (2× faster for the
    7×7/2 first layer back to the image), and the phases are interleaved once at the end
    (``stride[0] × stride[1]`` strided copies instead of one strided add per tap)."""
    count, outputs, rows, cols, height, width = taps.shape
    (step_h, step_w), (dil_h, dil_w) = stride, dilation
    out_h = (height - 1) * step_h + dil_h * (rows - 1) + 1
    out_w = (width - 1) * step_w + dil_w * (cols - 1) + 1
    phase_h, phase_w = -(-out_h // step_h), -(-out_w // step_w)
    phases = taps.new_zeros(
        (count, outputs, step_h, step_w, phase_h, phase_w),
        dtype=torch.promote_types(taps.dtype, torch.float32),
    )
    for i in range(rows):
        top, row_phase = divmod(i * dil_h, step_h)
        for j in range(cols):
            left, col_phase = divmod(j * dil_w, step_w)
            phases[:, :, row_phase, col_phase, top : top + height, left : left + width] += taps[
                :, :, i, j
            ]
    if (step_h, step_w) == (1, 1):
        return phases[:, :, 0, 0]
    grown = taps.new_empty((count, outputs, out_h, out_w), dtype=phases.dtype)
    for row_phase in range(step_h):
        for col_phase in range(step_w):
            part = grown[:, :, row_phase::step_h, col_phase::step_w]
            part.copy_(phases[:, :, row_phase, col_phase, : part.shape[2], : part.shape[3]])
    return grown


FAMILIES: tuple[op.Op[Any], ...] = (Convolution(), AtenConvolution())
