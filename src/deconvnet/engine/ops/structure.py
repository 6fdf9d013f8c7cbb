"""Ops that move, join or split the signal without weights: addition, concatenation and
splitting on channels, reshapes of the channel axes, padding and slicing of H and W.

Their reverses are their transposes: an addition sends its window down both inputs, a
concatenation splits it on channels, a split sums its parts back (channel shuffles are
reshapes and transposes that leave batch and H×W alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.engine.ops import op
from deconvnet.engine.ops.arguments import ATEN, spellings
from deconvnet.engine.window import Window, inside, sum_windows

_PAD_ARGS = ("input", "pad", "mode", "value")
_CONSTANT_PAD_ARGS = ("input", "pad", "value")
_GETITEM_ARGS = ("input", "index")
_PAD_SIDES = (2, 4)
"""``F.pad`` lengths that pad W, or W and H."""


# -- addition and concatenation ----------------------------------------------------------------


class Add(op.Op[op.TorchCall]):
    """``a + b`` in every spelling (``torch.add``, ``+``, ``+=``, ``add_``)."""

    functions = frozenset(
        {torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__}
    )

    def parse(self, raw: op.TorchCall) -> op.TorchCall:
        return raw

    def node(self, call: op.TorchCall, recording: op.Recording, before: Any) -> op.Node:
        args, kwargs = call.args, call.kwargs
        if kwargs.get("alpha", 1) != 1 or len(args) > 2:
            raise op.Opaque
        out = recording.outputs[0]
        sources = []
        for operand in [*args[:2], *(kwargs[k] for k in ("other",) if k in kwargs)]:
            value = recording.lookup(operand) if isinstance(operand, Tensor) else None
            if value is not None and tuple(operand.shape) != tuple(out.shape):
                raise op.Opaque  # broadcasting a recorded tensor
            sources.append(value)
        return AddNode(tuple(sources))


@dataclass(eq=False)
class AddNode(op.Node):
    """The signal goes down every operand unchanged."""

    kind: ClassVar[str] = "add"

    def step_back(self, arriving: op.Arrivals, step: op.ReverseStep) -> op.Departures:
        signal = arriving[0]
        return [(source, signal) for source in self.inputs]


class Cat(op.Op[tuple[Any, int]]):
    """``torch.cat`` (``concat``, ``concatenate``) of maps on channels."""

    functions = frozenset({torch.cat, torch.concat, torch.concatenate})

    def parse(self, raw: op.TorchCall) -> tuple[Any, int]:
        return raw.argument(0, "tensors"), raw.argument(1, "dim", 0)

    def node(self, call: tuple[Any, int], recording: op.Recording, before: Any) -> op.Node:
        parts, dim = call
        out = recording.outputs[0]
        if (
            out.dim() != op.IMAGE_RANK
            or not isinstance(parts, list | tuple)
            or dim % out.dim() != 1
        ):
            raise op.Opaque
        sources = tuple(recording.lookup(part) for part in parts)
        return CatNode(sources, widths=[int(part.shape[1]) for part in parts])


@dataclass(eq=False)
class CatNode(op.Node):
    """Each input gets its channels of the signal."""

    kind: ClassVar[str] = "cat"

    widths: list[int]

    def step_back(self, arriving: op.Arrivals, step: op.ReverseStep) -> op.Departures:
        signal = arriving[0]
        assert signal is not None  # one output: it has a signal, or the node was skipped
        parts: op.Departures = []
        start = 0
        for source, width in zip(self.inputs, self.widths, strict=True):
            parts.append((source, signal.with_data(signal.data[:, start : start + width])))
            start += width
        return parts


class Split(op.Op[tuple[Any, int]]):
    """``chunk`` and ``split`` of maps on channels."""

    functions = frozenset({Tensor.chunk, torch.chunk, Tensor.split, torch.split})

    def parse(self, raw: op.TorchCall) -> tuple[Any, int]:
        return raw.input, raw.argument(2, "dim", 0)

    def node(self, call: tuple[Any, int], recording: op.Recording, before: Any) -> op.Node:
        x, dim = call
        source = recording.source(x)
        outputs = recording.outputs
        widths = [int(t.shape[1]) for t in outputs]
        if int(dim) % max(x.dim(), 1) != 1 or x.dim() != op.IMAGE_RANK or sum(widths) != x.shape[1]:
            raise op.Opaque
        if any(t.shape[0] != x.shape[0] or t.shape[2:] != x.shape[2:] for t in outputs):
            raise op.Opaque
        return SplitNode((source,), widths=widths, channels=int(x.shape[1]))


@dataclass(eq=False)
class SplitNode(op.Node):
    """The input of a channel split: each part's window at its channels, summed."""

    kind: ClassVar[str] = "split"

    widths: list[int]
    channels: int

    def step_back(self, arriving: op.Arrivals, step: op.ReverseStep) -> op.Departures:
        total: Window | None = None
        start = 0
        for window, width in zip(arriving, self.widths, strict=True):
            if window is not None:
                padded = F.pad(window.data, (0, 0, 0, 0, start, self.channels - start - width))
                total = sum_windows(total, window.with_data(padded))
            start += width
        assert total is not None  # some output has a signal, or the node was skipped
        return [(self.inputs[0], total)]


