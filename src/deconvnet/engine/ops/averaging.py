"""Average pooling (plain, adaptive) and power-average pooling.

Average pooling's transpose spreads each output's share (1 / its divisor) over its window;
adaptive average pooling is an ordinary one when the input is a multiple of the output
(global average pooling included). Power-average pooling has a window but no linear
reverse, so it takes the general path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import ATEN, pair, pool_stride, spatial, spellings
from deconvnet.engine.ops.pooling import adaptive_geometry, adaptive_kernel
from deconvnet.engine.window import Window, crop

AVG_POOL_ARGS = (
    "input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
    "divisor_override",
)  # fmt: skip
LP_POOL_ARGS = ("input", "norm_type", "kernel_size", "stride", "ceil_mode")
ADAPTIVE_ARGS = ("input", "output_size")


@dataclass(frozen=True)
class AvgPoolCall:
    """An average (or power-average) pooling's 2-D reading."""

    input: Any
    kernel: op.Pair
    stride: op.Pair
    padding: op.Pair
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None


class AvgPool(op.Op[AvgPoolCall]):
    """``F.avg_pool2d``: its transpose spreads each output's share over its window."""

    functions = spellings("avg_pool2d") | {ATEN.avg_pool2d.default}
    arguments: ClassVar[tuple[str, ...]] = AVG_POOL_ARGS

    def parse(self, raw: op.TorchCall) -> AvgPoolCall:
        bound = raw.bind(self.arguments)
        kernel = pair(bound.get("kernel_size"), 1)
        return AvgPoolCall(
            input=bound.get("input"),
            kernel=kernel,
            stride=pool_stride(bound.get("stride"), kernel),
            padding=pair(bound.get("padding"), 0),
            ceil_mode=bool(bound.get("ceil_mode", False)),
            count_include_pad=bool(bound.get("count_include_pad", True)),
            divisor_override=bound.get("divisor_override"),
        )

    def geometry(self, call: AvgPoolCall, x: Tensor, out: Tensor) -> op.Geometry | None:
        return op.Sliding(call.kernel, call.stride, call.padding)

    def node(self, call: AvgPoolCall, recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call.input)
        if not spatial(call.input):
            raise op.Opaque
        x = call.input
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            mean = F.avg_pool2d(
                ones, call.kernel, call.stride, call.padding, call.ceil_mode,
                call.count_include_pad, call.divisor_override,
            )  # fmt: skip
            count = F.avg_pool2d(
                ones, call.kernel, call.stride, call.padding, call.ceil_mode, True, 1
            )
        # the op's own divisor at each output, whatever its padding and divisor options
        scale = torch.where(count > 0, mean / count.clamp(min=1e-30), torch.zeros_like(mean))
        window = op.Sliding(call.kernel, call.stride, call.padding)
        return AvgPoolNode((source,), window=window, scale=scale)


class LpPool(AvgPool):
    """``F.lp_pool2d``: a window on the input (no windowed rule: its reverse is not linear)."""

    functions = spellings("lp_pool2d")
    arguments = LP_POOL_ARGS

    def node(self, call: AvgPoolCall, recording: op.Recording, before: Any) -> op.Node:
        raise op.Opaque


class AdaptiveAvgPool(op.Op[Any]):
    """Adaptive average pooling: an ordinary average pool when the input is a multiple of
    the output (global average pooling included)."""

    functions = spellings("adaptive_avg_pool2d") | {
        ATEN.adaptive_avg_pool2d.default,
        ATEN._adaptive_avg_pool2d.default,
    }

    def parse(self, raw: op.TorchCall) -> Any:
        return raw.bind(ADAPTIVE_ARGS).get("input")

    def geometry(self, call: Any, x: Tensor, out: Tensor) -> op.Geometry | None:
        return adaptive_geometry(x, out)

    def node(self, call: Any, recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call)
        if not spatial(call):
            raise op.Opaque
        x, out = call, recording.outputs[0]
        kernel = adaptive_kernel(x, out)
        scale = torch.full((1, 1, *out.shape[2:]), 1 / (kernel[0] * kernel[1]), dtype=x.dtype)
        window = op.Sliding(kernel, kernel, (0, 0))
        return AvgPoolNode((source,), window=window, scale=scale.to(x.device))


class SpatialMean(AdaptiveAvgPool):
    """``aten.mean.dim`` over H and W, keeping them: how a core-ATen ``.pt2`` program spells
    global average pooling (``nn.AdaptiveAvgPool2d(1)``); any other mean is no pool."""

    functions = frozenset({ATEN.mean.dim})

    def parse(self, raw: op.TorchCall) -> Any:
        x, dims = raw.input, raw.argument(1, "dim")
        keeps = bool(raw.argument(2, "keepdim", False))
        if spatial(x) and keeps and dims and sorted(int(d) % x.dim() for d in dims) == [2, 3]:
            return x
        return None

    def geometry(self, call: Any, x: Tensor, out: Tensor) -> op.Geometry | None:
        return None if call is None else super().geometry(call, x, out)


@dataclass(eq=False, kw_only=True)
class AvgPoolNode(op.SlidingNode):
    """Average pooling's transpose: each output's share (1 / its divisor, ``scale``) spread
    over its kernel window by a transposed convolution with a kernel of ones."""

    kind: ClassVar[str] = "avg_pool"

    scale: Tensor

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        zeros = torch.zeros_like(signal.tops)
        share = crop(self.scale, zeros, signal.tops, signal.lefts, signal.size)
        data = signal.data * share.to(signal.data.dtype)
        return self.grown(spread(data, self.window.kernel, self.window.stride), signal, step)


def spread(data: Tensor, kernel: op.Pair, stride: op.Pair) -> Tensor:
    """Each value added over its ``kernel`` window (a transposed convolution with a kernel
    of ones, one channel at a time), done as memory moves: non-overlapping windows (a
    DenseNet transition) repeat each value; overlapping ones add one shifted plane per tap
    (the library's single-channel transposed convolution took 250 ms of DenseNet-121's
    ``denseblock4`` call in bfloat16)."""
    count, channels, height, width = data.shape
    (rows, cols), (down, across) = kernel, stride
    if kernel == stride:
        tiled = data[:, :, :, None, :, None].expand(count, channels, height, rows, width, cols)
        return tiled.reshape(count, channels, height * rows, width * cols)
    span_h, span_w = (height - 1) * down + 1, (width - 1) * across + 1
    grown = data.new_zeros(
        (count, channels, span_h + rows - 1, span_w + cols - 1),
        dtype=torch.promote_types(data.dtype, torch.float32),
    )
    for i in range(rows):
        for j in range(cols):
            grown[:, :, i : i + span_h : down, j : j + span_w : across] += data
    return grown.to(data.dtype)


FAMILIES: tuple[op.Op[Any], ...] = (AvgPool(), LpPool(), AdaptiveAvgPool(), SpatialMean())
