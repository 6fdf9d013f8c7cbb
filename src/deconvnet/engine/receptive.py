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

Each op's geometry comes from its entry in the op table (:mod:`deconvnet.engine.ops`):

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deconvnet.engine.capture import forward_through
from deconvnet.engine.hooks import model_lock
from deconvnet.engine.ops import OPS
from deconvnet.engine.ops.arguments import spatial, tensors
from deconvnet.engine.ops.op import CallMode, Geometry, Shifted, Sliding, TorchCall
from deconvnet.errors import InputError
from deconvnet.models.card import card_of

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

    def span(self, extent: Sequence[int], image_hw: tuple[int, int] | None = None) -> Box | None:
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
    root module left out; the type is the class the model card names (an export's), else the
    module's. A model that runs only one batch size is traced at that size.
    """
    if len(input_shape) != _IMAGE_RANK or any(int(v) < 1 for v in input_shape):
        raise InputError(f"input_shape must be (N, C, H, W) >= 1, got {tuple(input_shape)}")
    card = card_of(model)
    batch = card.fixed_batch or int(input_shape[0])  # fields do not depend on the batch
    shape = (batch, *(int(v) for v in input_shape[1:]))
    with model_lock(model):  # its hooks on a shared model are seen by every thread
        records = _trace(model, shape, device)
    rows = []
    for name, module in model.named_modules():
        if name and name in records:
            output_shape, field = records[name]
            rows.append(LayerRow(name, card.layer_type(name, module), output_shape, field))
    return rows


class _FieldTracer(CallMode):
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

    def handle(self, call: TorchCall) -> Any:
        result = call.run()
        found = [(t, self.field_of(t)) for t in tensors((call.args, call.kwargs))]
        sources = [(t, f) for t, f in found if f is not None]
        if sources:
            for output in tensors(result):
                self.track(output, self._propagate(call, sources, output))
        return result

    def _propagate(
        self,
        raw: TorchCall,
        sources: list[tuple[torch.Tensor, ReceptiveField]],
        output: torch.Tensor,
    ) -> ReceptiveField:
        if output.dim() != _IMAGE_RANK or any(f.is_global for _, f in sources):
            return self.whole_image()
        op = OPS.get(raw.func)
        if op is not None:
            source = raw.input
            field = self.field_of(source)
            if field is not None and spatial(source):
                geometry = op.geometry(op.parse(raw), source, output)
                if geometry is not None:
                    return self._moved(field, geometry)
        out_hw = tuple(output.shape[-_SPATIAL:])
        if all(t.dim() == _IMAGE_RANK and tuple(t.shape[-_SPATIAL:]) == out_hw for t, _ in sources):
            return _union([f for _, f in sources])
        return self.whole_image()

    def _moved(self, field: ReceptiveField, geometry: Geometry) -> ReceptiveField:
        if isinstance(geometry, Sliding):
            return _window(field, geometry)
        if isinstance(geometry, Shifted):
            return _shift(field, geometry)
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

    def record(name: str, output: Any) -> tuple[tuple[int, ...] | None, ReceptiveField | None]:
        if not isinstance(output, torch.Tensor):
            return None, None
        return tuple(output.shape), tracer.field_of(output) if spatial(output) else None

    saved_buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cuda_devices = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad(), tracer:
            records, _ = forward_through(
                model,
                images,
                [(n, m) for n, m in model.named_modules() if n],
                keep=record,
                reached_only=True,
            )
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved_buffers[name])
    return records


def _window(field: ReceptiveField, geometry: Sliding) -> ReceptiveField:
    """A sliding window over ``field``'s units: the Distill recurrence, per axis."""
    size, step, offset = [], [], []
    for axis in range(_SPATIAL):
        extent = geometry.dilation[axis] * (geometry.kernel[axis] - 1)
        size.append(field.size[axis] + extent * field.stride[axis])
        step.append(field.stride[axis] * geometry.stride[axis])
        offset.append(
            field.offset[axis] + (extent / 2 - geometry.padding[axis]) * field.stride[axis]
        )
    return ReceptiveField((size[0], size[1]), (step[0], step[1]), (offset[0], offset[1]))


def _shift(field: ReceptiveField, geometry: Shifted) -> ReceptiveField:
    """Units moved by ``-before`` and taken every ``step``: padding or slicing H/W."""
    before, step = geometry.before, geometry.step
    offset = tuple(field.offset[a] - before[a] * field.stride[a] for a in range(_SPATIAL))
    stride = tuple(field.stride[a] * step[a] for a in range(_SPATIAL))
    return ReceptiveField(field.size, (stride[0], stride[1]), (offset[0], offset[1]))


def _union(fields: list[ReceptiveField]) -> ReceptiveField:
    size, step, offset = [], [], []
    for axis in range(_SPATIAL):
        tops = [f.offset[axis] - (f.size[axis] - 1) / 2 for f in fields]
        bottoms = [f.offset[axis] + (f.size[axis] - 1) / 2 for f in fields]
        size.append(round(max(bottoms) - min(tops)) + 1)
        step.append(max(f.stride[axis] for f in fields))
        offset.append((max(bottoms) + min(tops)) / 2)
    return ReceptiveField((size[0], size[1]), (step[0], step[1]), (offset[0], offset[1]))
