"""One builder per Caffe layer type: the torch module, its top shapes, its blob shapes.

Shapes are inferred symbolically (no tensor is created), so a prototxt that declares a
huge blob costs nothing until it is run, and parameter sizes are known before anything is
allocated. Output sizes follow Caffe's layer sources exactly (conv floor, pooling ceil
with the "last window starts in the padding" correction).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from deconvnet.caffe import layers
from deconvnet.caffe.parse import LayerDef
from deconvnet.errors import CaffeFormatError

Shape = tuple[int, ...]
SPATIAL_AXES = 2
IMAGE_AXES = 4

MAX_WINDOW = 4096
"""Largest kernel, stride, pad, dilation or LRN size: far above any published net's (11)."""
MAX_CHANNELS = 1 << 20
"""Largest ``num_output`` or ``group``: far above any published net's (4096 fc units)."""
MAX_BLOB_ELEMENTS = 1 << 30
"""Values in one blob (a top or a parameter): 4 GiB of float32; larger is refused at load."""
MAX_INPUT_PIXELS = 4096 * 4096
"""H x W of a declared input: ``project`` and the datasets downscale photos below this."""


@dataclass
class Built:
    """What a builder returns.

    ``blob_shapes`` are the shapes of the layer's Caffe blobs in caffemodel order, and
    ``targets`` name where each goes on the module (``"weight"``, ``"bias"``,
    ``"running_mean"``...); ``kind`` tells the network how to call the module.
    """

    module: nn.Module
    tops: list[Shape]
    blob_shapes: list[Shape] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    kind: str = "plain"  # "plain" | "split" | "pool_mask" | "input"
    transposed_weight: bool = False


def _fail(layer: LayerDef, what: str) -> CaffeFormatError:
    return CaffeFormatError(f"layer {layer.name!r} ({layer.type}): {what}")


def _axis(layer: LayerDef, axis: int, ndim: int) -> int:
    """Caffe's ``CanonicalAxisIndex``: negative counts from the end."""
    if not -ndim <= axis < ndim:
        raise _fail(layer, f"axis {axis} out of range for a {ndim}-axis blob")
    return axis % ndim


def _image(layer: LayerDef, shape: Shape) -> Shape:
    if len(shape) != IMAGE_AXES:
        raise _fail(layer, f"needs a 4-D (N, C, H, W) bottom, got shape {shape}")
    return shape


def _pair(layer: LayerDef, p: Any, name: str, default: int | None) -> tuple[int, int]:
    """Caffe's kernel/stride/pad/dilation, each at most :data:`MAX_WINDOW`."""
    pair = _given_pair(layer, p, name, default)
    if max(pair) > MAX_WINDOW:
        raise _fail(layer, f"{name} {pair} is over {MAX_WINDOW}")
    return pair


def _at_most(layer: LayerDef, field_name: str, value: int, limit: int) -> int:
    if value > limit:
        raise _fail(layer, f"{field_name} {value} is over {limit}")
    return value


def _finite(layer: LayerDef, field_name: str, value: float) -> float:
    if not math.isfinite(value):
        raise _fail(layer, f"{field_name} must be a finite number, got {value}")
    return float(value)


def _given_pair(layer: LayerDef, p: Any, name: str, default: int | None) -> tuple[int, int]:
    """``name_h``/``name_w`` or one or two values of ``name``."""
    has_hw = p.HasField(f"{name}_h") or p.HasField(f"{name}_w") if name != "dilation" else False
    if has_hw:
        if not (p.HasField(f"{name}_h") and p.HasField(f"{name}_w")) and name == "kernel":
            raise _fail(layer, "kernel_h and kernel_w must be given together")
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    field_name = "kernel_size" if name == "kernel" else name
    values = getattr(p, field_name)
    values = (
        list(values)
        if not isinstance(values, int)
        else ([values] if p.HasField(field_name) else [])
    )
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == SPATIAL_AXES:
        return int(values[0]), int(values[1])
    if not values and default is not None:
        return default, default
    raise _fail(layer, f"{field_name} needs 1 or 2 values for a 2-D layer, got {len(values)}")


