"""The forward pass recorded as a graph of typed nodes, for the windowed reverse pass.

A :class:`Recorder` (a ``TorchFunctionMode``) runs inside the engine's own forward pass, so
recording costs no extra forward. It sees every torch call on a tensor derived from the
input — module, functional, method or in-place — and asks the op table
(:mod:`deconvnet.engine.ops`) for the call's node: what the windowed reverse of that op
needs (kernel and stride, the ReLU mask, the max-pool switches, the BatchNorm scale).
Tensors are told apart by identity *and* version, so in-place ops (``relu_``,
``out += identity``) are nodes like any other.

Any op without a windowed rule on a derived tensor becomes an *opaque* node;
:meth:`Recorder.graph` returns None (and the engine uses the general autograd path) only
when the layer depends on one. One forward pass can serve several layers: each layer's
graph is the part recorded before it was reached (:meth:`Recorder.mark`), exactly what a
forward pass that stopped there would have recorded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.engine.ops import OPS
from deconvnet.engine.ops.arguments import tensors as tensors_of
from deconvnet.engine.ops.convolution import ConvNode
from deconvnet.engine.ops.normalisation import ScaleNode
from deconvnet.engine.ops.op import (
    IMAGE_RANK,
    CallMode,
    IdentityNode,
    Node,
    Opaque,
    OpaqueNode,
    Recording,
    TorchCall,
)
from deconvnet.engine.ops.rectifiers import RectifyNode
from deconvnet.engine.rules import ReversePolicy

log = logging.getLogger(__name__)


@dataclass
class Graph:
    """The recorded forward pass up to the layer: value 0 is the input image."""

    nodes: list[Node]
    shapes: list[tuple[int, ...]]
    layer: int

    def cast(self, dtype: torch.dtype) -> Graph:
        """The same graph with every node's constants in ``dtype`` (see :meth:`Node.cast`)."""
        return Graph([node.cast(dtype) for node in self.nodes], self.shapes, self.layer)


@dataclass(frozen=True)
class Mark:
    """Where a layer's output is in a recording: its value id (None: not derived from the
    input; -1: derived in a way the recorder did not see) and how many nodes came before."""

    value: int | None
    nodes: int


class Recorder(CallMode):
    """Record the ops on tensors derived from the input (enter it inside the
    :class:`~deconvnet.engine.policies.RuleMode`, so that it sees each call as the model
    wrote it, before the rules rewire it)."""

    def __init__(self, model: nn.Module, policy: ReversePolicy) -> None:
        super().__init__()
        self.policy = policy
        self._parameters = {id(p) for p in model.parameters()}
        # id -> (tensor, version, value id); the strong reference keeps ids unique
        self._values: dict[int, tuple[Tensor, int, int]] = {}
        self._shapes: list[tuple[int, ...]] = []
        self._nodes: list[Node] = []
        self._layer: Mark | None = None
        self._paused = False
        self._recall: Callable[[Any], Any] = _nothing
        # tensors computed from parameters and constants alone (a standardised weight)
        self._constants: dict[int, Tensor] = {}

    def start(self, x: Tensor, recall: Callable[[Any], Any] | None = None) -> None:
        """Track the input image as value 0; ``recall`` reads what the rule mode noted of
        a tensor (a gate)."""
        self._track(x)
        if recall is not None:
            self._recall = recall

    def mark(self, output: Tensor) -> tuple[Mark, Tensor]:
        """A layer's output, marked when the forward pass reaches the layer: its value and
        the nodes recorded so far (those its graph may use), and a copy of it that no later
        in-place op changes (made unrecorded: the copy is not an op of the model)."""
        mark = Mark(self._lookup(output), len(self._nodes))
        self._paused = True
        try:
            return mark, output.detach().clone()
        finally:
            self._paused = False

    def finish(self, output: Tensor) -> None:
        """Mark the one layer's output that :meth:`graph` is for."""
        self._layer = Mark(self._lookup(output), len(self._nodes))

    def value_of(self, tensor: Tensor) -> int | None:
        """The value id of ``tensor`` now (call it where the tensor is made, before a later
        in-place op gives the same object a new id); None or -1 as :meth:`_lookup`."""
        return self._lookup(tensor)

    def graph(self, at: Mark | None = None) -> Graph | None:
        """The graph of the layer marked ``at`` (default: the one :meth:`finish` marked), or
        None when the layer is not reached only through windowed rules."""
        at = at or self._layer
        if at is None:
            return None
        layer, nodes = at.value, self._nodes[: at.nodes]
        if layer is None or layer < 0 or len(self._shapes[layer]) != IMAGE_RANK:
            return None
        needed = {layer}
        for node in reversed(nodes):
            if needed.isdisjoint(node.outputs):
                continue
            if not node.windowed or any(value is not None and value < 0 for value in node.inputs):
                log.debug("the layer depends on %s: no windowed rule", _label(node))
                return None
            needed.update(value for value in node.inputs if value is not None)
        return Graph(_fold_scales(nodes), self._shapes, layer)

    def release(self) -> None:
        """Drop the references to the forward's tensors (the graphs keep what they need)."""
        self._values.clear()
        self._constants.clear()

    # -- bookkeeping ----------------------------------------------------------------------

    def _track(self, tensor: Tensor) -> int:
        value = len(self._shapes)
        self._shapes.append(tuple(tensor.shape))
        self._values[id(tensor)] = (tensor, tensor._version, value)
        return value

    def _lookup(self, tensor: Tensor) -> int | None:
        """The value id of ``tensor``; None for a constant or parameter; -1 for a tensor
        derived from the input in a way this recorder did not see (a changed version, or
        an op invisible to torch functions such as a custom autograd Function)."""
        entry = self._values.get(id(tensor))
        if entry is not None and entry[0] is tensor:
            return entry[2] if entry[1] == tensor._version else -1
        if (
            tensor.requires_grad
            and id(tensor) not in self._parameters
            and self._constants.get(id(tensor)) is not tensor
        ):
            return -1
        return None

    def handle(self, raw: TorchCall) -> Any:
        if self._paused:
            return raw.run()
        tensors = list(tensors_of((raw.args, raw.kwargs)))
        ids = [self._lookup(t) for t in tensors]
        if all(value is None for value in ids):
            result = raw.run()
            for tensor in tensors_of(result):
                if tensor.requires_grad:  # from parameters alone: a constant to the input
                    self._constants[id(tensor)] = tensor
            return result
        known = {(id(t), t._version) for t in tensors}
        op = OPS.get(raw.func)
        call, before = None, None
        if op is not None:
            call = op.parse(raw)
            try:
                before = op.before(call, self.policy)
            except Opaque:
                op = None  # recorded as opaque
        result = raw.run() if op is None else op.run(call, raw, before)
        outputs = list(tensors_of(result))
        if not outputs:
            return result  # sizes, shapes, comparisons to Python values
        fresh = [t for t in outputs if (id(t), t._version) not in known]
        if not fresh:
            return result  # an alias of an input (eval-mode dropout, contiguous)
        node: Node = OpaqueNode(tuple(v for v in ids if v is not None), op=_name(raw.func))
        if op is not None and all(value is None or value >= 0 for value in ids):
            # the ids from before the call: an in-place op has changed the versions since
            ids_before = {id(t): value for t, value in zip(tensors, ids, strict=True)}
            recording = Recording(lambda t: ids_before.get(id(t)), fresh, self.policy, self._recall)
            with contextlib.suppress(Opaque):
                node = op.node(call, recording, before)
        node.outputs = tuple(self._track(t) for t in fresh)
        self._nodes.append(node)
        return result


