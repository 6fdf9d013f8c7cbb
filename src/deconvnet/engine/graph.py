"""The forward pass recorded as a graph of ops, for the windowed reverse pass.

A :class:`Recorder` (a ``TorchFunctionMode``) runs inside the engine's own forward pass, so
recording costs no extra forward. It sees every torch call on a tensor derived from the
input — module, functional, method or in-place — and keeps, per call, what the windowed
reverse of that op needs (kernel and stride, the ReLU mask, the max-pool switches, the
BatchNorm scale). Tensors are told apart by identity *and* version, so in-place ops
(``relu_``, ``out += identity``) are nodes like any other.

Ops with a windowed rule: convolution (grouped, depthwise, dilated), eval-mode BatchNorm,
ReLU/ReLU6 in every spelling, max/avg/adaptive pooling, addition, concatenation and
splitting on channels, reshapes and transposes that leave batch and H×W alone (channel
shuffle), eval-mode dropout, cross-channel LRN. Any other op on a derived tensor becomes
an *opaque* node; :meth:`Recorder.graph` returns None (and the engine uses the general
autograd path) only when the layer depends on one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from deconvnet.engine import layer_types as types
from deconvnet.engine.policies import LOW_PRECISION, ReversePolicy
from deconvnet.engine.rules import overwrite_keep

_IMAGE_RANK = 4
OPAQUE = "opaque"

_CONV = frozenset({torch.conv2d, F.conv2d})
_RELU6 = frozenset({F.relu6, F.hardtanh})
_MAX_POOL = frozenset(
    {
        F.max_pool2d,
        F.max_pool2d_with_indices,
        torch.max_pool2d,
        torch._C._nn.max_pool2d_with_indices,
    }
)
_MAX_POOL_INDICES = frozenset({F.max_pool2d_with_indices, torch._C._nn.max_pool2d_with_indices})
_RETURN_INDICES_POSITION = 6  # F.max_pool2d(input, kernel, stride, padding, dilation, ceil, ·)
_ADAPTIVE_MAX = frozenset({F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices})
_AVG_POOL = frozenset({F.avg_pool2d})
_ADD = frozenset(
    {torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__}
)
_CAT = frozenset({torch.cat, torch.concat, torch.concatenate})
_RESHAPE = frozenset(
    {Tensor.view, Tensor.reshape, torch.reshape, Tensor.contiguous, Tensor.flatten, torch.flatten}
)
_TRANSPOSE = frozenset({Tensor.transpose, torch.transpose})
_PERMUTE = frozenset({Tensor.permute, torch.permute})
_SPLIT = frozenset({Tensor.chunk, torch.chunk, Tensor.split, torch.split})
_DROPOUT = frozenset({F.dropout, F.dropout2d})
_CLONE = frozenset({Tensor.clone, torch.clone})

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_MAX_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVG_POOL_ARGS = (
    "input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
    "divisor_override",
)  # fmt: skip
_LRN_ARGS = ("input", "size", "alpha", "beta", "k")


@dataclass
class Node:
    """One recorded op: ``kind`` names its windowed rule; ``inputs`` and ``outputs`` are
    value ids (None for an argument that does not depend on the input image)."""

    kind: str
    inputs: tuple[int | None, ...]
    outputs: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The recorded forward pass up to the layer: value 0 is the input image."""

    nodes: list[Node]
    shapes: list[tuple[int, ...]]
    layer: int


class _Opaque(Exception):  # control flow: the op has no windowed rule
    pass


