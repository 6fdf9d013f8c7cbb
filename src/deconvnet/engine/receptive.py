"""Receptive-field arithmetic for any PyTorch model, found by tracing one forward pass.

Every tensor derived from the input carries a :class:`ReceptiveField`: the input box that
its unit ``(0, 0)`` can see (``size``), how far that box moves per unit (``stride``) and
its centre (``offset``). The input starts at size 1, stride 1, offset 0; an op with kernel
``k``, stride ``s``, padding ``p`` and dilation ``d`` on a field ``(r, j, o)`` gives
``(r + d(k-1)j, js, o + (d(k-1)/2 - p)j)`` (Araujo et al., "Computing receptive fields of
convolutional neural networks", Distill 2019).

Ops are seen at the ``torch`` function level through a
:class:`~torch.overrides.TorchFunctionMode`, so functional code, residual additions and
concatenations are followed as well as modules; module forward hooks only attach names.

* Convolution and max/avg/LP pooling use their kernel, stride, padding and dilation.
  ``padding="same"`` pads ``d(k-1)//2`` before, as PyTorch does.
* ``F.pad`` and basic slicing of H/W shift (and stride) the field.
* Adaptive pooling whose input is a multiple of its output is an ordinary pool; otherwise
  it, and every op that changes the spatial size in another way (linear, flatten,
  interpolate, transposed convolution, permutes to NHWC), makes the field **global**: the
  whole input, ``is_global=True``. Anything computed from a global tensor is global.
* Any other op whose tracked inputs all have the output's H and W (ReLU, BatchNorm, LRN,
  dropout, ``+``, ``torch.cat`` on channels, ...) takes the **union** of its inputs' fields:
  the smallest box holding every input's box for unit ``(0, 0)``, and the largest stride
  (exact when the strides agree, which they do for equal-sized branches of a CNN; with
  different strides the union is an under-estimate away from unit ``(0, 0)``). A
  concatenation therefore reports one field for all its channels, the largest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from deconvnet.engine.hooks import model_lock
from deconvnet.errors import InputError

Box = tuple[int, int, int, int]
_SPATIAL = 2
_IMAGE_RANK = 4


@dataclass(frozen=True)
class ReceptiveField:
    """Where a layer's units look in the input image.

    Parameters
    ----------
    size
        ``(height, width)`` of the input box one unit depends on.
    stride
        ``(dy, dx)`` input pixels between neighbouring units.
    offset
        Input coordinate ``(y, x)`` of the centre of unit ``(0, 0)``; negative when padding
        puts it outside the image, a half-integer for even kernels.
    is_global
        The unit depends on the whole input (after global pooling or a linear layer);
        ``size`` is then the input's ``(H, W)``.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[float, float]
    is_global: bool = False

    def center(self, y: int, x: int) -> tuple[float, float]:
        """Input coordinate of the centre of unit ``(y, x)``."""
        return self.offset[0] + y * self.stride[0], self.offset[1] + x * self.stride[1]

    def box(self, y: int, x: int, image_hw: tuple[int, int] | None = None) -> Box:
        """``(top, left, bottom, right)`` input box of unit ``(y, x)``; bottom/right exclusive.

        With ``image_hw`` the box is clipped to the image (padding lies outside it). A global
        field gives the whole input whatever ``(y, x)``.
        """
        if self.is_global:
            top, left = 0, 0
        else:
            center_y, center_x = self.center(y, x)
            top = round(center_y - (self.size[0] - 1) / 2)
            left = round(center_x - (self.size[1] - 1) / 2)
        bottom, right = top + self.size[0], left + self.size[1]
        if image_hw is None:
            return top, left, bottom, right
        height, width = image_hw
        top, left = min(max(top, 0), height), min(max(left, 0), width)
        return top, left, max(min(bottom, height), top), max(min(right, width), left)


    def span(
        self, extent: Sequence[int], image_hw: tuple[int, int] | None = None
    ) -> Box | None:
        """The input box that units ``extent = (top, left, bottom, right)`` (inclusive map
        indices, as :attr:`Projection.extents`) look at together, clipped to the image when
        ``image_hw`` is given; None when ``extent`` is empty (``-1``)."""
        top, left, bottom, right = (int(v) for v in extent)
        if min(top, left, bottom, right) < 0:
            return None
        first = self.box(top, left, image_hw)
        last = self.box(bottom, right, image_hw)
        return first[0], first[1], last[2], last[3]


