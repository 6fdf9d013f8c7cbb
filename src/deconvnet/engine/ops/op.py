"""What an entry of the op table is, and the argument helpers every entry shares.

An :class:`Op` is one family of torch ops (every spelling of ReLU, of 2-D convolution, …).
It parses a call into a typed value once, and answers, for that call, each part of the
engine that needs to know the op:

- the rule mode (:mod:`~deconvnet.engine.policies`): :meth:`Op.rewires` and
  :meth:`Op.rewire` swap the op for its reverse rule during the forward pass;
- the receptive-field tracer (:mod:`~deconvnet.engine.receptive`): :meth:`Op.geometry`,
  the op's window on its input (kernel, stride, padding, dilation), a shift, or global;
- the graph recorder (:mod:`~deconvnet.engine.graph`): :meth:`Op.before`, :meth:`Op.run`
  and :meth:`Op.node` record a typed :class:`Node`;
- the windowed reverse pass (:mod:`~deconvnet.engine.windowed`): the node's
  :meth:`Node.reverse`, a small function of the node and the signal's window that works in
  whatever dtype the signal has.

A facet an op does not override means: not rewired, keeps the grid (its field is the union
of its inputs'), no windowed rule (the general autograd path projects through it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from deconvnet.engine.rules import ReversePolicy
from deconvnet.engine.window import Window, crop, inside

TorchFunction = Callable[..., Any]
IMAGE_RANK = 4
Pair = tuple[int, int]
CallT = TypeVar("CallT")


@dataclass(frozen=True)
class TorchCall:
    """A torch call as a ``TorchFunctionMode`` sees it: the function and its arguments."""

    func: TorchFunction
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def run(self) -> Any:
        return self.func(*self.args, **self.kwargs)

    @property
    def input(self) -> Any:
        """The tensor the op works on: its first argument (``input``, a method's ``self``)."""
        return self.args[0] if self.args else self.kwargs.get("input", self.kwargs.get("self"))

    def argument(self, index: int, key: str, default: Any = None) -> Any:
        """One argument, by keyword or at its position."""
        if key in self.kwargs:
            return self.kwargs[key]
        return self.args[index] if len(self.args) > index else default

    def bind(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The arguments by name (a method's ``self`` is its ``input``)."""
        bound = dict(zip(names, self.args, strict=False))
        bound.update(self.kwargs)
        if "input" not in bound and "self" in bound:
            bound["input"] = bound["self"]
        return bound


class CallMode(TorchFunctionMode):
    """A ``TorchFunctionMode`` that handles each torch call as one :class:`TorchCall`."""

    def __torch_function__(
        self,
        func: TorchFunction,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return self.handle(TorchCall(func, args, kwargs or {}))

    def handle(self, call: TorchCall) -> Any:
        """Run ``call`` (or what stands for it)."""
        raise NotImplementedError


class Opaque(Exception):  # control flow: this call has no windowed rule
    """Raised by :meth:`Op.node` for a call the windowed reverse cannot follow."""


# -- receptive-field geometry ------------------------------------------------------------------


@dataclass(frozen=True)
class Sliding:
    """A sliding window over the input: convolution, pooling."""

    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair = (1, 1)


@dataclass(frozen=True)
class Shifted:
    """Units moved by ``-before`` and taken every ``step``: padding or slicing H/W."""

    before: Pair
    step: Pair = (1, 1)


class Global:
    """The output depends on the whole input."""


GLOBAL = Global()
Geometry = Sliding | Shifted | Global


# -- what the rule mode gives an op, and what the recorder and reverse pass give a node ------


class Rewiring(Protocol):
    """The rule mode as an op sees it while it rewires a call."""

    policy: ReversePolicy

    def where(self) -> str:
        """`` in module NAME (TYPE)`` for messages; empty outside any module."""
        ...

    def switches_here(self) -> Tensor | None:
        """Argmax indices given for the module running now (another framework's), if any."""
        ...

    def remember(self, tensor: Tensor, fact: Any) -> None:
        """Note what ``tensor`` is (a gate, a scaled copy of another tensor) for the ops
        that will read it later in this forward pass."""
        ...

    def recall(self, tensor: Any) -> Any:
        """What was noted of ``tensor`` (None if nothing, or if it changed since)."""
        ...


@dataclass(frozen=True)
class Recording:
    """What the recorder knows of a call: the value ids of its tensors before it ran (None
    for constants and parameters), its new output tensors, the policy."""

    lookup: Callable[[Tensor], int | None]
    outputs: list[Tensor]
    policy: ReversePolicy
    recall: Callable[[Any], Any] = lambda tensor: None
    """What the rule mode noted of a tensor (:meth:`Rewiring.recall`)."""

    def source(self, tensor: Any) -> int:
        """The value id of a recorded tensor argument; :class:`Opaque` for anything else."""
        value = self.lookup(tensor) if isinstance(tensor, Tensor) else None
        if value is None:
            raise Opaque
        return value

    def constant(self, *values: Any) -> None:
        """Weights and statistics must not depend on the input."""
        if any(isinstance(v, Tensor) and self.lookup(v) is not None for v in values):
            raise Opaque


@dataclass(frozen=True)
class ReverseStep:
    """What every node's reverse step may read besides its own fields: the image each seed
    belongs to (to crop the forward's masks), the policy and the recorded shapes."""

    index: Tensor
    policy: ReversePolicy
    shapes: list[tuple[int, ...]]

    def hw(self, value: int | None) -> tuple[int, int]:
        """H and W of a recorded value."""
        if value is None:
            return (0, 0)
        shape = self.shapes[value]
        return int(shape[-2]), int(shape[-1])


Arrivals = list[Window | None]
Departures = list[tuple[int | None, Window | None]]


@dataclass(eq=False)
class Node:
    """One recorded op: ``inputs`` and ``outputs`` are value ids (None for an argument that
    does not depend on the input image). One input and one output unless a subclass says
    otherwise; a subclass gives :meth:`reverse`, its windowed rule."""

    kind: ClassVar[str] = "node"
    """A short name of the op, for logs."""

    inputs: tuple[int | None, ...]
    outputs: tuple[int, ...] = field(default=(), kw_only=True)

    def step_back(self, arriving: Arrivals, step: ReverseStep) -> Departures:
        """(input value, its window) for each input, from the outputs' windows."""
        signal = arriving[0]
        assert signal is not None  # one output: it has a signal, or the node was skipped
        return [(self.inputs[0], self.reverse(signal, step))]

    def reverse(self, signal: Window, step: ReverseStep) -> Window:
        """The signal at the input, from the signal at the output."""
        raise NotImplementedError(f"{type(self).__name__} has no windowed rule")

    def scratch_per_seed(self, shapes: list[tuple[int, ...]]) -> int:
        """Elements per seed of the largest temporary of :meth:`reverse` beyond its maps."""
        return 0

    def cast(self, dtype: torch.dtype) -> Node:
        """This node with its floating-point constants (filters, masks, scales, LRN terms)
        in ``dtype``, for a reverse pass in that type: converted once per call, not once
        per batch of seeds; the node itself is left as it is (full precision stays
        available)."""
        changed = {
            item.name: value.to(dtype)
            for item in fields(self)
            if isinstance(value := getattr(self, item.name), Tensor)
            and value.is_floating_point()
            and value.dtype != dtype
        }
        if not changed:
            return self
        twin = copy.copy(self)
        for name, value in changed.items():
            setattr(twin, name, value)
        return twin

    @property
    def windowed(self) -> bool:
        """It has a windowed rule (else the graph is projected by the general path)."""
        return True


@dataclass(eq=False)
class OpaqueNode(Node):
    """An op on the input's data with no windowed rule (``op`` names it, for logs)."""

    kind: ClassVar[str] = "opaque"
    op: str = ""

    @property
    def windowed(self) -> bool:
        return False


@dataclass(eq=False, kw_only=True)
class SlidingNode(Node):
    """A node whose reverse grows the window by a sliding window's geometry (convolution,
    pooling): output unit ``u`` looks at input units from ``u·stride − padding`` on."""

    window: Sliding

    def grown(self, data: Tensor, signal: Window, step: ReverseStep | None = None) -> Window:
        """``data``, the grown signal, placed where ``signal``'s window reaches the input;
        given ``step``, zero where it falls in the padding, outside the map."""
        stride, padding = self.window.stride, self.window.padding
        tops = signal.tops * stride[0] - padding[0]
        lefts = signal.lefts * stride[1] - padding[1]
        if step is not None:
            data = inside(data, tops, lefts, step.hw(self.inputs[0]))
        return Window(data, tops, lefts)


@dataclass(eq=False)
class IdentityNode(Node):
    """An op whose reverse is the identity (eval-mode dropout, a folded BatchNorm)."""

    kind: ClassVar[str] = "identity"

    def reverse(self, signal: Window, step: ReverseStep) -> Window:
        return signal


@dataclass(eq=False)
class FactorNode(Node):
    """The signal times a constant ``factor`` broadcast over the map (B or 1, C or 1, H or
    1, W or 1): a gate, a per-sample normalisation's ``γ/σ``, a LayerScale, a number."""

    kind: ClassVar[str] = "factor"

    factor: Tensor

    def reverse(self, signal: Window, step: ReverseStep) -> Window:
        factor = self.factor
        index = step.index if factor.shape[0] > 1 else step.index.new_zeros(step.index.shape)
        if factor.shape[-2:] == (1, 1):
            part = factor[index.to(factor.device)]
        else:
            part = crop(factor, index, signal.tops, signal.lefts, signal.size)
        return signal.with_data(signal.data * part.to(signal.data.dtype))


def factor_node(source: int, factor: Tensor, shape: tuple[int, ...]) -> FactorNode:
    """A :class:`FactorNode` for a factor that broadcasts to the 4-D ``shape``; a factor
    that varies along only one of H and W is expanded to the map. :class:`Opaque` if it
    does not broadcast as (B or 1, C or 1, H or 1, W or 1)."""
    if factor.dim() > IMAGE_RANK or len(shape) != IMAGE_RANK:
        raise Opaque
    factor = factor.detach().reshape((1,) * (IMAGE_RANK - factor.dim()) + tuple(factor.shape))
    if any(f not in (1, s) for f, s in zip(factor.shape, shape, strict=True)):
        raise Opaque
    if (factor.shape[-2] == 1) != (factor.shape[-1] == 1):
        factor = factor.expand(*factor.shape[:2], *shape[-2:]).contiguous()
    return FactorNode((source,), factor=factor)


# -- the entry -------------------------------------------------------------------------------


class Op(Generic[CallT]):
    """One family of torch ops: its spellings and what each part of the engine does with it.

    ``functions`` holds every spelling a ``TorchFunctionMode`` sees (functional, method,
    in-place, ATen overload; a module's ``forward`` calls one of them). ``modules`` lists
    module classes whose forward is not made of such calls (an autograd Function), handled
    as a whole by :meth:`module_hook`.
    """

    functions: ClassVar[frozenset[TorchFunction]] = frozenset()
    modules: ClassVar[tuple[type[nn.Module], ...]] = ()

    def parse(self, raw: TorchCall) -> CallT:
        """The typed call."""
        raise NotImplementedError

    # -- the rule mode

    def rewires(self, policy: ReversePolicy, switches: bool) -> bool:
        """Whether the rule mode swaps this op under ``policy`` (with given ``switches``)."""
        return False

    def rewire(self, call: CallT, raw: TorchCall, mode: Rewiring) -> Any:
        """Run the call with its reverse rule wired in."""
        return raw.run()

    def module_hook(self, mode: Rewiring) -> Callable[[nn.Module, Any, Any], Any] | None:
        """A forward hook that rewires a whole module of :attr:`modules` (None: leave it)."""
        return None

    # -- receptive fields

    def geometry(self, call: CallT, x: Tensor, out: Tensor) -> Geometry | None:
        """How the output's units look at the input ``x`` (None: on the same grid)."""
        return None

    def factors(self, call: CallT) -> tuple[Any, ...]:
        """Arguments that scale the others elementwise: one broadcast over H×W (a gate from
        pooled features) does not widen the output's field; the projection stays in the
        field of the tensor it scales."""
        return ()

    # -- the graph

    def before(self, call: CallT, policy: ReversePolicy) -> Any:
        """What the reverse step needs from the input, taken before an in-place op runs;
        :class:`Opaque` for a call the windowed reverse cannot follow."""
        return None

    def run(self, call: CallT, raw: TorchCall, before: Any) -> Any:
        """Run the call while recording (an op may keep by-products of its forward)."""
        return raw.run()

    def node(self, call: CallT, recording: Recording, before: Any) -> Node:
        """The recorded node; :class:`Opaque` when the windowed reverse cannot follow it."""
        raise Opaque