class Recorder(TorchFunctionMode):
    """Record the ops on tensors derived from the input (enter it inside :class:`RuleMode`,
    so that it sees each call as the model wrote it, before the rules rewire it)."""

    def __init__(self, model: nn.Module, policy: ReversePolicy) -> None:
        super().__init__()
        self.policy = policy
        self._parameters = {id(p) for p in model.parameters()}
        # id -> (tensor, version, value id); the strong reference keeps ids unique
        self._values: dict[int, tuple[Tensor, int, int]] = {}
        self._shapes: list[tuple[int, ...]] = []
        self._nodes: list[Node] = []
        self._layer: int | None = None

    def start(self, x: Tensor) -> None:
        """Track the input image as value 0."""
        self._track(x)

    def finish(self, output: Tensor) -> None:
        """Mark the layer's output (called when the forward pass reaches the layer)."""
        self._layer = self._lookup(output)

    def graph(self) -> Graph | None:
        """The graph, or None when the layer is not reached only through windowed rules."""
        layer = self._layer
        self._values.clear()  # the forward's tensors are no longer needed
        if layer is None or layer < 0 or len(self._shapes[layer]) != _IMAGE_RANK:
            return None
        needed = {layer}
        for node in reversed(self._nodes):
            if needed.isdisjoint(node.outputs):
                continue
            if node.kind == OPAQUE or any(value is not None and value < 0 for value in node.inputs):
                return None
            needed.update(value for value in node.inputs if value is not None)
        return Graph(_fold_scales(self._nodes), self._shapes, layer)

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
        if tensor.requires_grad and id(tensor) not in self._parameters:
            return -1
        return None

    def __torch_function__(
        self,
        func: Any,
        types_: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        tensors = list(_tensors((args, kwargs)))
        ids = [self._lookup(t) for t in tensors]
        if all(value is None for value in ids):
            return func(*args, **kwargs)
        known = {(id(t), t._version) for t in tensors}
        try:
            before = _before(func, args, kwargs, self.policy)
        except _Opaque:
            before = None
        if (
            before is not None
            and func in _MAX_POOL
            and args
            and isinstance(args[0], Tensor)
            and _spatial(args[0])
        ):
            result = _max_pool_keeping_switches(func, args, kwargs, before)
        else:
            result = func(*args, **kwargs)
        outputs = list(_tensors(result))
        if not outputs:
            return result  # sizes, shapes, comparisons to Python values
        fresh = [t for t in outputs if (id(t), t._version) not in known]
        if not fresh:
            return result  # an alias of an input (eval-mode dropout, contiguous)
        node = None
        if before is not None and all(value is None or value >= 0 for value in ids):
            try:
                # the ids from before the call: an in-place op has changed the versions since
                ids_before = {id(t): value for t, value in zip(tensors, ids, strict=True)}
                node = _node(
                    func, args, kwargs, lambda t: ids_before.get(id(t)), fresh, before, self.policy
                )
            except _Opaque:
                node = None
        if node is None:
            node = Node(OPAQUE, tuple(v for v in ids if v is not None), ())
        node.outputs = tuple(self._track(t) for t in fresh)
        self._nodes.append(node)
        return result


def _fold_scales(nodes: list[Node]) -> list[Node]:
    """BatchNorm whose per-channel scale can go into a convolution's transposed filters,
    one pass over the signal less: right after a convolution that feeds nothing else, or
    (pre-activation, DenseNet's BN → ReLU → conv) right before a ReLU that feeds only one
    ungrouped convolution, when every scale is positive (``relu(s·z) = s·relu(z)``, and
    the masks of the other rules are the forward's, unchanged)."""
    producers = {value: node for node in nodes for value in node.outputs}
    consumers: dict[int, list[Node]] = {}
    for node in nodes:
        for value in node.inputs:
            if value is not None:
                consumers.setdefault(value, []).append(node)
    folded = []
    for node in nodes:
        if node.kind == "scale":
            scale = node.info["scale"].view(-1)
            conv = producers.get(node.inputs[0]) if node.inputs[0] is not None else None
            target, axis = None, 0  # the convolution, and its filters' axis to scale
            if conv is not None and conv.kind == "conv" and _only_use(consumers, conv, node):
                target = conv
            elif bool((scale > 0).all()):
                target, axis = _rectified_conv(consumers, node), 1
            if target is not None:
                shape = [1, 1, 1, 1]
                shape[axis] = -1
                target.info = {**target.info, "weight": target.info["weight"] * scale.view(shape)}
                node = Node("identity", node.inputs, node.outputs)
        folded.append(node)
    return folded


def _only_use(consumers: dict[int, list[Node]], producer: Node, consumer: Node) -> bool:
    """``consumer`` is the one op reading ``producer``'s single output."""
    return len(producer.outputs) == 1 and consumers.get(producer.outputs[0], []) == [consumer]


def _rectified_conv(consumers: dict[int, list[Node]], scale: Node) -> Node | None:
    """The ungrouped convolution after ``scale`` → ReLU/ReLU6, each the only reader."""
    readers = consumers.get(scale.outputs[0], []) if len(scale.outputs) == 1 else []
    if len(readers) != 1 or readers[0].kind not in ("relu", "relu6"):
        return None
    rectify = readers[0]
    after = consumers.get(rectify.outputs[0], []) if len(rectify.outputs) == 1 else []
    if len(after) != 1 or after[0].kind != "conv" or after[0].info["groups"] != 1:
        return None
    return after[0] if _only_use(consumers, rectify, after[0]) else None


# -- what each op keeps ----------------------------------------------------------------------


def _before(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], policy: ReversePolicy
) -> dict[str, Any]:
    """What the reverse needs from the op's input, taken before an in-place op changes it."""
    x = args[0] if args else None
    if not isinstance(x, Tensor):
        return {}
    if func in types.RELU or func in (F.threshold, torch.threshold):
        if func in (F.threshold, torch.threshold) and (
            _arg(args, kwargs, 1, "threshold"),
            _arg(args, kwargs, 2, "value"),
        ) != (0, 0):
            raise _Opaque
        return (
            {"mask": (x.detach() > 0).to(x.dtype)} if policy.rule in ("guided", "gradient") else {}
        )
    if func in _RELU6:
        if func is F.hardtanh and (
            _arg(args, kwargs, 1, "min_val", -1.0),
            _arg(args, kwargs, 2, "max_val", 1.0),
        ) != (0.0, 6.0):
            raise _Opaque
        if policy.rule not in ("guided", "gradient"):
            return {}
        inside = (x.detach() > 0) & (x.detach() < 6)
        return {"mask": inside.to(x.dtype)}
    if func is F.local_response_norm and policy.lrn == "gradient":
        bound = _bind(_LRN_ARGS, args, kwargs)
        return {
            "terms": lrn_terms(
                x.detach(),
                bound["size"],
                bound.get("alpha", 1e-4),
                bound.get("beta", 0.75),
                bound.get("k", 1.0),
            )
        }
    return {}