def union_box(boxes: Iterable[Box | None]) -> Box | None:
    """The smallest box holding every given box (None when there are none)."""
    present = [box for box in boxes if box is not None]
    if not present:
        return None
    return (
        min(box[0] for box in present),
        min(box[1] for box in present),
        max(box[2] for box in present),
        max(box[3] for box in present),
    )


@dataclass(frozen=True)
class LayerRow:
    """One line of :func:`layer_table`: ``rf`` is None unless the output is ``(N, C, H, W)``."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    rf: ReceptiveField | None


def receptive_fields(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device | str | None = None,
) -> dict[str, ReceptiveField]:
    """Receptive field of every named module whose output is a 4-D tensor.

    One forward pass on zeros of ``input_shape`` ``(N, C, H, W)`` under ``torch.no_grad``;
    the model is left as it was (hooks removed, buffers such as BatchNorm statistics and the
    RNG state restored, no ``.eval()``/``.to()``). A module called several times reports its
    last call. Order follows ``model.named_modules()``.

    Raises
    ------
    InputError
        ``input_shape`` is not 4 positive sizes, or the forward pass fails at that shape.
    """
    rows = layer_table(model, input_shape, device)
    return {row.name: row.rf for row in rows if row.rf is not None}


def layer_table(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device | str | None = None,
) -> list[LayerRow]:
    """Name, type, output shape and receptive field of every module the forward pass calls.

    Same tracing as :func:`receptive_fields`; rows in ``model.named_modules()`` order, the
    root module left out.
    """
    if len(input_shape) != _IMAGE_RANK or any(int(v) < 1 for v in input_shape):
        raise InputError(f"input_shape must be (N, C, H, W) >= 1, got {tuple(input_shape)}")
    shape = tuple(int(v) for v in input_shape)
    with model_lock(model):  # its hooks on a shared model are seen by every thread
        records = _trace(model, shape, device)
    rows = []
    for name, module in model.named_modules():
        if name and name in records:
            output_shape, field = records[name]
            rows.append(LayerRow(name, type(module).__name__, output_shape, field))
    return rows


class _FieldTracer(TorchFunctionMode):
    """Gives every tensor computed from the input its receptive field, keyed by identity."""

    def __init__(self, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.image_hw = image_hw
        # strong references keep ids unique for the whole pass
        self._fields: dict[int, tuple[torch.Tensor, ReceptiveField]] = {}

    def track(self, tensor: torch.Tensor, field: ReceptiveField) -> None:
        self._fields[id(tensor)] = (tensor, field)

    def field_of(self, tensor: object) -> ReceptiveField | None:
        entry = self._fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def whole_image(self) -> ReceptiveField:
        height, width = self.image_hw
        return ReceptiveField(
            (height, width), (height, width), ((height - 1) / 2, (width - 1) / 2), True
        )

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        sources = [(t, f) for t in _tensors((args, kwargs)) if (f := self.field_of(t)) is not None]
        if sources:
            for output in _tensors(result):
                self.track(output, self._propagate(func, args, kwargs, sources, output))
        return result

    def _propagate(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        sources: list[tuple[torch.Tensor, ReceptiveField]],
        output: torch.Tensor,
    ) -> ReceptiveField:
        if output.dim() != _IMAGE_RANK or any(f.is_global for _, f in sources):
            return self.whole_image()
        entry = _RULES.get(func)
        if entry is not None:
            rule, names = entry
            bound = _bind(names, args, kwargs)
            source = bound.get("input")
            field = self.field_of(source)
            if (
                field is not None
                and isinstance(source, torch.Tensor)
                and source.dim() == _IMAGE_RANK
            ):
                result = rule(field, source, output, bound)
                return result if result is not None else self.whole_image()
        out_hw = tuple(output.shape[-_SPATIAL:])
        if all(t.dim() == _IMAGE_RANK and tuple(t.shape[-_SPATIAL:]) == out_hw for t, _ in sources):
            return _union([f for _, f in sources])
        return self.whole_image()


def _trace(
    model: nn.Module, shape: tuple[int, ...], device: torch.device | str | None
) -> dict[str, tuple[tuple[int, ...] | None, ReceptiveField | None]]:
    reference: torch.Tensor | None = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), None)
    if device is None:
        device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else None
    images = torch.zeros(shape, device=device, dtype=dtype or torch.float32)
    tracer = _FieldTracer((shape[2], shape[3]))
    tracer.track(images, ReceptiveField((1, 1), (1, 1), (0.0, 0.0)))
    records: dict[str, tuple[tuple[int, ...] | None, ReceptiveField | None]] = {}

    def recorder(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                field = tracer.field_of(output) if output.dim() == _IMAGE_RANK else None
                records[name] = (tuple(output.shape), field)
            else:
                records[name] = (None, None)

        return record

    saved_buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cuda_devices = [images.device] if images.device.type == "cuda" else []
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(recorder(name)))
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad(), tracer:
            model(images)
    except (RuntimeError, ValueError, IndexError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise InputError(f"forward pass with input shape {shape} failed: {message}") from exc
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved_buffers[name])
    return records


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _pair(value: Any, default: int) -> tuple[int, int]:
    if value is None or (isinstance(value, list | tuple) and len(value) == 0):
        return default, default
    if isinstance(value, list | tuple):  # (k,), (kh, kw) or a longer tuple ending in H, W
        return (
            (int(value[-1]), int(value[-1]))
            if len(value) == 1
            else (int(value[-2]), int(value[-1]))
        )
    return int(value), int(value)


def _window(
    field: ReceptiveField,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> ReceptiveField:
    """A sliding window over ``field``'s units: the Distill recurrence, per axis."""
    size, step, offset = [], [], []
    for axis in range(_SPATIAL):
        extent = dilation[axis] * (kernel[axis] - 1)
        size.append(field.size[axis] + extent * field.stride[axis])
        step.append(field.stride[axis] * stride[axis])
        offset.append(field.offset[axis] + (extent / 2 - padding[axis]) * field.stride[axis])
    return ReceptiveField((size[0], size[1]), (step[0], step[1]), (offset[0], offset[1]))