# -- reshapes of the channel axes --------------------------------------------------------------


_TRANSPOSE: frozenset[op.TorchFunction] = frozenset({Tensor.transpose, torch.transpose})
_PERMUTE: frozenset[op.TorchFunction] = frozenset({Tensor.permute, torch.permute})
_RESHAPE: frozenset[op.TorchFunction] = frozenset(
    {Tensor.view, Tensor.reshape, torch.reshape, Tensor.contiguous, Tensor.flatten}
)
_COPY: frozenset[op.TorchFunction] = frozenset({torch.flatten, Tensor.clone, torch.clone})


class Reshape(op.Op[op.TorchCall]):
    """Reshapes, copies, transposes and permutations: windowed when they move only the
    channel axes (the batch first, H and W last, on both sides), as a channel shuffle does."""

    functions = _RESHAPE | _COPY | _TRANSPOSE | _PERMUTE

    def parse(self, raw: op.TorchCall) -> op.TorchCall:
        return raw

    def node(self, call: op.TorchCall, recording: op.Recording, before: Any) -> op.Node:
        x, out = call.input, recording.outputs[0]
        source = recording.source(x)
        if (
            not isinstance(x, Tensor)
            or x.dim() < 3
            or out.dim() < 3
            or out.dtype != x.dtype
            or x.shape[0] != out.shape[0]
            or x.shape[-2:] != out.shape[-2:]
        ):
            raise op.Opaque
        inverse = None
        if call.func in _TRANSPOSE | _PERMUTE:
            order = _order(call, x.dim())
            if order[0] != 0 or order[-2:] != [x.dim() - 2, x.dim() - 1]:
                raise op.Opaque
            inverse = [order.index(axis) for axis in range(x.dim())]
        return ReshapeNode((source,), shape=tuple(x.shape[1:-2]), inverse=inverse)


def _order(call: op.TorchCall, rank: int) -> list[int]:
    """The axis order a transpose or permutation makes."""
    args, kwargs = call.args, call.kwargs
    if call.func in _TRANSPOSE:
        first, second = (int(call.argument(i, n)) % rank for i, n in ((1, "dim0"), (2, "dim1")))
        order = list(range(rank))
        order[first], order[second] = order[second], order[first]
        return order
    dims = args[1:] if len(args) > 2 or not isinstance(args[1], list | tuple) else args[1]
    return [int(d) % rank for d in kwargs.get("dims", dims)]