def _max_pool_keeping_switches(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], before: dict[str, Any]
) -> Any:
    """Run any spelling of 2-D max pooling as ``max_pool2d_with_indices`` and keep its
    indices and its parsed arguments in ``before``: the windowed reverse needs them, and
    computing them again would pool the map twice."""
    bound = _bind(_MAX_POOL_ARGS, args, kwargs)
    kernel = _pair(bound["kernel_size"])
    stride = _stride(bound.get("stride"), kernel)
    padding, dilation = _pair(bound.get("padding", 0)), _pair(bound.get("dilation", 1))
    pooled, switches = F.max_pool2d_with_indices(
        bound["input"], kernel, stride, padding, dilation, bool(bound.get("ceil_mode", False))
    )
    before.update(
        switches=switches, kernel=kernel, stride=stride, padding=padding, dilation=dilation
    )
    wants_indices = (
        func in _MAX_POOL_INDICES
        or kwargs.get("return_indices", False)
        or (len(args) > _RETURN_INDICES_POSITION and bool(args[_RETURN_INDICES_POSITION]))
    )
    return (pooled, switches) if wants_indices else pooled


def _node(
    func: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    lookup: Any,
    outputs: list[Tensor],
    before: dict[str, Any],
    policy: ReversePolicy,
) -> Node:
    """The node for a call whose tensor arguments are all recorded or constant."""
    x = args[0] if args else None
    out = outputs[0]
    if func in _CAT:
        return _cat_node(args, kwargs, lookup, out)
    if not isinstance(x, Tensor) or lookup(x) is None:
        if func in _ADD:
            return _add_node(args, kwargs, lookup, out)
        raise _Opaque
    source = lookup(x)
    if _spatial(x) and func in _CONV:
        return _conv_node(args, kwargs, lookup, source)
    if _spatial(x) and func is F.batch_norm:
        return _batch_norm_node(args, kwargs, lookup, source)
    if func in types.RELU or func in (F.threshold, torch.threshold):
        return Node("relu", (source,), (), before)
    if func in _RELU6:
        return Node("relu6", (source,), (), before)
    if _spatial(x) and func in _MAX_POOL | _ADAPTIVE_MAX:
        return _max_pool_node(func, x, out, source, policy, before)
    if _spatial(x) and func in _AVG_POOL | {F.adaptive_avg_pool2d}:
        return _avg_pool_node(func, args, kwargs, x, out, source)
    if func in _ADD:
        return _add_node(args, kwargs, lookup, out)
    if func in _RESHAPE | _CLONE | _TRANSPOSE | _PERMUTE:
        return _reshape_node(func, args, kwargs, x, out, source)
    if func in _SPLIT:
        return _split_node(args, kwargs, x, outputs, source)
    if func in _DROPOUT and not _arg(args, kwargs, 2, "training", True):
        return Node("identity", (source,), ())
    if _spatial(x) and func is F.local_response_norm:
        bound = _bind(_LRN_ARGS, args, kwargs)
        info: dict[str, Any] = {k: bound[k] for k in ("size", "alpha", "beta", "k") if k in bound}
        return Node("lrn", (source,), (), {**info, **before})
    raise _Opaque