def _union(fields: list[ReceptiveField]) -> ReceptiveField:
    size, step, offset = [], [], []
    for axis in range(_SPATIAL):
        tops = [f.offset[axis] - (f.size[axis] - 1) / 2 for f in fields]
        bottoms = [f.offset[axis] + (f.size[axis] - 1) / 2 for f in fields]
        size.append(round(max(bottoms) - min(tops)) + 1)
        step.append(max(f.stride[axis] for f in fields))
        offset.append((max(bottoms) + min(tops)) / 2)
    return ReceptiveField((size[0], size[1]), (step[0], step[1]), (offset[0], offset[1]))


# ---- per-op rules: (field of first argument, that tensor, output, bound arguments) -> field

_Args = dict[str, Any]
_Rule = Callable[[ReceptiveField, Tensor, Tensor, _Args], ReceptiveField | None]

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVG_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode")
_LP_POOL_ARGS = ("input", "norm_type", "kernel_size", "stride", "ceil_mode")
_PAD_ARGS = ("input", "pad", "mode", "value")
_GETITEM_ARGS = ("input", "index")


def _conv_rule(field: ReceptiveField, x: Tensor, out: Tensor, a: _Args) -> ReceptiveField:
    kernel = (int(a["weight"].shape[-2]), int(a["weight"].shape[-1]))
    dilation = _pair(a.get("dilation"), 1)
    padding_arg = a.get("padding", 0)
    if padding_arg == "valid":
        padding = (0, 0)
    elif padding_arg == "same":
        padding = (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
    else:
        padding = _pair(padding_arg, 0)
    return _window(field, kernel, _pair(a.get("stride"), 1), padding, dilation)


def _pool_rule(field: ReceptiveField, x: Tensor, out: Tensor, a: _Args) -> ReceptiveField:
    kernel = _pair(a["kernel_size"], 1)
    stride = _pair(a.get("stride"), 0)
    stride = stride if stride != (0, 0) else kernel
    return _window(field, kernel, stride, _pair(a.get("padding"), 0), _pair(a.get("dilation"), 1))


def _adaptive_rule(
    field: ReceptiveField, x: Tensor, out: Tensor, a: _Args
) -> ReceptiveField | None:
    in_hw, out_hw = x.shape[-_SPATIAL:], out.shape[-_SPATIAL:]
    if any(i % o for i, o in zip(in_hw, out_hw, strict=True)):
        return None
    kernel = (in_hw[0] // out_hw[0], in_hw[1] // out_hw[1])
    return _window(field, kernel, kernel, (0, 0))


def _pad_rule(field: ReceptiveField, x: Tensor, out: Tensor, a: _Args) -> ReceptiveField | None:
    pad = [int(v) for v in a["pad"]]
    if len(pad) not in (2, 4):
        return None
    before = (pad[2] if len(pad) == 4 else 0, pad[0])
    return _shift(field, before, (1, 1))


def _getitem_rule(field: ReceptiveField, x: Tensor, out: Tensor, a: _Args) -> ReceptiveField | None:
    index = a["index"] if isinstance(a["index"], tuple) else (a["index"],)
    if any(item is Ellipsis for item in index):
        at = index.index(Ellipsis)
        fill = (slice(None),) * (x.dim() - (len(index) - 1))
        index = index[:at] + fill + index[at + 1 :]
    index = index + (slice(None),) * (x.dim() - len(index))
    if len(index) != x.dim() or not all(isinstance(item, slice) for item in index):
        return None
    starts, steps = [], []
    for axis, item in enumerate(index[-_SPATIAL:]):
        start, _, step = item.indices(int(x.shape[-_SPATIAL + axis]))
        starts.append(-start)
        steps.append(step)
    return _shift(field, (starts[0], starts[1]), (steps[0], steps[1]))


def _shift(field: ReceptiveField, before: tuple[int, int], step: tuple[int, int]) -> ReceptiveField:
    """Units moved by ``-before`` and taken every ``step``: padding or slicing H/W."""
    offset = tuple(field.offset[a] - before[a] * field.stride[a] for a in range(_SPATIAL))
    stride = tuple(field.stride[a] * step[a] for a in range(_SPATIAL))
    return ReceptiveField(field.size, (stride[0], stride[1]), (offset[0], offset[1]))


_ADAPTIVE = ("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices")
_RULE_GROUPS: list[tuple[tuple[str, ...], _Rule, tuple[str, ...]]] = [
    (("conv2d",), _conv_rule, _CONV_ARGS),
    (("max_pool2d", "max_pool2d_with_indices"), _pool_rule, _MAX_POOL_ARGS),
    (("avg_pool2d",), _pool_rule, _AVG_POOL_ARGS),
    (("lp_pool2d",), _pool_rule, _LP_POOL_ARGS),
    (_ADAPTIVE, _adaptive_rule, ("input", "output_size")),
    (("pad",), _pad_rule, _PAD_ARGS),
]
# the same op is reachable as torch.x, F.x and torch._C._nn.x; key every spelling
_RULES: dict[Any, tuple[_Rule, tuple[str, ...]]] = {
    getattr(namespace, name): (rule, arg_names)
    for names, rule, arg_names in _RULE_GROUPS
    for namespace in (torch, F, torch._C._nn)
    for name in names
    if hasattr(namespace, name)
}
_RULES[torch.Tensor.__getitem__] = (_getitem_rule, _GETITEM_ARGS)


def _bind(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    if "input" not in bound and "self" in bound:  # Tensor methods
        bound["input"] = bound["self"]
    return bound