def _convolution(layer: LayerDef, bottoms: list[Shape], transposed: bool) -> Built:
    p = layer.params.convolution_param
    n, c, h, w = _image(layer, bottoms[0])
    kernel = _pair(layer, p, "kernel", None)
    stride = _pair(layer, p, "stride", 1)
    pad = _pair(layer, p, "pad", 0)
    dilation = _pair(layer, p, "dilation", 1)
    out = _at_most(layer, "num_output", int(p.num_output), MAX_CHANNELS)
    group = _at_most(layer, "group", int(p.group), MAX_CHANNELS)
    if p.axis not in (1, -3):
        raise _fail(layer, f"only axis 1 (channels) is supported, got {p.axis}")
    if min(*kernel, *stride, *dilation, out, group) < 1:
        raise _fail(layer, "kernel, stride, dilation, num_output and group must be >= 1")
    if c % group or out % group:
        raise _fail(layer, f"channels {c} and num_output {out} must divide by group {group}")
    sizes = []
    for size, k, s, pd, d in zip((h, w), kernel, stride, pad, dilation, strict=True):
        extent = d * (k - 1) + 1
        size_out = (
            s * (size - 1) + extent - 2 * pd if transposed else (size + 2 * pd - extent) // s + 1
        )
        if size_out < 1:
            raise _fail(layer, f"output size {size_out} < 1 for input {(h, w)}")
        sizes.append(size_out)
    common = {
        "stride": stride,
        "padding": pad,
        "dilation": dilation,
        "groups": group,
        "bias": p.bias_term,
    }
    if transposed:
        module: nn.Module = nn.ConvTranspose2d(c, out, kernel, **common)
        weight: Shape = (c, out // group, *kernel)
    else:
        module = nn.Conv2d(c, out, kernel, **common)
        weight = (out, c // group, *kernel)
    blobs: list[Shape] = [weight, (out,)] if p.bias_term else [weight]
    return Built(module, [(n, out, *sizes)], blobs, ["weight", "bias"][: len(blobs)])


def _pool_size(size: int, k: int, s: int, pad: int, ceil: bool) -> int:
    """pooling_layer.cpp: ceil (or floor) division, minus one if the last window would
    start inside the bottom/right padding."""
    span = size + 2 * pad - k
    pooled = (-(-span // s) if ceil else span // s) + 1
    if pad and (pooled - 1) * s >= size + pad:
        pooled -= 1
    return pooled


def _pooling(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.pooling_param
    n, c, h, w = _image(layer, bottoms[0])
    method = p.DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number[p.pool].name
    if method not in ("MAX", "AVE"):
        raise _fail(layer, f"pool method {method} is not supported (MAX or AVE)")
    wants_mask = len(layer.tops) == SPATIAL_AXES
    if wants_mask and method != "MAX":
        raise _fail(layer, "a second (mask) top needs MAX pooling")
    if p.global_pooling:
        module: nn.Module = nn.AdaptiveMaxPool2d(1) if method == "MAX" else nn.AdaptiveAvgPool2d(1)
        return Built(
            module, [(n, c, 1, 1)] * len(layer.tops), kind="pool_mask" if wants_mask else "plain"
        )
    kernel = _pair(layer, p, "kernel", None)
    stride = _pair(layer, p, "stride", 1)
    pad = _pair(layer, p, "pad", 0)
    if min(*kernel, *stride) < 1:
        raise _fail(layer, "kernel and stride must be >= 1")
    if any(2 * pd > k for pd, k in zip(pad, kernel, strict=True)):
        raise _fail(layer, f"pad {pad} larger than half the kernel {kernel} is not supported")
    ceil = p.round_mode == 0
    sizes = [
        _pool_size(sz, k, s, pd, ceil)
        for sz, k, s, pd in zip((h, w), kernel, stride, pad, strict=True)
    ]
    if min(sizes) < 1 or any(
        sz + 2 * pd < k for sz, k, pd in zip((h, w), kernel, pad, strict=True)
    ):
        raise _fail(layer, f"kernel {kernel} does not fit the {(h, w)} input")
    if method == "MAX":
        module = nn.MaxPool2d(kernel, stride, pad, ceil_mode=ceil)
    else:  # torch's ceil-mode divisor with count_include_pad is Caffe's (window clipped to H + pad)
        module = nn.AvgPool2d(kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)
    tops = [(n, c, *sizes)] * len(layer.tops)
    return Built(module, tops, kind="pool_mask" if wants_mask else "plain")


def _lrn(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.lrn_param
    _image(layer, bottoms[0])
    size = _at_most(layer, "local_size", int(p.local_size), MAX_WINDOW)
    if size < 1 or size % 2 == 0:
        raise _fail(layer, f"local_size must be odd (Caffe's rule), got {size}")
    for name in ("alpha", "beta", "k"):
        _finite(layer, name, getattr(p, name))
    if p.norm_region == 0:  # ACROSS_CHANNELS: torch also divides alpha by size
        module: nn.Module = nn.LocalResponseNorm(size, alpha=p.alpha, beta=p.beta, k=p.k)
    else:
        module = layers.WithinChannelLRN(size, p.alpha, p.beta)
    return Built(module, [bottoms[0]])


def _inner_product(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.inner_product_param
    shape = bottoms[0]
    axis = _axis(layer, p.axis, len(shape))
    in_features = math.prod(shape[axis:])
    out = _at_most(layer, "num_output", int(p.num_output), MAX_CHANNELS)
    if out < 1:
        raise _fail(layer, "num_output must be >= 1")
    module = layers.InnerProduct(in_features, out, bias=p.bias_term, axis=axis)
    weight = (in_features, out) if p.transpose else (out, in_features)
    blobs: list[Shape] = [weight, (out,)] if p.bias_term else [weight]
    return Built(
        module,
        [(*shape[:axis], out)],
        blobs,
        ["weight", "bias"][: len(blobs)],
        transposed_weight=p.transpose,
    )


def _relu(layer: LayerDef, bottoms: list[Shape]) -> Built:
    slope = _finite(layer, "negative_slope", layer.params.relu_param.negative_slope)
    return Built(nn.LeakyReLU(slope) if slope else nn.ReLU(), [bottoms[0]])


def _prelu(layer: LayerDef, bottoms: list[Shape]) -> Built:
    shape = bottoms[0]
    if len(shape) < SPATIAL_AXES:
        raise _fail(layer, f"needs a bottom with a channel axis, got shape {shape}")
    count = 1 if layer.params.prelu_param.channel_shared else shape[1]
    return Built(nn.PReLU(count), [shape], [(count,)], ["weight"])


def _softmax(layer: LayerDef, bottoms: list[Shape]) -> Built:
    axis = _axis(layer, layer.params.softmax_param.axis, len(bottoms[0]))
    return Built(nn.Softmax(dim=axis), [bottoms[0]])


def _concat(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.concat_param
    first = bottoms[0]
    axis = _axis(
        layer,
        p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim,
        len(first),
    )
    for shape in bottoms[1:]:
        if (
            len(shape) != len(first)
            or shape[:axis] + shape[axis + 1 :] != first[:axis] + first[axis + 1 :]
        ):
            raise _fail(layer, f"bottom shapes {bottoms} differ outside axis {axis}")
    joined = sum(shape[axis] for shape in bottoms)
    return Built(layers.Concat(axis), [(*first[:axis], joined, *first[axis + 1 :])])


def _eltwise(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.eltwise_param
    operation = (
        p.DESCRIPTOR.fields_by_name["operation"].enum_type.values_by_number[p.operation].name
    )
    coefficients = tuple(_finite(layer, "coeff", c) for c in p.coeff) or None
    if coefficients and (operation != "SUM" or len(coefficients) != len(bottoms)):
        raise _fail(
            layer,
            f"needs SUM and one coeff per bottom ({len(bottoms)}), "
            f"got {len(coefficients)} for {operation}",
        )
    if len(set(bottoms)) != 1:
        raise _fail(layer, f"bottom shapes differ: {bottoms}")
    return Built(layers.Eltwise(operation, coefficients), [bottoms[0]])


def _flatten(layer: LayerDef, bottoms: list[Shape]) -> Built:
    shape = bottoms[0]
    p = getattr(layer.params, "flatten_param", None)
    start = _axis(layer, p.axis if p is not None else 1, len(shape))
    end = _axis(layer, p.end_axis if p is not None else -1, len(shape))
    if end < start:
        raise _fail(layer, f"end_axis {end} before axis {start}")
    top = (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
    return Built(nn.Flatten(start, end), [top])


def _reshape(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.reshape_param
    shape, dims = bottoms[0], tuple(int(d) for d in p.shape.dim)
    start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
    end = len(shape) if p.num_axes == -1 else start + p.num_axes
    if not 0 <= start <= end <= len(shape) or p.num_axes < -1:
        raise _fail(layer, f"axis {p.axis} / num_axes {p.num_axes} out of range for {shape}")
    if (
        dims.count(-1) > 1
        or any(d < -1 for d in dims)
        or any(d == 0 and start + i >= len(shape) for i, d in enumerate(dims))
    ):
        raise _fail(layer, f"invalid reshape dims {dims}")
    middle = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
    known = math.prod(d for d in middle if d != -1)
    total = math.prod(shape[start:end])
    if -1 in middle:
        if known == 0 or total % known:
            raise _fail(layer, f"cannot infer -1 in {dims} from {shape}")
        middle[middle.index(-1)] = total // known
    if math.prod(middle) != total:
        raise _fail(layer, f"cannot reshape {shape} with dims {dims}")
    top = (*shape[:start], *middle, *shape[end:])
    return Built(
        layers.Reshape(dims, start, None if end == len(shape) else end - len(shape)), [top]
    )


def _batch_norm(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.batch_norm_param
    shape = bottoms[0]
    if len(shape) not in (2, IMAGE_AXES):
        raise _fail(layer, f"needs a 2-D or 4-D bottom, got shape {shape}")
    channels = shape[1]
    cls = nn.BatchNorm2d if len(shape) == IMAGE_AXES else nn.BatchNorm1d
    if _finite(layer, "eps", p.eps) < 0:
        raise _fail(layer, f"eps must be >= 0, got {p.eps}")
    global_stats = p.use_global_stats if p.HasField("use_global_stats") else True
    module = cls(channels, eps=p.eps, affine=False, track_running_stats=global_stats)
    blobs: list[Shape] = [(channels,), (channels,), (1,)]
    return Built(module, [shape], blobs, ["running_mean", "running_var", "scale_factor"])


def _scale(layer: LayerDef, bottoms: list[Shape]) -> Built:
    p = layer.params.scale_param
    shape = bottoms[0]
    axis = _axis(layer, p.axis, len(shape))
    if len(bottoms) == SPATIAL_AXES:
        factor = bottoms[1]
        if shape[axis : axis + len(factor)] != factor:
            raise _fail(layer, f"second bottom {factor} does not match {shape} at axis {axis}")
        return Built(layers.ScaleByBlob(len(shape) - axis - len(factor)), [shape])
    end = len(shape) if p.num_axes == -1 else axis + p.num_axes
    if p.num_axes < -1 or end > len(shape):
        raise _fail(layer, f"num_axes {p.num_axes} out of range for {shape}")
    param_shape = shape[axis:end]
    module = layers.Scale(param_shape, axis, len(shape) - end, p.bias_term)
    blobs = [param_shape, param_shape] if p.bias_term else [param_shape]
    return Built(module, [shape], blobs, ["weight", "bias"][: len(blobs)])


def _same(factory: Callable[[LayerDef], nn.Module]) -> Callable[[LayerDef, list[Shape]], Built]:
    return lambda layer, bottoms: Built(factory(layer), [bottoms[0]])


def _dropout(layer: LayerDef, bottoms: list[Shape]) -> Built:
    """Caffe requires ``0 <= dropout_ratio < 1`` (it scales by ``1 / (1 - ratio)``)."""
    ratio = layer.params.dropout_param.dropout_ratio
    if not 0 <= ratio < 1:  # NaN fails too
        raise _fail(layer, f"dropout_ratio must be in [0, 1), got {ratio}")
    return Built(nn.Dropout(ratio), [bottoms[0]])


def check_blob(where: str, what: str, shape: Shape) -> None:
    """Refuse a blob shape whose size is over :data:`MAX_BLOB_ELEMENTS` (``where``: the layer)."""
    if math.prod(shape) > MAX_BLOB_ELEMENTS:
        raise CaffeFormatError(
            f"{where}: {what} of shape {shape} would hold {math.prod(shape)} values, over "
            f"{MAX_BLOB_ELEMENTS}; refusing to allocate"
        )


def check_input(where: str, shape: Shape) -> None:
    """A declared input: its H x W within :data:`MAX_INPUT_PIXELS`, its size a blob's."""
    if len(shape) == IMAGE_AXES and shape[2] * shape[3] > MAX_INPUT_PIXELS:
        raise CaffeFormatError(
            f"{where}: input {shape[2]}x{shape[3]} is over the {MAX_INPUT_PIXELS}-pixel budget"
        )
    check_blob(where, "input", shape)


def _split(layer: LayerDef, bottoms: list[Shape]) -> Built:
    return Built(layers.Split(), [bottoms[0]] * len(layer.tops), kind="split")


BUILDERS: dict[str, Callable[[LayerDef, list[Shape]], Built]] = {
    "Convolution": lambda layer, b: _convolution(layer, b, transposed=False),
    "Deconvolution": lambda layer, b: _convolution(layer, b, transposed=True),
    "Pooling": _pooling,
    "LRN": _lrn,
    "InnerProduct": _inner_product,
    "ReLU": _relu,
    "PReLU": _prelu,
    "Sigmoid": _same(lambda _: nn.Sigmoid()),
    "TanH": _same(lambda _: nn.Tanh()),
    "Dropout": lambda layer, bottoms: _dropout(layer, bottoms),
    "Softmax": _softmax,
    "Concat": _concat,
    "Eltwise": _eltwise,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
    "Split": _split,
}
"""Caffe type string -> builder. Anything else is unsupported."""

# (min bottoms, max bottoms, min tops, max tops); None = unbounded.
ARITY: dict[str, tuple[int, int | None, int, int | None]] = {
    "Concat": (1, None, 1, 1),
    "Eltwise": (2, None, 1, 1),
    "Scale": (1, 2, 1, 1),
    "Split": (1, 1, 1, None),
    "Pooling": (1, 1, 1, 2),
}
DEFAULT_ARITY = (1, 1, 1, 1)