@dataclass(eq=False)
class ReshapeNode(op.Node):
    """The input's channel axes ``shape`` (after undoing a permutation's ``inverse``)."""

    kind: ClassVar[str] = "reshape"

    shape: tuple[int, ...]
    inverse: list[int] | None

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        data = signal.data
        if self.inverse is not None:
            data = data.permute(self.inverse)
        return signal.with_data(data.reshape(data.shape[0], *self.shape, *data.shape[-2:]))


# -- padding and slicing H and W ---------------------------------------------------------------


class Pad(op.Op[dict[str, Any]]):
    """``F.pad`` (``nn.ZeroPad2d``, ``nn.ConstantPad2d`` …): the field moves by the padding.
    In constant mode the signal's window moves back by it on the way down, and what lies in
    the padding (no input pixel) is dropped; a negative amount crops, alike."""

    functions = spellings("pad") | {ATEN.pad.default}

    def parse(self, raw: op.TorchCall) -> dict[str, Any]:
        return raw.bind(_PAD_ARGS)

    def geometry(self, call: dict[str, Any], x: Tensor, out: Tensor) -> op.Geometry | None:
        before = _padded_before(call)
        return op.GLOBAL if before is None else op.Shifted(before=before)

    def node(self, call: dict[str, Any], recording: op.Recording, before: Any) -> op.Node:
        source = recording.source(call.get("input"))
        shift = _padded_before(call)
        if shift is None or call.get("mode", "constant") != "constant":
            raise op.Opaque  # reflection and replication copy pixels
        return PadNode((source,), before=shift)


class ConstantPad(Pad):
    """``aten.constant_pad_nd``, constant padding in a core-ATen ``.pt2`` program."""

    functions = frozenset({ATEN.constant_pad_nd.default})

    def parse(self, raw: op.TorchCall) -> dict[str, Any]:
        return {**raw.bind(_CONSTANT_PAD_ARGS), "mode": "constant"}


def _padded_before(call: dict[str, Any]) -> op.Pair | None:
    """Rows and columns added above and left of the map; None for padding of other axes."""
    pad = [int(v) for v in call["pad"]]
    if len(pad) not in _PAD_SIDES:
        return None
    return pad[2] if len(pad) == _PAD_SIDES[1] else 0, pad[0]


@dataclass(eq=False, kw_only=True)
class PadNode(op.Node):
    """Constant padding: the input is the output's window moved back by ``before``."""

    kind: ClassVar[str] = "pad"

    before: op.Pair

    def reverse(self, signal: Window, step: op.ReverseStep) -> Window:
        tops, lefts = signal.tops - self.before[0], signal.lefts - self.before[1]
        return Window(inside(signal.data, tops, lefts, step.hw(self.inputs[0])), tops, lefts)


class GetItem(op.Op[Any]):
    """``x[..., a:b:s, c:d:t]``: basic slicing of H and W shifts and strides the field."""

    functions = frozenset({Tensor.__getitem__})

    def parse(self, raw: op.TorchCall) -> Any:
        return raw.bind(_GETITEM_ARGS)["index"]

    def geometry(self, call: Any, x: Tensor, out: Tensor) -> op.Geometry | None:
        index = call if isinstance(call, tuple) else (call,)
        if any(item is Ellipsis for item in index):
            at = index.index(Ellipsis)
            fill = (slice(None),) * (x.dim() - (len(index) - 1))
            index = index[:at] + fill + index[at + 1 :]
        index = index + (slice(None),) * (x.dim() - len(index))
        if len(index) != x.dim() or not all(isinstance(item, slice) for item in index):
            return op.GLOBAL
        starts, steps = [], []
        for axis, item in enumerate(index[-2:]):
            start, _, step = item.indices(int(x.shape[-2 + axis]))
            starts.append(-start)
            steps.append(step)
        return op.Shifted(before=(starts[0], starts[1]), step=(steps[0], steps[1]))


FAMILIES: tuple[op.Op[Any], ...] = (
    Add(), Cat(), Split(), Reshape(), Pad(), ConstantPad(), GetItem()
)