def _spatial(x: Tensor) -> bool:
    return x.dim() == _IMAGE_RANK


def _constant(lookup: Any, *values: Any) -> None:
    """Weights and statistics must not depend on the input."""
    if any(isinstance(v, Tensor) and lookup(v) is not None for v in values):
        raise _Opaque


def _conv_node(args: tuple[Any, ...], kwargs: dict[str, Any], lookup: Any, source: int) -> Node:
    bound = _bind(_CONV_ARGS, args, kwargs)
    weight = bound["weight"]
    _constant(lookup, weight, bound.get("bias"))
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    dilation = _pair(bound.get("dilation", 1))
    padding_arg = bound.get("padding", 0)
    if padding_arg == "valid":
        padding = (0, 0)
    elif padding_arg == "same":
        padding = (dilation[0] * (kernel[0] - 1) // 2, dilation[1] * (kernel[1] - 1) // 2)
    else:
        padding = _pair(padding_arg)
    info = {
        "weight": weight.detach(),
        "stride": _pair(bound.get("stride", 1)),
        "padding": padding,
        "dilation": dilation,
        "groups": int(bound.get("groups", 1)),
    }
    return Node("conv", (source,), (), info)


def _batch_norm_node(
    args: tuple[Any, ...], kwargs: dict[str, Any], lookup: Any, source: int
) -> Node:
    bound = _bind(_BN_ARGS, args, kwargs)
    running_var, weight = bound.get("running_var"), bound.get("weight")
    _constant(lookup, bound.get("running_mean"), running_var, weight, bound.get("bias"))
    if bound.get("training", False) or running_var is None:
        raise _Opaque  # batch statistics mix the batch and the window
    scale = 1 / torch.sqrt(running_var.detach() + bound.get("eps", 1e-5))
    if weight is not None:
        scale = scale * weight.detach()
    return Node("scale", (source,), (), {"scale": scale.view(1, -1, 1, 1)})


def _max_pool_node(
    func: Any,
    x: Tensor,
    out: Tensor,
    source: int,
    policy: ReversePolicy,
    before: dict[str, Any],
) -> Node:
    if func in _ADAPTIVE_MAX:
        kernel = _divisible(x, out)
        switches = F.adaptive_max_pool2d(x.detach(), out.shape[2:], return_indices=True)[1]
        stride, padding, dilation = kernel, (0, 0), (1, 1)
    else:  # parsed and pooled once, by the forward itself (_max_pool_keeping_switches)
        kernel, stride, padding, dilation = (
            before[key] for key in ("kernel", "stride", "padding", "dilation")
        )
        switches = before["switches"].detach()
    info: dict[str, Any] = {
        "offsets": switch_offsets(switches, int(x.shape[-1]), stride, padding),
        "kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
    }  # fmt: skip
    if policy.collisions == "overwrite":
        info["keep"] = overwrite_keep(switches, x.shape).to(x.dtype)
    return Node("max_pool", (source,), (), info)


def _avg_pool_node(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor, out: Tensor, source: int
) -> Node:
    if func is F.adaptive_avg_pool2d:
        kernel = _divisible(x, out)
        scale = torch.full((1, 1, *out.shape[2:]), 1 / (kernel[0] * kernel[1]), dtype=x.dtype)
        info: dict[str, Any] = {"kernel": kernel, "stride": kernel, "padding": (0, 0)}
    else:
        bound = _bind(_AVG_POOL_ARGS, args, kwargs)
        kernel = _pair(bound["kernel_size"])
        stride = _stride(bound.get("stride"), kernel)
        padding = _pair(bound.get("padding", 0))
        ceil_mode = bool(bound.get("ceil_mode", False))
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            mean = F.avg_pool2d(
                ones, kernel, stride, padding, ceil_mode,
                bool(bound.get("count_include_pad", True)), bound.get("divisor_override"),
            )  # fmt: skip
            count = F.avg_pool2d(ones, kernel, stride, padding, ceil_mode, True, 1)
        # the op's own divisor at each output, whatever its padding and divisor options
        scale = torch.where(count > 0, mean / count.clamp(min=1e-30), torch.zeros_like(mean))
        info = {"kernel": kernel, "stride": stride, "padding": padding}
    info["scale"] = scale.to(x.device)
    return Node("avg_pool", (source,), (), info)


def _divisible(x: Tensor, out: Tensor) -> tuple[int, int]:
    """Adaptive pooling is an ordinary pool when the input is a multiple of the output."""
    (height, width), (out_h, out_w) = x.shape[2:], out.shape[2:]
    if height % out_h or width % out_w:
        raise _Opaque
    return height // out_h, width // out_w


def _add_node(args: tuple[Any, ...], kwargs: dict[str, Any], lookup: Any, out: Tensor) -> Node:
    if kwargs.get("alpha", 1) != 1 or len(args) > 2:
        raise _Opaque
    operands = [*args[:2], *(kwargs[k] for k in ("other",) if k in kwargs)]
    sources = []
    for operand in operands:
        value = lookup(operand) if isinstance(operand, Tensor) else None
        if value is not None and tuple(operand.shape) != tuple(out.shape):
            raise _Opaque  # broadcasting a recorded tensor
        sources.append(value)
    return Node("add", tuple(sources), ())


def _cat_node(args: tuple[Any, ...], kwargs: dict[str, Any], lookup: Any, out: Tensor) -> Node:
    tensors = args[0] if args else kwargs.get("tensors")
    dim = _arg(args, kwargs, 1, "dim", 0)
    if out.dim() != _IMAGE_RANK or not isinstance(tensors, (list, tuple)) or dim % out.dim() != 1:
        raise _Opaque
    sources, widths = [], []
    for tensor in tensors:
        sources.append(lookup(tensor))
        widths.append(int(tensor.shape[1]))
    return Node("cat", tuple(sources), (), {"widths": widths})


def _reshape_node(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor, out: Tensor, source: int
) -> Node:
    """Reshapes of the channel axes only (the batch first, H and W last, on both sides)."""
    if (
        x.dim() < 3
        or out.dim() < 3
        or out.dtype != x.dtype
        or x.shape[0] != out.shape[0]
        or x.shape[-2:] != out.shape[-2:]
    ):
        raise _Opaque
    info: dict[str, Any] = {"shape": tuple(x.shape[1:-2])}
    if func in _TRANSPOSE | _PERMUTE:
        rank = x.dim()
        if func in _TRANSPOSE:
            first, second = (
                int(_arg(args, kwargs, i, n)) % rank for i, n in ((1, "dim0"), (2, "dim1"))
            )
            order = list(range(rank))
            order[first], order[second] = order[second], order[first]
        else:
            dims = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
            order = [int(d) % rank for d in kwargs.get("dims", dims)]
        if order[0] != 0 or order[-2:] != [rank - 2, rank - 1]:
            raise _Opaque
        info["inverse"] = [order.index(axis) for axis in range(rank)]
    return Node("reshape", (source,), (), info)


def _split_node(
    args: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor, outputs: list[Tensor], source: int
) -> Node:
    dim = int(_arg(args, kwargs, 2, "dim", 0)) % max(x.dim(), 1)
    widths = [int(t.shape[1]) for t in outputs]
    if dim != 1 or x.dim() != _IMAGE_RANK or sum(widths) != x.shape[1]:
        raise _Opaque
    if any(t.shape[0] != x.shape[0] or t.shape[2:] != x.shape[2:] for t in outputs):
        raise _Opaque
    return Node("split", (source,), (), {"widths": widths, "channels": int(x.shape[1])})


# -- shared with the windowed reverse --------------------------------------------------------


def switch_offsets(
    switches: Tensor, width: int, stride: tuple[int, int], padding: tuple[int, int]
) -> Tensor:
    """Max-pool switches (flat indices into the input map, B×C×h×w) as the row and column
    of each maximum inside its pooling window: ``[rows, columns]`` stacked on channels."""
    out_h, out_w = switches.shape[-2:]
    device = switches.device
    tops = torch.arange(out_h, device=device).view(-1, 1) * stride[0] - padding[0]
    lefts = torch.arange(out_w, device=device) * stride[1] - padding[1]
    rows = switches.div(width, rounding_mode="floor") - tops
    cols = switches.remainder(width) - lefts
    return torch.cat([rows, cols], dim=1)


def lrn_terms(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """``[s^-β, x·s^-β-1, x]`` stacked on channels, with ``s = k + α·mean(x²)`` over each
    channel window exactly as ``F.local_response_norm`` pads it: the parts of the LRN
    gradient that do not depend on the signal, computed once on the full map (in float32
    for float16/bfloat16 on CPU, which has no such 3-D average pooling kernel)."""
    work = x.float() if x.dtype in LOW_PRECISION and x.device.type == "cpu" else x
    squares = F.pad((work * work).unsqueeze(1), (0, 0, 0, 0, size // 2, (size - 1) // 2))
    mean = F.avg_pool3d(squares, (size, 1, 1), stride=1).squeeze(1)
    base = mean * alpha + k
    terms = torch.cat([base.pow(-beta), work * base.pow(-beta - 1), work], dim=1)
    return terms.to(x.dtype)


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _bind(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def _arg(
    args: tuple[Any, ...], kwargs: dict[str, Any], index: int, key: str, default: Any = None
) -> Any:
    if key in kwargs:
        return kwargs[key]
    return args[index] if len(args) > index else default


def _stride(value: Any, kernel: tuple[int, int]) -> tuple[int, int]:
    """Pooling's stride; None (or torch's ``[]``) means the kernel."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return kernel
    return _pair(value)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[0])) if len(value) == 1 else (int(value[0]), int(value[1]))
    return int(value), int(value)
