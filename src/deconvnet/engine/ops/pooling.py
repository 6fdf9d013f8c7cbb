"""Max pooling, plain and adaptive, in every spelling.

Max pooling goes down by unpooling through the switches recorded on the way up (Zeiler &
Fergus 2014, §2.1 "Unpooling"): autograd's own argmax indices, or another framework's given
per module (Caffe's mask blobs). Where 3×3/2 windows overlap, two pooled units may have
chosen the same input pixel: ``sum`` adds both signals (the exact transpose), ``overwrite``
lets the later window in raster order win (the old Caffe InvPooling layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import ATEN, pair, pool_stride, spatial
from deconvnet.engine.rules import ReversePolicy
from deconvnet.engine.window import Window, covers_map, crop, per_seed

MAX_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
RETURN_INDICES_POSITION = 6  # F.max_pool2d(input, kernel, stride, padding, dilation, ceil, ·)
ADAPTIVE_ARGS = ("input", "output_size")

# every max-pool entry point a TorchFunctionMode sees, with the variant that returns indices
_WITH_INDICES: dict[op.TorchFunction, op.TorchFunction] = {
    F.max_pool1d: F.max_pool1d_with_indices,
    F.max_pool2d: F.max_pool2d_with_indices,
    F.max_pool3d: F.max_pool3d_with_indices,
    F.max_pool1d_with_indices: F.max_pool1d_with_indices,
    F.max_pool2d_with_indices: F.max_pool2d_with_indices,
    F.max_pool3d_with_indices: F.max_pool3d_with_indices,
    torch.max_pool1d: F.max_pool1d_with_indices,
    torch.max_pool2d: F.max_pool2d_with_indices,
    ATEN.max_pool2d.default: F.max_pool2d_with_indices,
    ATEN.max_pool2d_with_indices.default: F.max_pool2d_with_indices,
    torch._C._nn.max_pool2d_with_indices: F.max_pool2d_with_indices,
    torch.max_pool3d: F.max_pool3d_with_indices,
}
_ADAPTIVE_WITH_INDICES: dict[op.TorchFunction, op.TorchFunction] = {
    F.adaptive_max_pool1d: F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d: F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d: F.adaptive_max_pool3d_with_indices,
    F.adaptive_max_pool1d_with_indices: F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d_with_indices: F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d_with_indices: F.adaptive_max_pool3d_with_indices,
    ATEN.adaptive_max_pool2d.default: F.adaptive_max_pool2d_with_indices,
}
_ALWAYS_INDICES = frozenset(
    {
        F.max_pool1d_with_indices,
        F.max_pool2d_with_indices,
        F.max_pool3d_with_indices,
        torch._C._nn.max_pool2d_with_indices,
        ATEN.max_pool2d_with_indices.default,
        ATEN.adaptive_max_pool2d.default,
        F.adaptive_max_pool1d_with_indices,
        F.adaptive_max_pool2d_with_indices,
        F.adaptive_max_pool3d_with_indices,
    }
)
_PLANE = frozenset(
    {F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d, ATEN.max_pool2d.default}
    | {torch._C._nn.max_pool2d_with_indices, F.adaptive_max_pool2d}
    | {F.adaptive_max_pool2d_with_indices, ATEN.max_pool2d_with_indices.default}
    | {ATEN.adaptive_max_pool2d.default}
)


@dataclass(frozen=True)
class MaxPoolCall:
    """A max pooling (any dimension); ``window`` is its 2-D reading, used only when
    ``plane`` (a 2-D pool; adaptive pools find theirs from the output's size)."""

    input: Any
    window: op.Sliding
    ceil_mode: bool
    wants_indices: bool
    plane: bool


class MaxPool(op.Op[MaxPoolCall]):
    """Max pooling in every spelling (1-, 2- and 3-D, with or without indices)."""

    functions = frozenset(_WITH_INDICES)

    def parse(self, raw: op.TorchCall) -> MaxPoolCall:
        bound = raw.bind(MAX_POOL_ARGS)
        kernel = pair(bound.get("kernel_size"), 1)
        window = op.Sliding(
            kernel,
            pool_stride(bound.get("stride"), kernel),
            pair(bound.get("padding"), 0),
            pair(bound.get("dilation"), 1),
        )
        return MaxPoolCall(
            input=bound.get("input"),
            window=window,
            ceil_mode=bool(bound.get("ceil_mode", False)),
            wants_indices=raw.func in _ALWAYS_INDICES
            or bool(raw.kwargs.get("return_indices", False))
            or bool(raw.argument(RETURN_INDICES_POSITION, "return_indices", False)),
            plane=raw.func in _PLANE,
        )

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        return policy.overwrites or switches

    def rewire(self, call: MaxPoolCall, raw: op.TorchCall, mode: op.Rewiring) -> Any:
        given = mode.switches_here()
        if given is not None:
            return _pool_through(call, given, mode.policy)
        if not mode.policy.overwrites:
            return raw.run()
        kwargs = {key: value for key, value in raw.kwargs.items() if key != "return_indices"}
        args = raw.args
        if len(args) > 2 and isinstance(args[2], list | tuple) and not args[2]:
            args = (*args[:2], None, *args[3:])  # torch.max_pool2d's "stride=[]" means kernel
        pooled, indices = self._with_indices(raw.func)(*args, **kwargs)
        pooled = overwrite_collisions(pooled, indices, args[0].shape)
        return (pooled, indices) if call.wants_indices else pooled

    def _with_indices(self, func: op.TorchFunction) -> op.TorchFunction:
        return _WITH_INDICES[func]

    def geometry(self, call: MaxPoolCall, x: Tensor, out: Tensor) -> op.Geometry | None:
        return call.window if call.plane else None

    def before(self, call: MaxPoolCall, policy: ReversePolicy) -> dict[str, Tensor]:
        return {}

    def run(self, call: MaxPoolCall, raw: op.TorchCall, before: Any) -> Any:
        """Any spelling of 2-D max pooling runs as ``max_pool2d_with_indices`` and keeps its
        indices: the windowed reverse needs them, and computing them again would pool the
        map twice."""
        if not (call.plane and spatial(call.input)):
            return raw.run()
        window = call.window
        pooled, switches = F.max_pool2d_with_indices(
            call.input, window.kernel, window.stride, window.padding, window.dilation,
            call.ceil_mode,
        )  # fmt: skip
        before["switches"] = switches
        return (pooled, switches) if call.wants_indices else pooled

    def node(self, call: MaxPoolCall, recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call.input)
        if not (call.plane and spatial(call.input) and "switches" in before):
            raise op.Opaque
        switches = before["switches"].detach()
        return max_pool_node(
            source, call.input, switches, call.window, recording.policy, call.ceil_mode
        )


class AdaptiveMaxPool(MaxPool):
    """Adaptive max pooling: an ordinary pool when the input is a multiple of the output."""

    functions = frozenset(_ADAPTIVE_WITH_INDICES)

    def parse(self, raw: op.TorchCall) -> MaxPoolCall:
        bound = raw.bind(ADAPTIVE_ARGS)
        return MaxPoolCall(
            input=bound.get("input"),
            window=op.Sliding((1, 1), (1, 1), (0, 0)),
            ceil_mode=False,
            wants_indices=raw.func in _ALWAYS_INDICES
            or bool(raw.kwargs.get("return_indices", False)),
            plane=raw.func in _PLANE,
        )

    def _with_indices(self, func: op.TorchFunction) -> op.TorchFunction:
        return _ADAPTIVE_WITH_INDICES[func]

    def geometry(self, call: MaxPoolCall, x: Tensor, out: Tensor) -> op.Geometry | None:
        return adaptive_geometry(x, out) if call.plane else None

    def run(self, call: MaxPoolCall, raw: op.TorchCall, before: Any) -> Any:
        return raw.run()

    def node(self, call: MaxPoolCall, recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call.input)
        if not (call.plane and spatial(call.input)):
            raise op.Opaque
        x, out = call.input, recording.outputs[0]
        kernel = adaptive_kernel(x, out)
        switches = F.adaptive_max_pool2d(x.detach(), out.shape[2:], return_indices=True)[1]
        window = op.Sliding(kernel, kernel, (0, 0))
        return max_pool_node(source, x, switches, window, recording.policy)


def max_pool_node(
    source: int,
    x: Tensor,
    switches: Tensor,
    window: op.Sliding,
    policy: ReversePolicy,
    ceil_mode: bool = False,
) -> MaxPoolNode:
    """The node unpooling through ``switches``: for windows that tile the map (VGG's 2×2/2)
    a mask of the chosen pixels, else the switches as offsets inside each window."""
    if _tiles(window):
        chosen = torch.zeros_like(x, dtype=x.dtype).flatten(2)
        chosen.scatter_(2, switches.flatten(2), 1)
        return MaxPoolNode((source,), window=window, chosen=chosen.view_as(x))
    keep = overwrite_keep(switches, x.shape).to(x.dtype) if policy.overwrites else None
    offsets = switch_offsets(switches, int(x.shape[-1]), window.stride, window.padding)
    return MaxPoolNode(
        (source,),
        window=window,
        switches=switches,
        ceil_mode=ceil_mode,
        offsets=offsets,
        keep=keep,
    )


def _tiles(window: op.Sliding) -> bool:
    """Windows side by side, no overlap, no padding: each pixel in at most one window."""
    return window.kernel == window.stride and window.padding == (0, 0) and window.dilation == (1, 1)


@dataclass(eq=False, kw_only=True)
class MaxPoolNode(op.SlidingNode):
    """Max unpooling through the recorded switches; ``keep`` masks the overwritten ones.
    Windows that tile the map keep ``chosen`` instead: 1 at each window's maximum."""

    kind: ClassVar[str] = "max_pool"

    switches: Tensor | None = None
    """Each maximum's flat index in its input plane, as pooling returned it."""
    ceil_mode: bool = False
    offsets: Tensor | None = None
    keep: Tensor | None = None
    chosen: Tensor | None = None

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        """Each switch is kept as its row and column offset inside its pooling window
        (:func:`switch_offsets`), so its place in the input window is the same arithmetic
        for every seed, wherever its window lies. Outside the map the signal is zero (every
        step keeps it so), and there the offsets are 0: those zeros land inside the window.

        Where the windows tile the map, each value is repeated over its window and
        multiplied by the mask of chosen pixels: two passes over memory instead of index
        arithmetic and a scatter (VGG16-BN's five 2×2 pools). Where the signal covers the
        whole pooled map (units of the last stages at the first pool), the switches are the
        places themselves (:meth:`_whole_map`)."""
        if self.chosen is not None:
            return self._through_mask(signal, self.chosen, step)
        assert self.offsets is not None and self.switches is not None  # by construction
        size, data = signal.size, signal.data
        if self.keep is not None:
            data = data * crop(self.keep, step.index, signal.tops, signal.lefts, size).to(
                data.dtype
            )
        if covers_map(signal.tops, signal.lefts, size, self.switches.shape[-2:]):
            zeros = torch.zeros_like(signal.tops)
            return Window(self._whole_map(data, step), zeros, zeros.clone())
        window = self.window
        kernel, stride, dilation = window.kernel, window.stride, window.dilation
        in_h = (size[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
        in_w = (size[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
        count, channels = data.shape[:2]
        offsets = crop(self.offsets, step.index, signal.tops, signal.lefts, size)
        device = data.device
        corners = (torch.arange(size[0], device=device) * (stride[0] * in_w)).view(-1, 1) + (
            torch.arange(size[1], device=device) * stride[1]
        )
        local = offsets[:, :channels] * in_w + offsets[:, channels:] + corners
        flat = data.new_zeros((count, channels, in_h * in_w))
        flat.scatter_add_(2, local.flatten(2), data.flatten(2))
        return self.grown(flat.view(count, channels, in_h, in_w), signal)

    def _whole_map(self, data: Tensor, step: op.ReverseStep) -> Tensor:
        """The rule on the whole map is autograd's own max-pool backward: ResNet-18's
        first pool for 16 seeds in bfloat16, 119 → 48 ms (no index arithmetic, no crop)."""
        assert self.switches is not None
        window = self.window
        shape = data.new_empty(()).expand(*data.shape[:2], *step.hw(self.inputs[0]))
        unpooled: Tensor = torch.ops.aten.max_pool2d_with_indices_backward(
            data, shape, window.kernel, window.stride, window.padding, window.dilation,
            self.ceil_mode, per_seed(self.switches, step.index),
        )  # fmt: skip
        return unpooled

    def _through_mask(self, signal: Window, chosen: Tensor, step: op.ReverseStep) -> Window:
        (rows, cols), data = self.window.kernel, signal.data
        count, channels, height, width = data.shape
        spread = data[:, :, :, None, :, None].expand(count, channels, height, rows, width, cols)
        spread = spread.reshape(count, channels, height * rows, width * cols)
        tops, lefts = signal.tops * rows, signal.lefts * cols
        mask = crop(chosen, step.index, tops, lefts, spread.shape[-2:])
        return Window(spread * mask.to(data.dtype), tops, lefts)


def adaptive_kernel(x: Tensor, out: Tensor) -> op.Pair:
    """Adaptive pooling's kernel when the input is a multiple of the output; else no
    windowed rule."""
    (height, width), (out_h, out_w) = x.shape[-2:], out.shape[-2:]
    if height % out_h or width % out_w:
        raise op.Opaque
    return height // out_h, width // out_w


def adaptive_geometry(x: Tensor, out: Tensor) -> op.Geometry:
    """Adaptive pooling's window: an ordinary pool when divisible, else global."""
    try:
        kernel = adaptive_kernel(x, out)
    except op.Opaque:
        return op.GLOBAL
    return op.Sliding(kernel, kernel, (0, 0))


def switch_offsets(switches: Tensor, width: int, stride: op.Pair, padding: op.Pair) -> Tensor:
    """Max-pool switches (flat indices into the input map, B×C×h×w) as the row and column
    of each maximum inside its pooling window: ``[rows, columns]`` stacked on channels."""
    out_h, out_w = switches.shape[-2:]
    device = switches.device
    tops = torch.arange(out_h, device=device).view(-1, 1) * stride[0] - padding[0]
    lefts = torch.arange(out_w, device=device) * stride[1] - padding[1]
    rows = switches.div(width, rounding_mode="floor") - tops
    cols = switches.remainder(width) - lefts
    return torch.cat([rows, cols], dim=1)


def overwrite_collisions(pooled: Tensor, indices: Tensor, input_shape: torch.Size) -> Tensor:
    """Make max-unpooling overwrite instead of sum where pooling windows overlap.

    The old Caffe InvPooling layer zeroes its output and writes the pooled positions in
    raster order, so when two overlapping windows chose the same input pixel the later one
    wins. Autograd's max-pool backward sums them (the exact transpose). Masking the signal
    of every pooled position that is overwritten later turns the sum into the overwrite;
    the forward value is unchanged.

    Parameters
    ----------
    pooled : Tensor (B, C, *out_spatial)
    indices : LongTensor like ``pooled`` — flat argmax positions within each input plane.
    input_shape : shape of the pooling input (B, C, *in_spatial).
    """
    keep = overwrite_keep(indices, input_shape).to(pooled.dtype)
    return pooled * keep + (pooled * (1 - keep)).detach()


def overwrite_keep(indices: Tensor, input_shape: torch.Size) -> Tensor:
    """True where a pooled position is the last, in raster order, to write its switch."""
    flat = indices.flatten(2)
    order = torch.arange(flat.shape[2], device=flat.device).expand_as(flat)
    plane = int(torch.Size(input_shape[2:]).numel())
    last_writer = torch.full((*flat.shape[:2], plane), -1, dtype=torch.long, device=flat.device)
    last_writer = last_writer.scatter_reduce(2, flat, order, reduce="amax")
    return (last_writer.gather(2, flat) == order).reshape(indices.shape)


def _pool_through(call: MaxPoolCall, indices: Tensor, policy: ReversePolicy) -> Any:
    """Pool at the given argmax ``indices`` (another framework's choices at near-ties)."""
    x = call.input
    indices = indices.to(device=x.device, dtype=torch.long)
    pooled = x.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)
    if policy.overwrites:
        pooled = overwrite_collisions(pooled, indices, x.shape)
    return (pooled, indices) if call.wants_indices else pooled


FAMILIES: tuple[op.Op[Any], ...] = (MaxPool(), AdaptiveMaxPool())
