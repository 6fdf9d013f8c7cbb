"""Occlusion without recomputing what the occluder cannot change.

An occluder changes only the units of an early layer ``M`` whose receptive field overlaps
it. So for each occluder position the network runs its layers up to ``M`` on a small crop
of the occluded image (just large enough to hold those units' receptive fields), a forward
hook on ``M`` pastes the recomputed units into ``M``'s cached unoccluded output, and the
rest of the network runs on that full map. The crop's grid must line up with ``M``'s
grid, so crops start at multiples of ``M``'s stride (or at the image edge, where the
network's own padding then matches); units whose receptive field reaches the crop's other
edges are not used.

``M`` is chosen by a cost model: convolution multiply-adds before ``M`` shrink by the crop's
share of the image, those after it are paid in full. :func:`fastest` checks every plan
against the plain forward pass on three positions of each crop shape before use, so a
model whose forward is not a local, translation-equivariant chain up to ``M`` falls back
to the plain path; :func:`batches` then feeds the positions one crop shape at a time.

When only one unit of the spliced layer is wanted (the faithfulness card perturbs pixels
inside one unit's receptive field and reads that unit alone), the crop needs to hold just
that unit's receptive field and nothing is pasted back: :func:`unit_crop` gives the
aligned crop and the unit's place in the crop's map, :func:`matches` the same check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.engine.capture import forward_until
from deconvnet.engine.hooks import HandleList
from deconvnet.engine.receptive import ReceptiveField, receptive_fields
from deconvnet.errors import InputError

MIN_SAVING = 0.8
"""Splice only when the estimated cost is below this share of a plain forward pass."""
MAX_TRIED = 3
"""Splice layers verified, cheapest first, before giving up and running plainly."""
CHECK_RTOL = 1e-5
"""Spliced results must match the plain forward within this share of the largest value
(float32 sums in another order differ by about 1e-7 of it)."""

Measure = Callable[[Tensor], tuple[Tensor, Tensor]]
"""A batch of (occluded) inputs -> (the chosen map's sums, the model's outputs)."""
Evaluator = Callable[[list[tuple[int, int]]], tuple[Tensor, Tensor]]
"""Occluder positions (top, left) -> what :data:`Measure` gives for them."""


@dataclass(frozen=True)
class AxisCrop:
    """For one axis and one occluder position: input crop ``[start, stop)`` and the
    ``M`` units ``[first, last]`` it recomputes (empty when ``first > last``)."""

    start: int
    stop: int
    first: int
    last: int
    unit_offset: int  # crop unit k is full unit k + unit_offset


@dataclass(frozen=True)
class UnitCrop:
    """The input crop ``box`` ``(top, left, bottom, right)`` that holds the receptive field
    of one unit, aligned to its layer's grid, and that unit's position in the crop's map."""

    box: tuple[int, int, int, int]
    unit: tuple[int, int]

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def unit_crop(field: ReceptiveField, y: int, x: int, image_hw: tuple[int, int]) -> UnitCrop:
    """The smallest crop, on the grid of ``field``'s layer, that holds unit ``(y, x)``'s
    receptive field: it starts at a multiple of the layer's stride (so the crop's units are
    the image's units, shifted) or at the image's edge (where the network's own padding then
    matches), and ends at the field's end or the image's. The unit reads only pixels inside
    it, so running the layers up to the unit on the crop gives its value; :func:`matches`
    checks that against the whole image before use."""
    top, left, bottom, right = field.box(y, x)
    starts, stops, units = [], [], []
    for axis, (begin, end, index) in enumerate(((top, bottom, y), (left, right, x))):
        stride = field.stride[axis]
        start = 0 if begin <= 0 else stride * (begin // stride)
        starts.append(start)
        stops.append(min(image_hw[axis], end))
        units.append(index - start // stride)
    return UnitCrop((starts[0], starts[1], stops[0], stops[1]), (units[0], units[1]))


def matches(got: Tensor, want: Tensor, scale: float | None = None) -> bool:
    """``got`` equals ``want`` within :data:`CHECK_RTOL` of ``scale`` (default: the largest
    magnitude in ``want``), the check every spliced or cropped run passes before use."""
    if got.shape != want.shape:
        return False
    if want.numel() == 0:
        return True
    reference = float(want.abs().max()) if scale is None else scale
    return float((got - want).abs().max()) <= CHECK_RTOL * (reference or 1.0)


@dataclass(frozen=True)
class SplicePlan:
    """Where to splice (``layer``) and each position's crop along rows and columns."""

    layer: str
    module: nn.Module
    base: Tensor  # (1, C, h, w) unoccluded output of the layer
    rows: dict[int, AxisCrop]
    cols: dict[int, AxisCrop]
    estimated_cost: float  # share of a plain forward pass


def _axis_crops(
    positions: list[int],
    size: int,
    length: int,
    units: int,
    field_top: int,
    stride: int,
    field: int,
) -> dict[int, AxisCrop]:
    """Aligned crops along one axis, made to share as few lengths as possible."""
    raw: dict[int, list[int]] = {}
    for pos in positions:
        first = max(0, (pos - field - field_top) // stride + 1)
        last = min(units - 1, (pos + size - 1 - field_top) // stride)
        if first > last:
            raw[pos] = [0, min(length, field), first, last]
            continue
        begin = field_top + first * stride
        start = 0 if begin <= 0 else stride * (begin // stride)
        stop = min(length, field_top + last * stride + field)
        raw[pos] = [start, stop, first, last]
    inner = [stop - start for start, stop, *_ in raw.values() if start > 0 and stop < length]
    common = max(inner) if inner else max(stop - start for start, stop, *_ in raw.values())
    for entry in raw.values():  # one length for every crop that does not reach the end
        if entry[1] < length:
            entry[1] = min(length, max(entry[1], entry[0] + common))
    bottom_starts = [start for start, stop, *_ in raw.values() if stop == length and start > 0]
    bottom = min(bottom_starts) if bottom_starts else 0
    crops = {}
    for pos, (start, stop, first, last) in raw.items():
        if stop == length and start > 0:  # one start for every crop that reaches the end
            start = bottom
        crops[pos] = AxisCrop(start, stop, first, last, start // stride)
    return crops


def plan(
    model: nn.Module,
    x: Tensor,
    layer_name: str,
    size: int,
    rows: list[int],
    cols: list[int],
) -> list[SplicePlan]:
    """Splice plans worth trying for this occluder, cheapest first (empty: run plainly).

    Only layers that cut the network are candidates: nothing after them reads a tensor
    made before them (no skip connection or concatenation reaches around them), and every
    layer up to them reads only the input or other modules' outputs (no functional slicing
    or padding in between, which would not map crops to the same pixels).
    """
    trace = _trace(model, x)
    if layer_name not in trace.order:
        return []
    total = sum(trace.macs.values())
    if total <= 0:
        return []
    try:
        fields = receptive_fields(model, tuple(x.shape), device=x.device)
    except InputError:
        return []
    height, width = x.shape[-2:]
    options = []
    done = 0.0
    for name in trace.order[: trace.order.index(layer_name) + 1]:
        done += trace.macs.get(name, 0.0)
        field = fields.get(name)
        shape = trace.shapes.get(name, ())
        if field is None or field.is_global or trace.calls[name] != 1 or len(shape) != 4:
            continue
        if not trace.cuts(name):
            continue
        row_crops = _crops_for(field, 0, rows, size, height, shape[2])
        col_crops = _crops_for(field, 1, cols, size, width, shape[3])
        share = _largest(row_crops) * _largest(col_crops) / (height * width)
        cost = (done * min(share, 1.0) + total - done) / total
        if cost <= MIN_SAVING:
            options.append((cost, name, row_crops, col_crops))
    options.sort(key=lambda option: option[0])
    plans = []
    for cost, name, row_crops, col_crops in options[:MAX_TRIED]:
        module = model.get_submodule(name)
        base = _capture(model, x, name, module)
        plans.append(SplicePlan(name, module, base, row_crops, col_crops, cost))
    return plans


def _crops_for(
    field: ReceptiveField, axis: int, positions: list[int], size: int, length: int, units: int
) -> dict[int, AxisCrop]:
    top = field.box(0, 0)[axis]
    return _axis_crops(positions, size, length, units, top, field.stride[axis], field.size[axis])


def _largest(crops: dict[int, AxisCrop]) -> int:
    return max(c.stop - c.start for c in crops.values())


@dataclass
class _Trace:
    """One forward pass, seen through module hooks (tensors kept alive so ids stay unique)."""

    order: list[str] = field(default_factory=list)  # by completion
    macs: dict[str, float] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    finished: dict[str, tuple[int, int]] = field(default_factory=dict)  # (event, output id)
    made: list[tuple[int, int]] = field(default_factory=list)  # (event, tensor id)
    read: list[tuple[int, int]] = field(default_factory=list)  # (event, tensor id), leaves
    foreign: list[int] = field(default_factory=list)  # events where a leaf read an untracked tensor
    keep: list[Any] = field(default_factory=list)
    event: int = 0

    def cuts(self, name: str) -> bool:
        """Nothing that starts after ``name`` finishes reads a tensor made before it."""
        when, own = self.finished[name]
        if any(event <= when for event in self.foreign):
            return False  # a functional op (slicing, padding...) before it: crops may not map
        before = {tid for event, tid in self.made if event <= when and tid != own}
        return not any(event > when and tid in before for event, tid in self.read)


def _trace(model: nn.Module, x: Tensor) -> _Trace:
    """Completion order, conv/linear multiply-adds, output shapes and data flow of modules."""
    trace = _Trace()
    trace.made.append((0, id(x)))

    def before(name: str, leaf: bool) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            trace.event += 1
            if leaf:
                known = {tid for _, tid in trace.made}
                for item in inputs:
                    if isinstance(item, Tensor):
                        trace.read.append((trace.event, id(item)))
                        if id(item) not in known:
                            trace.foreign.append(trace.event)

        return hook

    def after(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            trace.event += 1
            trace.calls[name] = trace.calls.get(name, 0) + 1
            if name not in trace.order:
                trace.order.append(name)
            if isinstance(output, Tensor):
                trace.keep.append(output)
                trace.made.append((trace.event, id(output)))
                trace.finished[name] = (trace.event, id(output))
                trace.shapes[name] = tuple(output.shape)
                trace.macs[name] = trace.macs.get(name, 0.0) + _module_macs(module, output)

        return hook

    with HandleList() as handles, torch.no_grad():
        for name, module in model.named_modules():
            if name:
                leaf = not any(True for _ in module.children())
                handles.append(module.register_forward_pre_hook(before(name, leaf)))
                handles.append(module.register_forward_hook(after(name)))
        model(x)
    return trace


def _module_macs(module: nn.Module, output: Tensor) -> float:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        return 0.0
    per_output = weight[0].numel()
    return float(output.numel() * per_output)


def _capture(model: nn.Module, x: Tensor, name: str, module: nn.Module) -> Tensor:
    with torch.no_grad():
        return forward_until(model, x, {name: module})[name]


def _crop_batch(
    x: Tensor, spots: list[tuple[int, int]], size: int, fill: Tensor, splice: SplicePlan
) -> Tensor:
    """The occluded crops for ``spots`` (all of one crop shape), as one batch."""
    parts = []
    for top, left in spots:
        row, col = splice.rows[top], splice.cols[left]
        crop = x[0, :, row.start : row.stop, col.start : col.stop].clone()
        y, x0 = top - row.start, left - col.start
        crop[:, y : y + size, x0 : x0 + size] = fill
        parts.append(crop)
    return torch.stack(parts)


def _crop_shape(splice: SplicePlan, top: int, left: int) -> tuple[int, int]:
    row, col = splice.rows[top], splice.cols[left]
    return row.stop - row.start, col.stop - col.start


@contextmanager
def _spliced(splice: SplicePlan, spots: list[tuple[int, int]]) -> Iterator[None]:
    """While active, ``splice.module`` outputs the cached map with the crops' units pasted."""

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        full = splice.base.expand(len(spots), *splice.base.shape[1:]).clone()
        for index, (top, left) in enumerate(spots):
            row, col = splice.rows[top], splice.cols[left]
            if row.first > row.last or col.first > col.last:
                continue
            r0, r1 = row.first - row.unit_offset, row.last - row.unit_offset + 1
            c0, c1 = col.first - col.unit_offset, col.last - col.unit_offset + 1
            if r0 < 0 or c0 < 0 or r1 > output.shape[2] or c1 > output.shape[3]:
                raise InputError("crop too small for the spliced layer")
            full[index, :, row.first : row.last + 1, col.first : col.last + 1] = output[
                index, :, r0:r1, c0:c1
            ]
        return full

    with HandleList() as handles:
        handles.append(splice.module.register_forward_hook(hook))
        yield


def fastest(
    plans: list[SplicePlan],
    x: Tensor,
    spots: list[tuple[int, int]],
    size: int,
    fill: Tensor,
    measure: Measure,
    plain: Evaluator,
) -> tuple[SplicePlan | None, Evaluator]:
    """The first of ``plans`` (cheapest first, see :func:`plan`) whose spliced run gives
    ``plain``'s numbers, with that run; ``(None, plain)`` when none agrees."""
    for candidate in plans:
        spliced_run = _evaluator(candidate, x, size, fill, measure)
        if _agrees(candidate, spots, plain, spliced_run):
            return candidate, spliced_run
    return None, plain


def batches(
    splice: SplicePlan | None, spots: list[tuple[int, int]], size: int
) -> Iterator[list[tuple[int, int]]]:
    """``spots`` in batches of at most ``size``, each of one crop shape when spliced."""
    for group in _groups(splice, spots) if splice is not None else [spots]:
        for start in range(0, len(group), size):
            yield group[start : start + size]


def _evaluator(
    splice: SplicePlan, x: Tensor, size: int, fill: Tensor, measure: Measure
) -> Evaluator:
    """Evaluate positions (all of one crop shape) on crops, spliced into the cached map."""

    def evaluate(spots: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        crops = _crop_batch(x, spots, size, fill, splice)
        with _spliced(splice, spots):
            return measure(crops)

    return evaluate


def _agrees(
    splice: SplicePlan,
    spots: list[tuple[int, int]],
    plain: Evaluator,
    spliced_run: Evaluator,
) -> bool:
    """Three positions of each crop shape give the plain forward's numbers."""
    for group in _groups(splice, spots):
        probe = [group[0], group[len(group) // 2], group[-1]]
        try:
            got = spliced_run(probe)
        except (InputError, RuntimeError):
            return False
        want = plain(probe)
        if not all(matches(a, b) for a, b in zip(got, want, strict=True)):
            return False
    return True


def _groups(splice: SplicePlan, spots: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``spots`` grouped by crop shape, in first-seen order."""
    grouped: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for top, left in spots:
        grouped.setdefault(_crop_shape(splice, top, left), []).append((top, left))
    return list(grouped.values())