def _nothing(tensor: Any) -> Any:
    return None


def _name(func: Any) -> str:
    return str(getattr(func, "__name__", func))


def _label(node: Node) -> str:
    return f"{node.kind} {node.op}" if isinstance(node, OpaqueNode) else node.kind


def _fold_scales(nodes: list[Node]) -> list[Node]:
    """BatchNorm whose per-channel scale can go into a convolution's transposed filters,
    one pass over the signal less: right after a convolution that feeds nothing else, or
    (pre-activation, DenseNet's BN → ReLU → conv) right before a ReLU that feeds only one
    ungrouped convolution, when every scale is positive (``relu(s·z) = s·relu(z)``, and
    the masks of the other rules are the forward's, unchanged). The recorded nodes are left
    as they are (the graphs of several layers share them): folded ones are copies."""
    producers = {value: node for node in nodes for value in node.outputs}
    consumers: dict[int, list[Node]] = {}
    for node in nodes:
        for value in node.inputs:
            if value is not None:
                consumers.setdefault(value, []).append(node)
    weights: dict[int, Tensor] = {}  # id(convolution) -> its folded filters
    folded: list[Node] = []
    for node in nodes:
        if isinstance(node, ScaleNode):
            scale = node.scale.view(-1)
            conv = producers.get(node.inputs[0]) if node.inputs[0] is not None else None
            target, axis = None, 0  # the convolution, and its filters' axis to scale
            if isinstance(conv, ConvNode) and _only_use(consumers, conv, node):
                target = conv
            elif bool((scale > 0).all()):
                target, axis = _rectified_conv(consumers, node), 1
            if target is not None:
                shape = [1, 1, 1, 1]
                shape[axis] = -1
                weights[id(target)] = weights.get(id(target), target.weight) * scale.view(shape)
                node = IdentityNode(node.inputs, outputs=node.outputs)
        folded.append(node)
    return [_with_filters(node, weights.get(id(node))) for node in folded]


def _with_filters(node: Node, weight: Tensor | None) -> Node:
    """A copy of a convolution's node with folded filters (any other node as it is)."""
    if isinstance(node, ConvNode) and weight is not None:
        return replace(node, weight=weight)
    return node


def _only_use(consumers: dict[int, list[Node]], producer: Node, consumer: Node) -> bool:
    """``consumer`` is the one op reading ``producer``'s single output."""
    return len(producer.outputs) == 1 and consumers.get(producer.outputs[0], []) == [consumer]


def _rectified_conv(consumers: dict[int, list[Node]], scale: Node) -> ConvNode | None:
    """The ungrouped convolution after ``scale`` → ReLU/ReLU6, each the only reader."""
    readers = consumers.get(scale.outputs[0], []) if len(scale.outputs) == 1 else []
    if len(readers) != 1 or not isinstance(readers[0], RectifyNode):
        return None
    rectify = readers[0]
    after = consumers.get(rectify.outputs[0], []) if len(rectify.outputs) == 1 else []
    if len(after) != 1 or not isinstance(after[0], ConvNode) or after[0].groups != 1:
        return None
    return after[0] if _only_use(consumers, rectify, after[0]) else None
